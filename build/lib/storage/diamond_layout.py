"""DIAMOND's CS:GO data layout: file ids, episode paths, the test split, and csdm's export plan."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from importlib import resources
from typing import ClassVar

from storage.layout import EPISODE_RE, archive_range
from storage.records import FormatError, Versioned

SCRAPED = "dm_july2021"  # the scraped dust2 set, the only one DIAMOND trains on
EPISODE_LENGTH = 1000  # DIAMOND reads every episode as 1000 frames
LOW_RES = (30, 56)
FULL_RES = (150, 280)
SPLITS = ("train", "test")
TEST_SPLIT_RESOURCE = "diamond_test_split.txt"


class SplitFileError(ValueError):
    """A test-split file that is missing or is not one episode file name per line."""


def file_id(container: str, file_num: int) -> str | None:
    """DIAMOND's id of a scraped episode, `"<a>-<b>/hdf5_dm_july2021_<n>.hdf5"`.

    The folder is the tar's range, as DIAMOND untars each tar into its own folder; None for an
    episode that came from no scraped tar.
    """
    rng = archive_range(container)
    if rng is None or rng[0] != SCRAPED:
        return None
    return f"{rng[1]}-{rng[2]}/hdf5_{SCRAPED}_{file_num}.hdf5"


def episode_path(episode_id: int) -> str:
    """Where DIAMOND's `Dataset` keeps episode `episode_id`: its last three digits, by place.

    Episode 1234 is `200/30/4/1234.pt`; episode 7 is `000/00/7/7.pt`.
    """
    hundreds, tens, units = episode_id % 1000 // 100, episode_id % 100 // 10, episode_id % 10
    return f"{hundreds * 100:03d}/{tens * 10:02d}/{units:d}/{episode_id}.pt"


def parse_test_split(text: str, source: str) -> frozenset[str]:
    """The episode file names of a test split, one per line; blank lines are allowed."""
    names = set()
    for i, line in enumerate(text.split("\n"), 1):
        name = line.strip()
        if not name:
            continue
        m = EPISODE_RE.match(name)
        if m is None or m["dataset"] != SCRAPED:
            raise SplitFileError(
                f"{source}: line {i} ({name[:60]!r}) is not an episode file "
                f"name like hdf5_{SCRAPED}_12.hdf5"
            )
        names.add(name)
    if not names:
        raise SplitFileError(f"{source}: no episode file names")
    return frozenset(names)


def default_test_split() -> str:
    """DIAMOND's published test split (500 names), as shipped with csdm."""
    return resources.files("storage").joinpath(TEST_SPLIT_RESOURCE).read_text()


@dataclass(frozen=True)
class ExportPlan(Versioned):
    """What `csdm export-diamond` writes into DEST/low_res; a rerun resumes only the same plan."""

    format_version: ClassVar[int] = 1
    kind: ClassVar[str] = "DIAMOND export plan"
    fix: ClassVar[str] = "export into a new DEST"
    FILE: ClassVar[str] = "csdm-export.json"

    source: str  # the dataset exported
    size: tuple[int, int] = LOW_RES
    length: int = EPISODE_LENGTH
    kept_only: bool = False
    test_split_sha256: str = ""
    train: tuple[str, ...] = ()  # file ids in episode-id order
    test: tuple[str, ...] = ()
    revision: str | None = None  # the source's commit, where it has one

    def ids(self, split: str) -> tuple[str, ...]:
        """File ids of one split, in DIAMOND's episode-id order."""
        return self.train if split == "train" else self.test

    def same_output(self, other: ExportPlan) -> bool:
        """Whether `other` writes the same files (the source's location may differ)."""
        return replace(self, source="", revision=None) == replace(other, source="", revision=None)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> ExportPlan:
        """Parse; lists become the tuples they were written from."""
        plan = super().from_dict(d, where)
        try:
            return replace(
                plan, size=tuple(plan.size), train=tuple(plan.train), test=tuple(plan.test)
            )
        except TypeError as e:
            raise FormatError(f"{where}: malformed {cls.kind} ({e})") from None


def split_digest(names: frozenset[str]) -> str:
    """A digest of a test split's names, whatever their order in the file."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


@dataclass(frozen=True)
class DiamondEpisode:
    """A stored episode DIAMOND would read: its file id, csdm's episode name, its frames."""

    file_id: str
    episode: str
    file_num: int
    n_frames: int


def diamond_records(state) -> list:
    """What DIAMOND reads of a dataset: every stored episode, and each duplicate recording.

    DIAMOND exports both twins of a byte-identical pair, so a duplicate stays in its files,
    read from its twin's stored frames; `kept_only` leaves it out (it is never kept).
    """
    return [*state.committed.values(), *state.duplicates()]


def select_episodes(records, kept_only: bool = False) -> list[DiamondEpisode]:
    """DIAMOND's selection from `diamond_records`: every scraped-tar episode, by number.

    With `kept_only`, only the episodes csdm's quality verdicts keep. A duplicate is read
    from its twin's frames.
    """
    chosen = {}
    for r in records:
        fid = file_id(r.container, r.file_num) if r.dataset == SCRAPED else None
        if fid is None or (kept_only and not r.keep):
            continue
        source = r.duplicate_of or r.episode
        chosen.setdefault(fid, DiamondEpisode(fid, source, r.file_num, r.n_frames or 0))
    # DIAMOND sorts by the number after the last "_"; ties keep their folder's order
    return sorted(chosen.values(), key=lambda e: (e.file_num, e.file_id))


def too_short(
    episodes: list[DiamondEpisode], length: int
) -> tuple[list[DiamondEpisode], list[str]]:
    """The episodes DIAMOND can read at `length` frames, and one line per episode left out."""
    short = [e for e in episodes if e.n_frames < length]
    lines = [f"{e.episode}: {e.n_frames} frames, DIAMOND reads {length}; left out" for e in short]
    return [e for e in episodes if e.n_frames >= length], lines
