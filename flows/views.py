"""The `views` flow: views of every episode by a recipe, one Dask task per episode."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.jobs import run_jobs
from flows.process import dask_runner
from storage.diamond_layout import LOW_RES
from storage.layout import OutLayout
from storage.sidearrays import ViewSpec, default_view_name, read_views
from tasks.views import ViewJob, ViewResult, check_view, finish_views, make_view, view_jobs


@task(name="make-view", retries=1, retry_delay_seconds=2)  # idempotent: resumes
def make_view_task(job: ViewJob) -> ViewResult:
    """Write one episode's view."""
    return make_view(job)


def view_spec(
    size: tuple[int, int], fit: str, filter: str, overshoot: str, name: str | None
) -> ViewSpec:
    """The view a command asks for, named by its recipe unless `name` is given."""
    spec = ViewSpec("-", *size, fit=fit, filter=filter, overshoot=overshoot)
    return replace(spec, name=name or default_view_name(spec))


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
    refresh: bool = False,
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
        refresh: Instead, remake every recorded view where it is missing or stale.

    """
    options = dict(storage_options or {})
    if refresh:
        specs = list(read_views(OutLayout.at(out, options)).values())
    else:
        specs = [view_spec(tuple(size), fit, filter, overshoot, name)]
    jobs = []
    for spec in specs:
        if not refresh:  # a recorded view was checked when it was made
            check_view(out, spec, options)
        jobs += view_jobs(out, spec, options)
    results = run_jobs(make_view_task.submit, jobs, "views", show_progress, _failed)
    for r in results:
        if r.status == "failed":
            get_run_logger().error(r.reason)
    for spec in specs:
        spec = finish_views(out, spec, [r for r in results if r.view == spec.name], options)
        create_markdown_artifact(
            f"view `{spec.name}`: {spec.episodes} episodes, {spec.stored_bytes:,} bytes stored",
            key="views-size",
        )
    return results


def _failed(job: ViewJob, reason: str) -> ViewResult:
    return ViewResult(job.episode, "failed", reason, view=job.spec.name)
