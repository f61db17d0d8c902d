"""Train/test split assignment: from a list of episode names or deterministic from a seed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from storage.layout import episode_from_member
from storage.localfile import read_text_input


@dataclass(frozen=True)
class SplitSpec:
    """Test set from a list of episode names, or a seeded hash putting `test_fraction` in test."""

    test_fraction: float = 0.0
    seed: int = 0
    test_episodes: frozenset[str] = field(default_factory=frozenset)
    source: str | None = None  # the split file, when the test set came from one

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(f"test fraction must be in [0, 1], got {self.test_fraction}")
        if self.test_episodes and self.test_fraction:
            raise ValueError("give either a split file or a test fraction, not both")

    def split_of(self, episode: str) -> str:
        """`test` or `train` for an episode id such as `dm_july2021_12`."""
        if self.test_episodes:
            return "test" if episode in self.test_episodes else "train"
        digest = hashlib.sha256(f"{self.seed}:{episode}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        return "test" if u < self.test_fraction else "train"


def read_split_file(path: str | Path) -> SplitSpec:
    """Test episodes from a file of names, one per line (`hdf5_dm_july2021_3.hdf5` or ids)."""
    names = set()
    text = read_text_input(path, "split file")
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        ep = episode_from_member(line if line.endswith(".hdf5") else f"hdf5_{line}.hdf5")
        if ep is None:
            raise ValueError(f"{path}:{n}: {line!r} is not an episode name")
        names.add(ep.name)
    return SplitSpec(test_episodes=frozenset(names), source=str(path))
