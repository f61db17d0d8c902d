"""Which windows training draws: the sampler's configuration (the seed's subselection included)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SamplerConfig:
    """Which windows to train on. The seed's subselection is `SamplerConfig.seed_subselect()`."""

    window: int = 96
    jitter: int = 20  # random forward offset of a window start, as the seed's N_JITTER
    split: str | None = "train"  # None: every split
    keep_only: bool = True  # episodes the quality filter kept
    weapon: str | None = None  # e.g. "ak47": segments mostly holding it (name substring)
    weapon_fraction: float = 0.7
    drop_motionless: bool = False  # drop segments with >80% no WASD and >80% no mouse move
    motionless_fraction: float = 0.8
    keep_prob: float = 1.0  # chance to keep any other segment (the seed's SUB_PROB 0.4)
    kill_segments: bool = False  # always keep segments with a kill, and the one before
    draws: int = 4  # subselections drawn independently and cycled by epoch, as the seed's four

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise ValueError(f"draws {self.draws}: at least one subselection is drawn")

    @classmethod
    def from_dict(cls, d: dict) -> SamplerConfig:
        """Inverse of `to_dict`; runs from before `draws` drew their subselection once."""
        return cls(**{"draws": 1, **d})

    @classmethod
    def seed_subselect(cls, **kw) -> SamplerConfig:
        """The seed's IS_SUBSELECT with SUB_TYPE 'ak' and SUB_PROB 0.4."""
        base = dict(weapon="ak47", drop_motionless=True, keep_prob=0.4, kill_segments=True)
        return cls(**{**base, **kw})

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)
