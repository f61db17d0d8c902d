"""Re-read a processed dataset and check every stored chunk against its checksum."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from storage.commit import withdraw_episode
from storage.dataset import Dataset, chunk_problems, open_dataset
from storage.framestore import open_frames, remove_frames
from storage.fs import Root
from storage.lease import DatasetLease
from tasks.catalog_writer import write_catalog


@dataclass
class EpisodeCheck:
    """The outcome of checking one stored episode; `problems` is empty when it is sound."""

    episode: str
    frames: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every chunk decoded and matched its checksum."""
        return not self.problems


def verify_episode(ds: Dataset, episode: str, n_frames: int | None) -> EpisodeCheck:
    """Decode every chunk of one episode; list each one that fails, by frame range."""
    check = EpisodeCheck(episode)
    try:
        arr = open_frames(ds.layout, episode)
    except Exception as e:
        check.problems.append(f"array unreadable: {type(e).__name__}: {e}")
        return check
    check.frames = arr.shape[0]
    if n_frames is not None and arr.shape[0] != n_frames:
        check.problems.append(f"{arr.shape[0]} frames stored, the catalog says {n_frames}")
    if arr.nchunks_initialized < arr.nchunks:  # a lost shard would read back as black frames
        check.problems.append(f"{arr.nchunks - arr.nchunks_initialized} chunk(s) missing")
    check.problems += [f"frames {lo}-{hi - 1}: {why}" for lo, hi, why in chunk_problems(arr)]
    return check


def verify_dataset(
    root: str | Path,
    episodes: list[str] | None = None,
    progress: Callable[[EpisodeCheck], None] | None = None,
) -> list[EpisodeCheck]:
    """Check the named episodes (default: every stored one); unknown names are problems."""
    ds = open_dataset(root)
    stored = set(ds.episodes)
    counts = dict(
        zip(ds.files["episode"].to_pylist(), ds.files["n_frames"].to_pylist(), strict=True)
    )
    checks = []
    for ep in episodes or sorted(stored):
        if ep not in stored:
            check = EpisodeCheck(ep, problems=["not a stored episode of this dataset"])
        else:
            check = verify_episode(ds, ep, counts.get(ep))
        checks.append(check)
        if progress:
            progress(check)
    return checks


def uncommit(root: str | Root, checks: list[EpisodeCheck]) -> None:
    """Withdraw bad episodes (marker, record, then frames) and list them as failed.

    The next `csdm process` stores them anew from their source. Runs under OUT's lease.
    """
    ds = open_dataset(root)
    with DatasetLease(ds.layout):
        failed = []
        for c in checks:
            old = ds.state.committed.get(c.episode)
            withdraw_episode(ds.layout, c.episode, old)
            remove_frames(ds.layout, c.episode)
            if old is not None:
                why = (
                    f"corrupt in the store ({c.problems[0]}); re-run csdm process to store it anew"
                )
                failed.append(replace(old, status="failed", keep=False, reject_reason=why))
        m = ds.manifest
        write_catalog(
            ds.layout, failed, m.sources[0] if m.sources else "", m.parameters, revision=m.revision
        )
