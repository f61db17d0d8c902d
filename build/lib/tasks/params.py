"""Parameters that shape a processed dataset (flow parameters, CLI options, the manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, Field

from storage.codecs import DEFAULT_CODEC, FRAME_CODECS
from tasks.actions.quality import QualityThresholds
from tasks.splits import SplitSpec, read_split_file

_SEED = QualityThresholds()  # the seed's limits: their one definition
# a Literal, so the Prefect run form offers the offered codecs as a choice
CodecName = Literal[tuple(FRAME_CODECS)]  # type: ignore[valid-type]
CODEC_NAMES: tuple[str, ...] = get_args(CodecName)


class ProcessParams(BaseModel):
    """Parameters that shape the output; a resumed run must use the same ones."""

    test_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of episodes put in the test split (0 to 1)."
    )
    seed: int = Field(0, ge=0, description="Seed of the hash that assigns episodes to splits.")
    split_file: str = Field(
        "",
        description="File naming the test episodes, one per line (e.g. DIAMOND's "
        "diamond_test_split.txt); overrides the test fraction. Empty: none.",
    )
    dead_skipped: int = Field(
        _SEED.dead_skipped, ge=0, description="Reject an episode with more dead frames than this."
    )
    ram_gsi_disagree_hp: int = Field(
        _SEED.ram_gsi_disagree_hp,
        ge=0,
        description="Reject above this many frames where RAM and GSI health disagree.",
    )
    ram_gsi_disagree_ammo: int = Field(
        _SEED.ram_gsi_disagree_ammo,
        ge=0,
        description="Reject above this many frames where RAM and GSI ammo disagree.",
    )
    obs_count: int = Field(
        _SEED.obs_count,
        ge=0,
        description="Reject above this many frames spectating another player.",
    )
    mouse_static: int = Field(
        _SEED.mouse_static,
        ge=0,
        description="Reject above this many frames without mouse movement.",
    )
    vel_static: int = Field(
        _SEED.vel_static, ge=0, description="Reject above this many frames without player movement."
    )
    codec: CodecName = Field(
        DEFAULT_CODEC,
        description="How frames are stored, recorded in each array's zarr.json (docs/format.md: "
        "Frame codecs): " + "; ".join(f"{n}: {c.about}" for n, c in FRAME_CODECS.items()) + ".",
    )
    per_frames: int = Field(
        _SEED.per_frames,
        ge=0,
        le=100_000,
        description="The limits above are per this many frames (the seed's 1000-frame files); "
        "0 makes them absolute counts.",
    )

    def thresholds(self) -> QualityThresholds:
        """The quality limits."""
        return QualityThresholds(
            dead_skipped=self.dead_skipped,
            ram_gsi_disagree_hp=self.ram_gsi_disagree_hp,
            ram_gsi_disagree_ammo=self.ram_gsi_disagree_ammo,
            obs_count=self.obs_count,
            mouse_static=self.mouse_static,
            vel_static=self.vel_static,
            per_frames=self.per_frames or None,
        )

    def splits(self) -> SplitSpec:
        """The split rule."""
        if self.split_file:
            return read_split_file(self.split_file)
        return SplitSpec(test_fraction=self.test_fraction, seed=self.seed)

    def quality(self) -> dict:
        """The parameters that decide an episode's verdict and stored form (kept with each)."""
        return self.model_dump(exclude={"test_fraction", "seed", "split_file"})

    def recorded(self) -> dict:
        """What the manifest records and a resumed run must match."""
        d = self.model_dump()
        if self.split_file:
            d["split_file"] = str(Path(self.split_file).resolve())
        return d
