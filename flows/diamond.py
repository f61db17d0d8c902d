"""The `export-diamond` flow: DIAMOND's low-res data from the store, one Dask task per episode."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow, get_run_logger, task

from flows.jobs import run_jobs
from flows.process import dask_runner
from storage.diamond_layout import EPISODE_LENGTH, LOW_RES, default_test_split
from tasks.diamond_export import EpisodeResult, export_episode, finish_export, plan_export
from tasks.diamond_spawn import write_spawns


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
    results = run_jobs(export_episode_task.submit, jobs, "export", show_progress, _failed)
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


def _failed(job, reason: str) -> EpisodeResult:
    return EpisodeResult(job.file_id, "failed", reason)
