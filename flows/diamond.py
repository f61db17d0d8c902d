"""The `export-diamond` flow: DIAMOND's low-res data from the store, one Dask task per episode."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed

from flows.process import dask_runner
from storage.diamond_layout import EPISODE_LENGTH, LOW_RES, default_test_split
from storage.sidearrays import ViewSpec, default_view_name
from tasks.diamond_export import EpisodeResult, export_episode, finish_export, plan_export
from tasks.diamond_spawn import write_spawns
from tasks.views import ViewResult, check_view, finish_views, make_view, view_jobs


@dataclass(frozen=True)
class ExportSummary:
    """What an export did: counts per outcome, and one line per episode not written."""

    dest: str
    train: int
    test: int
    written: int
    present: int
    failed: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether both splits' `info.pt` are written (DIAMOND can train on DEST)."""
        return not self.failed


@task(name="export-diamond-episode", retries=1, retry_delay_seconds=2)  # idempotent: resumes
def export_episode_task(job) -> EpisodeResult:
    """Write one episode's `.pt` into DEST/low_res."""
    return export_episode(job)


@flow(name="export-diamond", log_prints=True, task_runner=dask_runner())
def export_diamond_flow(
    out: str,
    dest: str,
    size: tuple[int, int] = LOW_RES,
    length: int = EPISODE_LENGTH,
    test_split: str | None = None,
    split_source: str = "DIAMOND's test split",
    kept_only: bool = False,
    show_progress: bool = False,
    storage_options: dict[str, str] | None = None,
    spawn: int = 0,
) -> ExportSummary:
    """Write DEST/low_res/{train,test} as DIAMOND's preparation writes them; resumable.

    Args:
        out: A dataset written by `csdm process` (folder or URL).
        dest: Where to write (folder or URL); a rerun writes only the missing episodes.
        size: Height and width of the low-res observations.
        length: Frames DIAMOND reads per episode (1000 in the public data).
        test_split: The test split's text, one episode file name per line (default DIAMOND's).
        split_source: Where the split came from, for messages.
        kept_only: Export only the episodes csdm's quality verdicts keep.
        show_progress: A progress bar on the terminal (the CLI sets it).
        storage_options: Non-secret fsspec options for URLs.
        spawn: Spawn points for DIAMOND's play.py to write into DEST/spawn (0: none).

    """
    logger = get_run_logger()
    options = dict(storage_options or {})
    text = default_test_split() if test_split is None else test_split
    plan, jobs, left_out = plan_export(
        out, dest, text, split_source, tuple(size), length, kept_only, options
    )
    for line in left_out:
        logger.warning(line)
    logger.info("%d train and %d test episodes to %s", len(plan.train), len(plan.test), dest)
    results = run_jobs(export_episode_task.submit, jobs, "export", show_progress)
    failed = [r.reason for r in results if r.status == "failed"]
    for line in failed:
        logger.error(line)
    missing = finish_export(plan, dest, options)
    if missing and not failed:  # a task crashed without a result
        failed = [f"{fid}: not written" for fid in missing]
    spawns = write_spawns(jobs, spawn) if spawn else []
    if spawns:
        logger.info("%d spawn points in %s", len(spawns), spawns[0].rsplit("/", 1)[0])
    summary = ExportSummary(
        dest,
        len(plan.train),
        len(plan.test),
        sum(r.status == "written" for r in results),
        sum(r.status == "present" for r in results),
        failed,
        left_out,
    )
    logger.info(
        "written %d, already there %d, failed %d", summary.written, summary.present, len(failed)
    )
    return summary


@task(name="make-view", retries=1, retry_delay_seconds=2)  # idempotent: resumes
def make_view_task(job) -> ViewResult:
    """Write one episode's low-res view."""
    return make_view(job)


@flow(name="views", log_prints=True, task_runner=dask_runner())
def views_flow(
    out: str,
    size: tuple[int, int] = LOW_RES,
    show_progress: bool = False,
    storage_options: dict[str, str] | None = None,
    fit: str = "stretch",
    filter: str = "bicubic",
    overshoot: str = "clamp",
    name: str | None = None,
) -> list[ViewResult]:
    """Store a view of every episode beside its frames; resumable.

    Args:
        out: A dataset written by `csdm process` (folder or URL).
        size: Height and width of the view.
        show_progress: A progress bar on the terminal (the CLI sets it).
        storage_options: Non-secret fsspec options for URLs.
        fit: stretch, crop (the centred region of the view's aspect) or pad (letterbox).
        filter: bicubic, bilinear, area, box or nearest.
        overshoot: What bicubic does past 0..255: clamp, or wrap as DIAMOND's uint8 cast.
        name: The view's name (default: the size, then what differs from the default recipe).

    """
    options = dict(storage_options or {})
    if filter != "bicubic":  # only bicubic overshoots 0..255; the others stay inside it
        overshoot = "clamp"
    spec = ViewSpec("-", *size, fit=fit, filter=filter, overshoot=overshoot)
    spec = replace(spec, name=name or default_view_name(spec), method=_method(spec))
    check_view(out, spec, options)
    results = run_jobs(make_view_task.submit, view_jobs(out, spec, options), "views", show_progress)
    for r in results:
        if r.status == "failed":
            get_run_logger().error(r.reason)
    spec = finish_views(out, spec, results, options)
    create_markdown_artifact(
        f"view `{spec.name}`: {spec.episodes} episodes, {spec.stored_bytes:,} bytes stored",
        key="views-size",
    )
    return results


def _method(spec: ViewSpec) -> str:
    return "diamond" if spec.is_diamond else "resize"


def run_jobs(submit, jobs: list, what: str, show_progress: bool) -> list:
    """Every job on the flow's runner, with a Prefect progress artifact and a terminal bar."""
    art = create_progress_artifact(progress=0.0, key=f"{what}-progress")
    bar = None
    if show_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        bar = Progress(what, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        bar.add_task(what, total=len(jobs))
        bar.start()
    results = []
    try:
        futures = {submit(j): j for j in jobs}
        for fut in as_completed(list(futures)):
            try:
                results.append(fut.result())
            except Exception as e:  # crashed on a worker: one line, the others go on
                job = futures[fut]
                reason = f"{job.episode}: {type(e).__name__}: {e}"
                fail = (
                    EpisodeResult(job.file_id, "failed", reason)
                    if hasattr(job, "file_id")
                    else ViewResult(job.episode, "failed", reason)
                )
                results.append(fail)
            if bar:
                bar.advance(bar.task_ids[0])
            if len(results) % max(1, len(jobs) // 20) == 0 or len(results) == len(jobs):
                update_progress_artifact(art, progress=100.0 * len(results) / max(len(jobs), 1))
    finally:
        if bar:
            bar.stop()
    return results
