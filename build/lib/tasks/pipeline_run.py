"""The pipeline's two ways through the Hub's archives, with the runners injected as mappers.

`download_and_process` downloads each archive (within a disk budget) and repacks it once
verified; `stream_archives` streams each archive on a worker. The flow passes Prefect's
runners in, as it does for `process_source`, so one wiring serves the CLI, the UI and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from storage.commit import remember_failure
from storage.diskspace import DiskFullError
from storage.fs import Root
from storage.layout import METADATA_RE, OutLayout
from storage.records import PipelineState
from tasks.catalog_writer import problem_record
from tasks.disk_budget import BudgetScheduler
from tasks.hub.stream import (
    STREAMED,
    StreamResult,
    archive_failure,
    for_archive,
    hub_id,
    metadata_for,
    prepare_streamed_metadata,
    settle,
    stream_container,
)
from tasks.hub.transfer import (
    HubFile,
    IngestError,
    IngestPlan,
    local_path,
    pending,
    record_verified,
)
from tasks.params import ProcessParams
from tasks.process_source import (
    Mapper,
    Progress,
    prepare_all_metadata,
    repack_all,
    repack_calls,
    run_threads,
    settle_twins,
)
from tasks.publish import PublishSummary
from tasks.repack import repack_episode
from tasks.source import list_source
from tasks.source_facts import known_defects, twins_of


@dataclass(frozen=True)
class PipelineSummary:
    """What a pipeline run did: `key=value` counts as the CLI prints them, and each failure."""

    counts: dict
    failures: tuple[str, ...] = ()
    published: PublishSummary | None = None  # when it was published after the run
    defects: tuple[str, ...] = ()  # every source defect the dataset knows (not failures)
    duplicates: tuple[str, ...] = ()  # every duplicate recording

    @property
    def failed(self) -> bool:
        """Whether an episode or an archive failed (the run exits 1)."""
        return bool(self.counts.get("failed") or self.counts.get("failed_archives"))


def checksum(f: HubFile) -> str:
    """What identifies an archive's content: its LFS sha256, or its git blob id."""
    return f.sha256 or f.git_oid


def first_failure(records: list) -> str | None:
    """Why an archive is not done: its first failed record's reason, or None if none failed.

    A source defect or a duplicate is no failure: the archive is done, and not read again.
    """
    return next((r.reject_reason or "failed" for r in records if r.status == "failed"), None)


def archives_to_do(
    plan: IngestPlan, done: PipelineState, max_disk: int = 0
) -> tuple[list[HubFile], list[HubFile]]:
    """The plan's metadata files, and its archives not yet processed as they are now.

    An archive larger than `max_disk` (bytes; 0: no budget) could never be downloaded.
    """
    metadata = [f for f in plan.files if METADATA_RE.match(PurePosixPath(f.path).name)]
    containers = [
        f
        for f in plan.files
        if f.path.endswith((".tar", ".zip", ".hdf5")) and not done.is_done(f.path, checksum(f))
    ]
    too_big = [f.path for f in containers if f.size > (max_disk or float("inf"))]
    if too_big:
        raise IngestError(f"--max-disk {max_disk} is smaller than {too_big[0]}; raise it")
    return metadata, containers


def stream_figures(streamed: list[StreamResult], files: list[HubFile], done: PipelineState) -> dict:
    """The streaming run's counts: bytes read, connections resumed, workers' memory."""
    return {
        "downloaded_bytes": sum(f.size for f in files),
        "peak_source_bytes": 0,
        "resumes": sum(r.resumes for r in streamed),
        "failed_archives": len(done.failed),
        "peak_worker_rss": max((r.peak_rss for r in streamed), default=0),
        "peak_worker_rss_gain": max((r.peak_rss - r.start_rss for r in streamed), default=0),
    }


@dataclass
class DownloadRun:
    """What the downloading pipeline works on; `mapper()` waits for the cluster, then maps."""

    plan: IngestPlan
    dest: Path
    out: Root
    layout: OutLayout
    params: ProcessParams
    state: object  # the CatalogState before the run
    done: PipelineState
    mapper: Callable[[], Mapper]
    max_disk: int = 0
    delete_sources: bool = False
    retry_defects: bool = False


def download_and_process(
    run: DownloadRun,
    metadata: list[HubFile],
    containers: list[HubFile],
    fetch: Callable,
    ready: Callable,
) -> tuple[list, int, int]:
    """Metadata first, then each archive downloaded and repacked as soon as it is verified.

    `fetch(f)` starts a download and returns a future; `ready(future)` says it ended.
    Returns the records, the bytes fetched and the peak bytes of archives on disk.
    """
    records: list = []
    fetched = 0
    todo = pending(run.plan, run.dest)
    wanted = [f for f in metadata if f in todo]
    for fut in [fetch(f) for f in wanted]:
        fut.result()
    record_verified(run.plan, run.dest, wanted)
    fetched += sum(f.size for f in wanted)
    meta_roots = [Root(str(local_path(run.dest, f.path))) for f in metadata]
    meta: dict = {}
    frees = run.delete_sources or run.max_disk > 0

    def start_processing(f: HubFile):
        if not meta and meta_roots:
            meta.update(
                prepare_all_metadata(meta_roots, run.out, run.params.thresholds(), [], run.mapper())
            )
        listing = list_source(str(local_path(run.dest, f.path)))
        # downloaded and checked against the Hub's sha256 (or found so by the ingest manifest)
        episodes = [replace(e, ref=replace(e.ref, verified=True)) for e in listing.episodes]
        known: list = []
        if not run.retry_defects:
            episodes, known = known_defects(run.state, episodes)
        calls = repack_calls(episodes, run.out, meta, run.params, run.state)
        return calls, run.mapper()(repack_episode, calls), listing.problems, known

    def finish(f: HubFile, job) -> None:
        calls, results, problems, known = job
        mine = settle_twins(run.layout, repack_all(calls, lambda _fn, _calls: results)) + known
        # a verified archive that does not parse whole is the publisher's: a source defect
        mine += [problem_record(p, defect=p.damaged) for p in problems]
        records.extend(mine)
        run.done.mark(f.path, checksum(f), first_failure(mine))
        run.out.put_json(run.layout.pipeline_state, run.done.to_dict())
        if frees:
            local_path(run.dest, f.path).unlink(missing_ok=True)

    def downloaded(handle) -> None:
        nonlocal fetched
        f, fut = handle
        fut.result()  # raises IngestError naming the file
        record_verified(run.plan, run.dest, [f])
        fetched += f.size

    scheduler = BudgetScheduler(
        budget=run.max_disk or float("inf"),
        size=lambda f: f.size,
        download=lambda f: (f, fetch(f)),
        ready=lambda h: ready(h[1]),
        wait=downloaded,
        process=start_processing,
        finish=finish,
        frees_disk=frees,
    )
    scheduler.run(containers, already_there={f for f in containers if f not in todo})
    return records, fetched, scheduler.peak


def stream_archives(
    plan: IngestPlan,
    metadata: list[HubFile],
    containers: list[HubFile],
    out: Root,
    params: ProcessParams,
    state,
    mapper: Callable[[], Mapper],
    transfers: int,
    endpoint: str | None,
    done: PipelineState,
    layout: OutLayout,
    progress: Progress,
) -> tuple[list, list[StreamResult]]:
    """Metadata first, then one streaming task per archive; remember each verified one.

    The metadata is prepared here, on `transfers` threads, while the cluster starts (`mapper()`
    waits for it); it needs no shared disk (each file goes to a temporary folder, the cache to
    OUT).
    """
    meta, meta_failures = prepare_streamed_metadata(
        plan, metadata, out, params.thresholds(), run_threads(transfers), endpoint
    )
    run_on = mapper()
    for fail in meta_failures:
        progress.log(fail.reason)
    archives = [f for f in containers if f.path.endswith(STREAMED)]
    twins = twins_of(state)
    calls = [
        {
            "plan": plan,
            "f": f,
            "out": out,
            "params": params,
            "endpoint": endpoint,
            "meta": metadata_for(f.path, meta, meta_failures),
            "old": for_archive(f.path, state.committed),
            "twins": twins,
        }
        for f in archives
    ]
    progress.start(len(calls))
    results: list[StreamResult] = []
    records: list = []
    for i, res in run_on(stream_container, calls):
        f = archives[i]
        if isinstance(res, DiskFullError):
            raise res
        if isinstance(res, BaseException):  # crashed on every try
            name = hub_id(plan.repo, f.path)
            why = f"{name}: crashed: {type(res).__name__}: {res}; re-run to stream it again"
            res = StreamResult(f.path, name, False, [archive_failure(name, why, f.size)])
        results.append(res)
        settled = settle_twins(layout, settle(res, state))
        records.extend(settled)
        for r in settled:  # kept now: a later stop must not lose them
            if r.status in ("failed", "defect", "duplicate", "resolved"):
                remember_failure(layout, r)
        done.mark(f.path, checksum(f), first_failure(res.records))
        out.put_json(layout.pipeline_state, done.to_dict())
        verdict = "committed" if res.verified else "NOT committed"
        progress.log(
            f"{f.path}: {verdict}, {len(res.records)} records, {res.resumes} resumed connection(s)"
        )
        progress.tick()
    return records, results
