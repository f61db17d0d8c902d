"""Re-read a processed dataset and check every stored chunk, as the reader does, plus bindings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from storage.commit import withdraw_episode
from storage.dataset import CorruptFramesError, Dataset, chunk_problems, open_dataset
from storage.framestore import open_frames, remove_frames
from storage.fs import Root
from storage.lease import DatasetLease
from storage.shards import ChunkError
from tasks.catalog_writer import write_catalog


class UnknownEpisodeError(ValueError):
    """Names given to verify that are not stored episodes of the dataset."""


@dataclass
class EpisodeCheck:
    """The outcome of checking one stored episode; `problems` is empty when it is sound."""

    episode: str
    frames: int = 0
    problems: list[str] = field(default_factory=list)
    unbound: bool = False  # a record written before bindings: chunks checked, provenance not

    @property
    def ok(self) -> bool:
        """Whether every chunk decoded, matched its checksum and its episode's binding."""
        return not self.problems


def verify_episode(ds: Dataset, episode: str, n_frames: int | None = None) -> EpisodeCheck:
    """Read every chunk of one episode through the reader; list each one that fails.

    Whatever `Dataset.frames` would refuse (a checksum, a binding, geometry, a non-regular
    file, an index out of bounds) is a problem here, chunk by chunk, in bounded memory.
    """
    check = EpisodeCheck(episode)
    try:
        reader = ds.reader(episode)
    except CorruptFramesError as e:
        check.problems.append(str(e))
        return check
    if reader is None:  # an array in a layout only zarr reads: zarr's checks
        return _verify_with_zarr(ds, episode, n_frames, check)
    check.frames = n = reader.layout.shape[0]
    check.unbound = reader.binding is None
    step = reader.layout.chunk
    scratch = np.empty((step, *reader.layout.shape[1:]), np.uint8)
    lo = 0
    while lo < n:
        hi = min(lo + step, n)
        try:
            reader.read(lo, hi, scratch[: hi - lo])
        except ChunkError as e:  # one line per failing range: a lost shard is one, not 8
            check.problems.append(f"frames {e.lo}-{e.hi - 1}: {e.why}")
            hi = max(hi, e.hi)
        lo = hi
    return check


def _verify_with_zarr(ds: Dataset, episode: str, n_frames: int | None, check: EpisodeCheck):
    try:
        arr = open_frames(ds.layout, episode)
    except Exception as e:
        check.problems.append(f"array unreadable: {type(e).__name__}: {e}")
        return check
    check.frames, check.unbound = arr.shape[0], True
    if n_frames is not None and arr.shape[0] != n_frames:
        check.problems.append(f"{arr.shape[0]} frames stored, the catalog says {n_frames}")
    if arr.nchunks_initialized < arr.nchunks:  # a lost shard would read back as black frames
        check.problems.append(f"{arr.nchunks - arr.nchunks_initialized} chunk(s) missing")
    check.problems += [f"frames {lo}-{hi - 1}: {why}" for lo, hi, why in chunk_problems(arr)]
    return check


def verify_dataset(
    root: str | Path | Dataset,
    episodes: list[str] | None = None,
    progress: Callable[[EpisodeCheck], None] | None = None,
) -> list[EpisodeCheck]:
    """Check the named episodes (default: every stored one); unknown names raise, unchecked."""
    ds = open_dataset(root)
    stored = set(ds.episodes)
    unknown = [e for e in episodes or [] if e not in stored]
    if unknown:
        raise UnknownEpisodeError(
            f"{ds.root}: not stored episode(s): {', '.join(map(repr, unknown[:5]))}"
            f'{" ..." if len(unknown) > 5 else ""}; `csdm query {ds.root} "select episode '
            'from files"` lists them'
        )
    counts = dict(
        zip(ds.files["episode"].to_pylist(), ds.files["n_frames"].to_pylist(), strict=True)
    )
    checks = []
    for ep in episodes or sorted(stored):
        check = verify_episode(ds, ep, counts.get(ep))
        checks.append(check)
        if progress:
            progress(check)
    return checks


def reachable_problems(ds: Dataset) -> list[str]:
    """What readers of `ds` would miss: catalog files, arrays, shards, and each chunk's crc32c.

    Checksums only (no decompression), so it costs a read of the store; run before a publish
    deletes remote objects, so that a local loss is never copied to the Hub.
    """
    root, problems = ds.root, []
    keys = [*ds.state.index.frames_parts, *filter(None, [ds.state.index.files_part])]
    keys += [r.frames_file for r in ds.state.committed.values() if r.frames_file]
    problems += [f"{root.url_of(k)}: missing" for k in keys if not root.exists(k)]
    for ep in ds.episodes:
        try:
            reader = ds.reader(ep)
            if reader is None:
                continue  # a layout only zarr reads: `csdm verify` decodes it
            n, step = reader.layout.shape[0], reader.layout.shard
            for lo in range(0, n, step):  # a shard at a time: memory stays one shard's
                for c, data, _a, _b in reader.chunks(lo, min(lo + step, n)):
                    reader.body(c, data)
        except CorruptFramesError as e:
            problems.append(str(e).split("; `csdm verify", 1)[0])
        except ChunkError as e:
            problems.append(f"episode {ep}, frames {e.lo}-{e.hi - 1}: {e.why}")
    return problems


def uncommit(root: str | Root, checks: list[EpisodeCheck]) -> None:
    """Withdraw bad stored episodes (marker, record, then frames) and list them as failed.

    Only episodes the catalog holds are touched. The next `csdm process` stores them anew from
    their source. Runs under OUT's lease.
    """
    ds = open_dataset(root)
    with DatasetLease(ds.layout):
        failed = []
        for c in checks:
            old = ds.state.committed.get(c.episode)
            if old is None:  # never a name from outside the catalog: it could be any path
                continue
            withdraw_episode(ds.layout, c.episode, old)
            remove_frames(ds.layout, c.episode)
            why = f"corrupt in the store ({c.problems[0]}); re-run csdm process to store it anew"
            failed.append(replace(old, status="failed", keep=False, reject_reason=why))
        m = ds.manifest
        write_catalog(
            ds.layout, failed, m.sources[0] if m.sources else "", m.parameters, revision=m.revision
        )
