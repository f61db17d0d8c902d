"""Process a source into a dataset: the one wiring the flows, tests and benchmarks share.

Work units go through a `Mapper`, so the same steps run in-process (tests, benchmarks) or as
Prefect tasks on a Dask cluster (flows/process.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

from storage.commit import CatalogState, load_state
from storage.diskspace import DiskFullError, check_free
from storage.framestore import ensure_store
from storage.fs import Root
from storage.layout import OutLayout, metadata_dataset
from storage.lease import DatasetLease
from storage.records import EpisodeRecord
from tasks.actions.quality import QualityThresholds
from tasks.catalog_writer import (
    RunSummary,
    check_parameters,
    problem_record,
    write_catalog,
    write_manifest,
)
from tasks.metadata_cache import MetadataFailure, MetaRecord, prepare_metadata_or_failure
from tasks.params import ProcessParams
from tasks.repack import failed_record, repack_episode
from tasks.source import SourceEpisode, SourceListing, list_source
from tasks.source_facts import known_defects, resolve_duplicates, twins_of

# fn, keyword arguments per call -> (call index, result or the exception it raised), as done
Mapper = Callable[[Callable, list[dict]], Iterator[tuple[int, object]]]


def run_here(fn: Callable, calls: list[dict]) -> Iterator[tuple[int, object]]:
    """The in-process mapper: one call after another."""
    for i, kwargs in enumerate(calls):
        try:
            yield i, fn(**kwargs)
        except Exception as e:
            yield i, e


def run_threads(n: int) -> Mapper:
    """A mapper over `n` threads in this process (codecs, hashing and I/O release the GIL)."""

    def mapper(fn: Callable, calls: list[dict]) -> Iterator[tuple[int, object]]:
        pool = ThreadPoolExecutor(n, thread_name_prefix="csdm-unit")
        futures = {pool.submit(fn, **kw): i for i, kw in enumerate(calls)}
        try:
            for fut in as_completed(futures):
                err = fut.exception()
                yield futures[fut], err if err is not None else fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return mapper


class NoEpisodesError(ValueError):
    """A source with nothing csdm can process."""


EXPECTED = (
    "expected hdf5_{stub}{n}.hdf5 episodes, loose or in .tar/.zip archives, and "
    "dataset_metadata/currvarsv2_*.npy, as on the Hub"
)


def covers(meta: Root, ep: SourceEpisode) -> bool:
    """Whether a `currvarsv2_{stub}{a}_to_{b}.npy` file holds this episode's metadata."""
    named = metadata_dataset(meta.url.rsplit("/", 1)[-1])
    if named is None:
        return False
    dataset, first, last = named
    return dataset == ep.episode.dataset and first <= ep.episode.file_num <= last


def estimate_bytes(state: CatalogState, episodes: list[SourceEpisode]) -> int:
    """Bytes the episodes will take once stored: their source size times the ratio seen so far.

    Before anything is stored, 0.8 is assumed: real frames compress at least 1.3x.
    """
    raw = sum(max(e.ref.size, 0) for e in episodes)
    done = list(state.committed.values())[:200]
    ratio = sum(r.stored_bytes or 0 for r in done) / max(sum(r.size or 0 for r in done), 1)
    return int(raw * (ratio if done and ratio > 0 else 0.8))


def prepare_all_metadata(
    metadata: list[Root],
    out: Root,
    thresholds: QualityThresholds,
    episodes: list[SourceEpisode],
    mapper: Mapper = run_here,
    failures: list[MetadataFailure] | None = None,
) -> dict[str, MetaRecord]:
    """Infer actions for metadata files; a file that fails marks its episodes.

    Files that could not be used are appended to `failures`.
    """
    layout = OutLayout(out)
    calls = [{"meta_path": m, "layout": layout, "thresholds": thresholds} for m in metadata]
    meta: dict[str, MetaRecord] = {}
    for i, result in mapper(prepare_metadata_or_failure, calls):
        path = metadata[i]
        if isinstance(result, BaseException):  # crashed on a worker
            result = MetadataFailure(path.url, f"{type(result).__name__}: {result}")
        if isinstance(result, MetadataFailure):  # unusable as a whole: say so per episode
            if result.disk_full:
                raise DiskFullError(out.url)
            if failures is not None:
                failures.append(result)
            why = f"metadata file unusable: {result.reason}"
            for ep in filter(lambda ep: covers(path, ep), episodes):
                meta[ep.episode.name] = MetaRecord(ep.episode.name, path.url, reject_reason=why)
        else:
            meta.update({r.episode: r for r in result})
    return meta


def repack_calls(
    episodes: list[SourceEpisode],
    out: Root,
    meta: dict[str, MetaRecord],
    params: ProcessParams,
    state: CatalogState,
) -> list[dict]:
    """Keyword arguments of `repack_episode` per episode: small records, no arrays."""
    splits, quality, done = params.splits(), params.quality(), state.committed
    twins = twins_of(state)
    return [
        {
            "src": e,
            "out": out,
            "meta": meta.get(e.episode.name),
            "split": splits.split_of(e.episode.name),
            "quality": quality,
            "old": done.get(e.episode.name),
            "twins": twins,
        }
        for e in episodes
    ]


def settle_twins(layout: OutLayout, records: list[EpisodeRecord]) -> list[EpisodeRecord]:
    """After the repacks: later twins demoted to duplicates, each on its twin's side of a split.

    Returns this run's records with the demoted ones replaced, and earlier ones added.
    """
    state = load_state(layout)
    demoted = {r.episode: r for r in resolve_duplicates(layout, state)}
    stored = {e: r for e, r in state.committed.items() if e not in demoted}
    out = []
    for r in records:
        r = demoted.pop(r.episode, r) if r.episode else r
        if r.status == "duplicate" and r.duplicate_of in stored:
            twin = stored[r.duplicate_of]
            r = replace(r, split=twin.split, n_frames=twin.n_frames)
        out.append(r)
    return out + list(demoted.values())


def repack_all(
    calls: list[dict], mapper: Mapper = run_here, tick: Callable[[], None] | None = None
) -> list[EpisodeRecord]:
    """Run the repacks; a crash becomes that episode's failed record, a full disk stops all."""
    records = []
    results = mapper(repack_episode, calls)
    try:
        for i, result in results:
            if isinstance(result, DiskFullError):  # every other episode would fail alike
                raise result
            if isinstance(result, BaseException):  # a crash in one never stops the others
                call = calls[i]
                why = f"crashed: {type(result).__name__}: {result}"
                result = failed_record(call["src"], call["split"], why)
            records.append(result)
            if tick:
                tick()
    finally:
        results.close()  # the mapper cancels what has not started
    return records


@dataclass
class Progress:
    """Hooks a caller sets to watch a run (the flow: log lines, bars, artifacts)."""

    log: Callable[[str], None] = lambda _msg: None
    start: Callable[[int], None] = lambda _total: None
    tick: Callable[[], None] = lambda: None


def process_source(
    src: Root,
    out: Root,
    params: ProcessParams | None = None,
    mapper: Mapper = run_here,
    reprocess: bool = False,
    progress: Progress | None = None,
    retry_defects: bool = False,
) -> tuple[RunSummary, list[EpisodeRecord]]:
    """Repack every episode of `src` into `out` under OUT's lease; resumable and idempotent.

    Source defects found before are not read again unless `retry_defects`. Returns the run's
    summary and its records (for reports).
    """
    params, progress = params or ProcessParams(), progress or Progress()
    layout = OutLayout(out)
    src.check_access()
    out.check_access(writable=True)
    with DatasetLease(layout) as lease:
        if lease.taken_over:
            progress.log(f"took over the expired lease of {lease.taken_over.owner}")
        if not reprocess:
            check_parameters(layout, params.recorded())
        swept = out.sweep_temporary()  # safe: no other writer holds the lease
        if swept:
            progress.log(f"removed {swept} temporary file(s) an interrupted run left in {out}")
        listing: SourceListing = list_source(src)
        if not listing.episodes and not listing.problems:
            raise NoEpisodesError(f"no episodes found in {src} ({EXPECTED})")
        write_manifest(layout, src.url, params.recorded())
        ensure_store(layout)
        state = load_state(layout)
        todo = [e for e in listing.episodes if e.episode.name not in state.committed]
        if out.local:
            check_free(out.path, estimate_bytes(state, todo))
        progress.log(
            f"{len(listing.episodes)} episodes ({len(todo)} new), {len(listing.metadata)}"
            f" metadata files, {len(listing.problems)} problems"
        )
        needed = [m for m in listing.metadata if any(covers(m, e) for e in listing.episodes)]
        meta_failures: list[MetadataFailure] = []
        meta = prepare_all_metadata(
            needed, out, params.thresholds(), listing.episodes, mapper, meta_failures
        )
        attempt, defects = listing.episodes, []
        if not retry_defects:
            attempt, defects = known_defects(state, listing.episodes)
        calls = repack_calls(attempt, out, meta, params, state)
        progress.start(len(calls))
        records = settle_twins(layout, repack_all(calls, mapper, progress.tick)) + defects
        records += [problem_record(p) for p in listing.problems]
        summary = write_catalog(
            layout, records, src.url, params.recorded(), meta_failures=meta_failures
        )
    return summary, records
