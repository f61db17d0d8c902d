"""Running a flow's jobs on its task runner, with progress in Prefect and on the terminal."""

from __future__ import annotations

from collections.abc import Callable

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed


def run_jobs(
    submit: Callable, jobs: list, what: str, show_progress: bool, failed: Callable
) -> list:
    """Every job through `submit`; a job that crashed on its worker becomes `failed(job, why)`."""
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
                results.append(failed(job, f"{job.episode}: {type(e).__name__}: {e}"))
            if bar:
                bar.advance(bar.task_ids[0])
            if len(results) % max(1, len(jobs) // 20) == 0 or len(results) == len(jobs):
                update_progress_artifact(art, progress=100.0 * len(results) / max(len(jobs), 1))
    finally:
        if bar:
            bar.stop()
    return results
