"""The `pipeline` flow: download tars from the Hub and process each as soon as it is verified.

Downloads run on a thread pool while episodes are repacked on the flow's Dask runner, so tar
k+1 transfers while tar k is processed. With a disk budget, processed tars are deleted and
no download starts that would exceed the budget.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.ingest import download_task, plan_task
from flows.process import PrefectMapper, dask_runner, flow_progress, process_flow, report_run
from flows.report_artifacts import publish_report
from storage.commit import load_state, remember_failure
from storage.diskspace import DiskFullError
from storage.framestore import ensure_store
from storage.fs import Root
from storage.layout import METADATA_RE, OutLayout
from storage.lease import DatasetLease
from storage.records import PipelineState
from tasks.catalog_writer import check_parameters, problem_record, write_catalog, write_manifest
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
    REPO,
    SUBSETS,
    HubFile,
    IngestError,
    local_path,
    patterns_for,
    pending,
    record_verified,
)
from tasks.params import ProcessParams
from tasks.process_source import prepare_all_metadata, repack_all, repack_calls, run_threads
from tasks.repack import repack_episode
from tasks.source import list_source


@contextmanager
def _closing(runner, starting: Future):
    """Shut the background-started runner down however the block ends."""
    try:
        yield
    finally:
        starting.result()
        runner.__exit__(None, None, None)


@flow(name="pipeline", log_prints=True)
def pipeline_flow(
    out: str,
    dest: str = "data/hub",
    repo: str = REPO,
    revision: str = "main",
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    subsets: tuple[str, ...] = (),
    source: str = "",
    params: ProcessParams = ProcessParams(),  # noqa: B008  (shown filled in the run form)
    max_disk: Annotated[int, Field(ge=0)] = 0,
    delete_sources: bool = False,
    transfers: Annotated[int, Field(ge=1, le=64)] = 2,
    endpoint: str = "",
    workers: Annotated[int, Field(ge=0, le=4096)] = 0,
    scheduler: str = "",
    show_progress: bool = False,
    storage_options: dict[str, str] | None = None,
    stream: bool = False,
) -> dict:
    """Ingest and process as one stream; `source` processes a local tree instead of the Hub.

    The flow's own task runner (threads) downloads; repacking runs on a Dask runner that is
    started in the background, so its start-up overlaps the first transfers. With `stream`,
    each archive is instead read from the Hub by one Dask task, never stored locally, and its
    episodes are committed only once its sha256 matches the Hub's.

    Args:
        out: Dataset to write: a folder or a URL (s3://bucket/out).
        dest: Folder the Hub's files are downloaded to.
        repo: Dataset repo on the Hub.
        revision: Branch, tag or commit of the repo.
        include: fnmatch globs over repo paths; empty: the subsets.
        exclude: Globs of repo paths to leave out.
        subsets: dm_scraped, dm_expert, aim_expert, other_maps, metadata; empty: all.
        source: A local tree in the public layout to process instead of the Hub.
        params: Splits and quality limits of the dataset.
        max_disk: Bytes of downloaded tars allowed on disk at once; 0: no budget.
        delete_sources: Delete each tar once processed.
        transfers: Parallel downloads (with `stream`: metadata files prepared at once).
        endpoint: Hub URL; empty: HF_ENDPOINT or the public Hub.
        workers: Local Dask worker processes; 0: one per core.
        scheduler: An existing Dask scheduler (tcp://host:8786); empty: a local cluster.
        show_progress: Progress bars on the terminal (the CLI sets it).
        storage_options: Non-secret fsspec options for `out` (secrets: the environment).
        stream: Stream each archive from the Hub on a worker; `dest`, `max_disk` and
            `delete_sources` do not apply.

    """
    params = params or ProcessParams()
    options = dict(storage_options or {})
    if source:
        runner = dask_runner(workers or None, scheduler or None)
        summary = process_flow.with_options(task_runner=runner)(
            source, out, params, show_progress, storage_options=options
        )
        return {**summary.counts(), "failures": list(summary.failures)}
    t0 = time.monotonic()
    out_root, dest_path = Root(out, options), Path(dest)
    layout = OutLayout(out_root)
    out_root.check_access(writable=True)
    with DatasetLease(layout):
        check_parameters(layout, params.recorded())
        thresholds = params.thresholds()
        patterns = patterns_for(list(include), list(subsets) or ([] if include else list(SUBSETS)))
        plan = plan_task(repo, revision, patterns, list(exclude), endpoint or None)
        write_manifest(layout, f"{repo}@{plan.commit}", params.recorded(), plan.commit)
        ensure_store(layout)
        done_containers = PipelineState.read(out_root.read_json(layout.pipeline_state),
                                             out_root.url_of(layout.pipeline_state))  # fmt: skip
        metadata = [f for f in plan.files if METADATA_RE.match(PurePosixPath(f.path).name)]
        containers = [f for f in plan.files if f.path.endswith((".tar", ".zip", ".hdf5"))
                      and not done_containers.is_done(f.path, _checksum(f))]  # fmt: skip
        too_big = [f.path for f in containers if f.size > (max_disk or float("inf"))]
        if too_big and not stream:
            raise IngestError(f"--max-disk {max_disk} is smaller than {too_big[0]}; raise it")
        state = load_state(layout)
        records, fetched = [], 0
        dask = dask_runner(workers or None, scheduler or None)
        starting = ThreadPoolExecutor(1).submit(dask.__enter__)
        if stream:
            with _closing(dask, starting):
                records, streamed = _stream_archives(
                    plan, metadata, containers, out_root, params, state, dask, starting,
                    transfers, endpoint or None, done_containers, layout, show_progress,
                )  # fmt: skip
            summary = write_catalog(layout, records, f"{repo}@{plan.commit}",
                                    params.recorded(), revision=plan.commit)  # fmt: skip
            return _finish(records, summary, out, options, {
                "commit": plan.commit, "containers": len(containers),
                "downloaded_bytes": sum(f.size for f in metadata + containers),
                "peak_source_bytes": 0, "resumes": sum(r.resumes for r in streamed),
                "failed_archives": len(done_containers.failed),
                "peak_worker_rss": max((r.peak_rss for r in streamed), default=0),
                "peak_worker_rss_gain": max((r.peak_rss - r.start_rss for r in streamed),
                                            default=0),
                "seconds": round(time.monotonic() - t0, 2)})  # fmt: skip

        with ThreadPoolTaskRunner(max_workers=transfers) as io, _closing(dask, starting):

            def fetch(f: HubFile):
                return io.submit(download_task, {"plan": plan, "f": f, "dest": dest,
                                                 "endpoint": endpoint or None})  # fmt: skip

            todo = pending(plan, dest_path)
            wanted = [f for f in metadata if f in todo]
            for fut in [fetch(f) for f in wanted]:
                fut.result()
            record_verified(plan, dest_path, wanted)
            fetched += sum(f.size for f in wanted)
            meta_roots = [Root(str(local_path(dest_path, f.path))) for f in metadata]
            meta: dict = {}

            def start_processing(f: HubFile):
                if not meta and meta_roots:
                    starting.result()  # the Dask cluster is up
                    meta.update(prepare_all_metadata(meta_roots, out_root, thresholds, [],
                                                     PrefectMapper(dask)))  # fmt: skip
                listing = list_source(str(local_path(dest_path, f.path)))
                calls = repack_calls(listing.episodes, out_root, meta, params, state)
                return calls, PrefectMapper(dask)(repack_episode, calls), listing.problems

            def finish(f: HubFile, job) -> None:
                calls, results, problems = job
                mine = repack_all(calls, lambda _fn, _calls: results)
                mine += [problem_record(p) for p in problems]
                records.extend(mine)
                done_containers.mark(f.path, _checksum(f), _first_failure(mine))
                out_root.put_json(layout.pipeline_state, done_containers.to_dict())
                if delete_sources or max_disk > 0:
                    local_path(dest_path, f.path).unlink(missing_ok=True)

            def downloaded(handle) -> None:
                nonlocal fetched
                f, fut = handle
                fut.result()  # raises IngestError naming the file
                record_verified(plan, dest_path, [f])
                fetched += f.size

            scheduler_ = BudgetScheduler(
                budget=max_disk or float("inf"), size=lambda f: f.size,
                download=lambda f: (f, fetch(f)), ready=lambda h: h[1].state.is_final(),
                wait=downloaded, process=start_processing, finish=finish,
                frees_disk=delete_sources or max_disk > 0,
            )  # fmt: skip
            scheduler_.run(containers, already_there={f for f in containers if f not in todo})

        summary = write_catalog(layout, records, f"{repo}@{plan.commit}", params.recorded(),
                                revision=plan.commit)  # fmt: skip
    return _finish(
        records,
        summary,
        out,
        options,
        {
            "commit": plan.commit,
            "containers": len(containers),
            "downloaded_bytes": fetched,
            "peak_source_bytes": scheduler_.peak,
            "failed_archives": len(done_containers.failed),
            "seconds": round(time.monotonic() - t0, 2),
        },
    )


def _checksum(f: HubFile) -> str:
    return f.sha256 or f.git_oid


def _first_failure(records: list) -> str | None:
    """Why an archive is not done: its first failed record's reason, or None if none failed."""
    return next((r.reject_reason or "failed" for r in records if r.status == "failed"), None)


def _finish(records, summary, out: str, options: dict, extra: dict) -> dict:
    """Report the run: artifacts, the HTML report, a log line; return the flow's result."""
    report_run(records, summary)
    publish_report(out, options)
    result = {**summary.counts(), **extra}
    create_table_artifact(key="pipeline-summary", table=[result])
    get_run_logger().info("pipeline summary: %s", result)
    return {**result, "failures": list(summary.failures)}


def _stream_archives(plan, metadata: list[HubFile], containers: list[HubFile], out: Root,
                     params: ProcessParams, state, dask, starting: Future, transfers: int,
                     endpoint: str | None, done: PipelineState, layout: OutLayout,
                     show_progress: bool) -> tuple[list, list[StreamResult]]:  # fmt: skip
    """Metadata first, then one streaming task per archive; remember each verified one.

    The metadata is prepared here, on `transfers` threads, while the Dask cluster starts;
    it needs no shared disk (each file goes to a temporary folder, the cache to OUT).
    """
    logger = get_run_logger()
    meta, meta_failures = prepare_streamed_metadata(plan, metadata, out, params.thresholds(),
                                                    run_threads(transfers), endpoint)  # fmt: skip
    starting.result()  # the Dask cluster is up
    mapper = PrefectMapper(dask)
    for fail in meta_failures:
        logger.warning("%s", fail.reason)
    archives = [f for f in containers if f.path.endswith(STREAMED)]
    calls = [{"plan": plan, "f": f, "out": out, "params": params, "endpoint": endpoint,
              "meta": metadata_for(f.path, meta, meta_failures),
              "old": for_archive(f.path, state.committed)} for f in archives]  # fmt: skip
    progress, close = flow_progress(show_progress)
    progress.start(len(calls))
    results: list[StreamResult] = []
    records: list = []
    try:
        for i, res in mapper(stream_container, calls):
            f = archives[i]
            if isinstance(res, DiskFullError):
                raise res
            if isinstance(res, BaseException):  # crashed on every try
                name = hub_id(plan.repo, f.path)
                why = f"{name}: crashed: {type(res).__name__}: {res}; re-run to stream it again"
                res = StreamResult(f.path, name, False, [archive_failure(name, why, f.size)])
            results.append(res)
            settled = settle(res, state)
            records.extend(settled)
            for r in settled:  # kept now: a later stop must not lose them
                if r.status in ("failed", "resolved"):
                    remember_failure(layout, r)
            done.mark(f.path, _checksum(f), _first_failure(res.records))
            out.put_json(layout.pipeline_state, done.to_dict())
            verdict = "committed" if res.verified else "NOT committed"
            logger.info("%s: %s, %d records, %d resumed connection(s)", f.path, verdict,
                        len(res.records), res.resumes)  # fmt: skip
            progress.tick()
    finally:
        close()
    return records, results
