"""Per-episode keep/reject decisions from the seed's quality counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from storage.catalog import COUNTERS


@dataclass(frozen=True)
class QualityThresholds:
    """Upper limits per counter; an episode over any limit is rejected (the seed's defaults).

    The seed tuned them on 1000-frame files; limits scale with length per `per_frames` frames
    (exactly the seed's on 1000-frame files), or are absolute counts when it is None.
    """

    dead_skipped: int = 200
    skipped: int | None = None  # the seed reports it but never rejects on it
    ram_gsi_disagree_hp: int = 20
    ram_gsi_disagree_ammo: int = 20
    obs_count: int = 0
    mouse_static: int = 650
    vel_static: int = 350
    per_frames: int | None = 1000

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if v is not None and v < 0:
                raise ValueError(f"threshold {k} must be >= 0, got {v}")
        if self.per_frames == 0:
            raise ValueError("per_frames must be > 0, or None for absolute counts")

    def judge(
        self,
        counters: dict[str, np.ndarray],
        n_frames: np.ndarray,
        unknown: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, list[str | None]]:
        """`keep` flags and a reason per episode (None when kept).

        A counter `unknown` for an episode (its inputs were never recorded) cannot reject it.
        """
        n = len(n_frames)
        scale = np.ones(n) if self.per_frames is None else np.asarray(n_frames) / self.per_frames
        reasons: list[list[str]] = [[] for _ in range(n)]
        for name in COUNTERS:
            limit = getattr(self, name)
            if limit is None:
                continue
            scaled = limit * scale
            over = counters[name] > scaled
            if unknown and name in unknown:
                over &= ~unknown[name]
            for i in np.flatnonzero(over):
                reasons[i].append(f"{name}={counters[name][i]}>{scaled[i]:g}")
        joined = ["; ".join(r) if r else None for r in reasons]
        return np.array([r is None for r in joined], bool), joined
