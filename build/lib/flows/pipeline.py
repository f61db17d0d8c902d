"""The `pipeline` flow: download tars from the Hub and process each as soon as it is verified.

Downloads run on a thread pool while episodes are repacked on the flow's Dask runner, so tar
k+1 transfers while tar k is processed. With a disk budget, processed tars are deleted and
no download starts that would exceed the budget.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.ingest import download_task, plan_task
from flows.process import PrefectMapper, dask_runner, flow_progress, process_flow, report_run
from flows.report_artifacts import publish_report
from storage.commit import load_state
from storage.framestore import ensure_store
from storage.fs import Root
from storage.layout import OutLayout
from storage.lease import DatasetLease
from storage.records import PipelineState
from tasks.catalog_writer import check_parameters, write_catalog, write_manifest
from tasks.hub.transfer import (
    REPO,
    SUBSETS,
    HubFile,
    patterns_for,
)
from tasks.params import ProcessParams
from tasks.pipeline_run import (
    DownloadRun,
    PipelineSummary,
    archives_to_do,
    download_and_process,
    stream_archives,
    stream_figures,
)


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
    publish_to: str = "",
    retry_defects: bool = False,
) -> PipelineSummary:
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
        publish_to: A Hub dataset repo (hf://datasets/ORG/NAME) to publish to after
            processing, when no episode failed; empty: none.
        retry_defects: Read again the archives and members recorded as source defects of
            the published data (by default they are named in every run, not retried).

    """
    params = params or ProcessParams()
    options = dict(storage_options or {})
    if source:
        runner = dask_runner(workers or None, scheduler or None)
        summary = process_flow.with_options(task_runner=runner)(
            source, out, params, show_progress, storage_options=options, retry_defects=retry_defects
        )
        done = PipelineSummary(
            summary.counts(), tuple(summary.failures), None, summary.defects, summary.duplicates
        )
        return _published(done, out, publish_to, options)
    t0 = time.monotonic()
    out_root = Root(out, options)
    layout = OutLayout(out_root)
    out_root.check_access(writable=True)
    with DatasetLease(layout):
        check_parameters(layout, params.recorded())
        patterns = patterns_for(list(include), list(subsets) or ([] if include else list(SUBSETS)))
        plan = plan_task(repo, revision, patterns, list(exclude), endpoint or None)
        write_manifest(layout, f"{repo}@{plan.commit}", params.recorded(), plan.commit)
        ensure_store(layout)
        done_containers = PipelineState.read(
            out_root.read_json(layout.pipeline_state), out_root.url_of(layout.pipeline_state)
        )
        state = load_state(layout)
        if retry_defects:  # archives holding a defect are read again
            redo = {r.container for r in state.defects()}
            for path in [p for p in done_containers.done if any(c.endswith(p) for c in redo)]:
                done_containers.done.pop(path)
        metadata, containers = archives_to_do(plan, done_containers, 0 if stream else max_disk)
        dask = dask_runner(workers or None, scheduler or None)
        starting = ThreadPoolExecutor(1).submit(dask.__enter__)
        mapper = lambda: (starting.result(), PrefectMapper(dask))[1]  # noqa: E731
        with _closing(dask, starting):
            if stream:
                progress, close = flow_progress(show_progress)
                try:
                    records, streamed = stream_archives(
                        plan,
                        metadata,
                        containers,
                        out_root,
                        params,
                        state,
                        mapper,
                        transfers,
                        endpoint or None,
                        done_containers,
                        layout,
                        progress,
                    )
                finally:
                    close()
                extra = stream_figures(streamed, metadata + containers, done_containers)
            else:
                run = DownloadRun(
                    plan,
                    Path(dest),
                    out_root,
                    layout,
                    params,
                    state,
                    done_containers,
                    mapper,
                    max_disk,
                    delete_sources,
                    retry_defects,
                )
                records, extra = _download(run, metadata, containers, transfers, endpoint)
        summary = write_catalog(
            layout, records, f"{repo}@{plan.commit}", params.recorded(), revision=plan.commit
        )
    done = _finish(records, summary, out, options, plan.commit, containers, t0, extra)
    return _published(done, out, publish_to, options)


def _published(done: PipelineSummary, out: str, repo: str, options: dict) -> PipelineSummary:
    """Publish after a run with no failure, when asked to; a failed run publishes nothing."""
    if not repo:
        return done
    if done.failed:
        get_run_logger().warning("%s: not published to %s: episodes failed", out, repo)
        return done
    from flows.publish import publish_flow

    return replace(done, published=publish_flow(out, repo, storage_options=options))


def _download(
    run: DownloadRun, metadata: list, containers: list, transfers: int, endpoint: str
) -> tuple[list, dict]:
    """Downloads on `transfers` Prefect threads, repacking as each archive is verified."""
    with ThreadPoolTaskRunner(max_workers=transfers) as io:

        def fetch(f: HubFile):
            kw = {"plan": run.plan, "f": f, "dest": str(run.dest), "endpoint": endpoint or None}
            return io.submit(download_task, kw)

        records, fetched, peak = download_and_process(
            run, metadata, containers, fetch, ready=lambda fut: fut.state.is_final()
        )
    extra = {
        "downloaded_bytes": fetched,
        "peak_source_bytes": peak,
        "failed_archives": len(run.done.failed),
    }
    return records, extra


def _finish(
    records, summary, out: str, options: dict, commit: str, containers: list, t0: float, extra: dict
) -> PipelineSummary:
    """Report the run: artifacts, the HTML report, a log line; return the flow's result."""
    report_run(records, summary)
    publish_report(out, options)
    result = {
        **summary.counts(),
        "commit": commit,
        "containers": len(containers),
        **extra,
        "seconds": round(time.monotonic() - t0, 2),
    }
    create_table_artifact(key="pipeline-summary", table=[result])
    get_run_logger().info("pipeline summary: %s", result)
    return PipelineSummary(
        result, tuple(summary.failures), None, summary.defects, summary.duplicates
    )
