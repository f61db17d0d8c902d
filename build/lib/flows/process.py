"""The `process` flow: a source in the public layout to Zarr frames + a Parquet catalog."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from flows.report_artifacts import publish_report
from storage.diskspace import DiskFullError
from storage.fs import Root
from storage.records import EpisodeRecord
from tasks.catalog_writer import RunSummary
from tasks.hub.stream import StreamResult, stream_container
from tasks.metadata_cache import prepare_hub_metadata_or_failure, prepare_metadata_or_failure
from tasks.params import ProcessParams
from tasks.process_source import EXPECTED, NoEpisodesError, Progress, process_source
from tasks.repack import repack_episode

__all__ = ["EXPECTED", "NoEpisodesError", "ProcessParams", "dask_runner", "process_flow"]


def dask_runner(workers: int | None = None, scheduler: str | None = None) -> DaskTaskRunner:
    """An existing cluster at `scheduler` (or $CSDM_DASK_SCHEDULER), else a local one.

    The local cluster has one single-threaded worker process per core.
    """
    scheduler = scheduler or os.environ.get("CSDM_DASK_SCHEDULER")
    if scheduler:
        return DaskTaskRunner(address=scheduler)
    n = workers or os.cpu_count() or 1
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": n,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",
        }
    )


@task(name="prepare-metadata", retries=1, retry_delay_seconds=2)
def prepare_metadata_task(meta_path, layout, thresholds):
    """Infer actions for one metadata file and cache them per episode."""
    return prepare_metadata_or_failure(meta_path, layout, thresholds)


@task(name="repack-episode", retries=1, retry_delay_seconds=2)  # idempotent: resumes
def repack_task(src, out, meta, split, quality, old, twins=None) -> EpisodeRecord:
    """Store one episode's frames and catalog rows; a full disk is returned, not raised."""
    try:
        return repack_episode(src, out, meta, split, quality, old, twins=twins)
    except DiskFullError as e:  # a value, so the run stops with one line, not a traceback
        return e


@task(name="prepare-hub-metadata", retries=1, retry_delay_seconds=2)
def prepare_hub_metadata_task(plan, f, layout, thresholds, endpoint):
    """Fetch one metadata file from the Hub (verified), infer actions and cache them."""
    return prepare_hub_metadata_or_failure(plan, f, layout, thresholds, endpoint)


@task(name="stream-archive", retries=1, retry_delay_seconds=2)  # a crash streams it again
def stream_task(plan, f, out, meta, params, old, endpoint, twins=None) -> StreamResult:
    """Stream one archive from the Hub into OUT; a full disk is returned, not raised."""
    try:
        return stream_container(plan, f, out, meta, params, old, endpoint, twins=twins)
    except DiskFullError as e:
        return e


TASKS = {
    prepare_metadata_or_failure: prepare_metadata_task,
    repack_episode: repack_task,
    prepare_hub_metadata_or_failure: prepare_hub_metadata_task,
    stream_container: stream_task,
}


class PrefectMapper:
    """Runs work units as Prefect tasks on `runner` (default: the flow's own runner).

    Calling it submits every unit at once; iterating yields results as they finish, and
    closing the iterator early cancels the units not yet started.
    """

    def __init__(self, runner: TaskRunner | None = None) -> None:
        self.runner = runner

    def __call__(self, fn: Callable, calls: list[dict]) -> Iterator[tuple[int, object]]:
        t = TASKS[fn]
        futures = {
            (self.runner.submit(t, kw) if self.runner else t.submit(**kw)): i
            for i, kw in enumerate(calls)
        }
        return self._results(futures)

    @staticmethod
    def _results(futures: dict) -> Iterator[tuple[int, object]]:
        try:
            for fut in as_completed(list(futures)):
                try:
                    yield futures[fut], fut.result()
                except Exception as e:  # crashed on a worker
                    yield futures[fut], e
        finally:
            for fut in futures:
                wrapped = getattr(fut, "wrapped_future", None)
                if wrapped is not None and not wrapped.done():
                    wrapped.cancel()


def report_run(records: list[EpisodeRecord], summary: RunSummary) -> None:
    """Table artifacts: rejected and failed episodes, and the run's counts."""
    bad = [r for r in records if r.status == "failed" or not r.keep]
    create_table_artifact(
        key="rejected-and-failed-episodes",
        table=[
            {
                "episode": r.episode,
                "status": r.status,
                "reason": r.reject_reason,
                "location": f"{r.container}:{r.member}" if r.member else r.container,
            }
            for r in bad
        ],
        description=f"{summary.failed} failed, {summary.rejected} rejected of {summary.episodes}",
    )
    create_table_artifact(key="process-summary", table=[summary.counts()])


def flow_progress(show_progress: bool) -> tuple[Progress, Callable[[], None]]:
    """Log lines, a Prefect progress artifact and (on a terminal) a rich bar; and a closer."""
    logger = get_run_logger()
    state = {"done": 0, "total": 1, "id": None, "bar": None}

    def start(total: int) -> None:
        state["total"] = max(total, 1)
        state["id"] = create_progress_artifact(progress=0.0, key="process-progress")
        if show_progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            bar = Progress("repack", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            bar.add_task("repack", total=total)
            bar.start()
            state["bar"] = bar

    def tick() -> None:
        state["done"] += 1
        if state["bar"]:
            state["bar"].advance(state["bar"].task_ids[0])
        done, total = state["done"], state["total"]
        if done % max(1, total // 20) == 0 or done == total:
            update_progress_artifact(state["id"], progress=100.0 * done / total)

    def close() -> None:
        if state["bar"]:
            state["bar"].stop()

    return Progress(log=logger.info, start=start, tick=tick), close


@flow(name="process", log_prints=True, task_runner=dask_runner())
def process_flow(
    src: str,
    out: str,
    params: ProcessParams = ProcessParams(),  # noqa: B008  (pydantic models are immutable here)
    show_progress: bool = False,
    reprocess: bool = False,
    storage_options: dict[str, str] | None = None,
    retry_defects: bool = False,
) -> RunSummary:
    """Repack every episode of `src` into `out`; resumable, one Dask task per episode.

    Args:
        src: Source in the public layout (tars, zips, loose .hdf5, dataset_metadata/): a
            folder or a URL such as s3://bucket/raw.
        out: Dataset to write (frames.zarr, catalog/, manifest.json): a folder or a URL.
        params: Splits and quality limits; a rerun must use OUT's unless `reprocess`.
        show_progress: Progress bars on the terminal (the CLI sets it).
        reprocess: Accept parameters other than OUT's: episodes are re-judged, frames kept.
        storage_options: Non-secret fsspec options (endpoint_url, region, ...); secrets come
            from the environment, since flow parameters are stored by the Prefect server.
        retry_defects: Read again the members recorded as source defects (the published
            bytes are not episodes; by default they are named, not retried).

    """
    options = dict(storage_options or {})
    progress, close = flow_progress(show_progress)
    try:
        summary, records = process_source(
            Root(src, options),
            Root(out, options),
            params or ProcessParams(),
            PrefectMapper(),
            reprocess=reprocess,
            progress=progress,
            retry_defects=retry_defects,
        )
    finally:
        close()
    report_run(records, summary)
    publish_report(out, options)
    get_run_logger().info("summary: %s", summary.counts())
    return summary
