"""The `ingest` flow: fetch selected files of the dataset repo from the Hub into a folder or bucket.

A folder gets resumable `.part` downloads; a bucket gets each file streamed into a multipart
upload that is completed only once the file's sha256 matches (nothing unverified at its key).
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import wait

from storage.fs import Root
from tasks.hub.transfer import (
    REPO,
    UPLOADED,
    HubFile,
    IngestError,
    IngestPlan,
    IngestSummary,
    check_disk,
    download_file,
    local_path,
    part_path,
    patterns_for,
    pending,
    plan_ingest,
    record_verified,
    upload_file,
)


@task(name="plan-ingest", retries=2, retry_delay_seconds=5)
def plan_task(
    repo: str, revision: str, include: list[str], exclude: list[str], endpoint: str | None
) -> IngestPlan:
    """Resolve the revision and list the selected files."""
    return plan_ingest(repo, revision, include, exclude, endpoint=endpoint)


@task(name="download-file", retries=1, retry_delay_seconds=5)
def download_task(plan: IngestPlan, f: HubFile, dest: str, endpoint: str | None) -> str:
    """Fetch, resume and verify one file."""
    return str(download_file(plan, f, Path(dest), endpoint=endpoint))


@task(name="upload-file", retries=1, retry_delay_seconds=5)
def upload_task(plan: IngestPlan, f: HubFile, dest: Root, endpoint: str | None) -> str:
    """Stream one file into the bucket; it appears only once verified."""
    return upload_file(plan, f, dest, endpoint=endpoint)


def _on_disk(dest: Path, files: list[HubFile]) -> int:
    """Bytes of these files present so far (final or partial), for progress."""
    total = 0
    for f in files:
        target = local_path(dest, f.path)
        for p in (target, part_path(target)):
            if p.exists():
                total += p.stat().st_size
                break
    return total


@flow(name="ingest")
def ingest_flow(
    repo: str = REPO,
    revision: str = "main",
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    subsets: list[str] | None = None,
    dest: str = "data/hub",
    endpoint: str | None = None,
    show_progress: bool = False,
    storage_options: dict[str, str] | None = None,
) -> IngestSummary:
    """Fetch the selected files of `repo` at `revision` to `dest/<repo path>`.

    `dest` is a folder or a bucket URL (s3://bucket/raw); `storage_options` are its non-secret
    fsspec options.
    """
    logger = get_run_logger()
    patterns = patterns_for(include or [], subsets or [])
    root = Root(dest, dict(storage_options or {}))
    if not root.local:
        root.check_access(writable=True)
    plan = plan_task(repo, revision, patterns, exclude or [], endpoint)
    todo = pending(plan, root)
    if root.local:
        dest_path = Path(root.path)
        need = check_disk(dest_path, todo)
        futures = {download_task.submit(plan, f, str(dest_path), endpoint): f for f in todo}
        start = _on_disk(dest_path, todo)
    else:
        need = sum(f.size for f in todo)
        futures = {upload_task.submit(plan, f, root, endpoint): f for f in todo}
        start = 0
    logger.info(
        "%s@%s: %d files selected, %d to fetch (%.2f GB)",
        repo,
        plan.commit[:12],
        len(plan.files),
        len(todo),
        need / 1e9,
    )
    total = sum(f.size for f in todo) or 1
    progress_id = create_progress_artifact(progress=0.0, key="ingest-progress")
    bar = _cli_progress(total, start) if show_progress else None
    t0 = time.monotonic()
    while not all(fut.state.is_final() for fut in futures):
        done = (
            _on_disk(dest_path, todo) if root.local else sum(UPLOADED.get(f.path, 0) for f in todo)
        )
        if bar:
            bar.update(bar.task_ids[0], completed=done)
        update_progress_artifact(progress_id, progress=100.0 * done / total)
        wait(list(futures), timeout=1.0)
    ok, failed = [], []
    for fut, f in futures.items():
        try:
            fut.result()
            ok.append(f)
        except (IngestError, OSError, RuntimeError) as e:
            failed.append((f, str(e)))
    record_verified(plan, root, ok)
    update_progress_artifact(progress_id, progress=100.0)
    if bar:
        bar.update(bar.task_ids[0], completed=total)
        bar.stop()
    status = {f.path: "fetched" for f in ok} | {f.path: "failed" for f, _ in failed}
    create_table_artifact(
        key="ingest-files",
        table=[
            {"path": f.path, "size": f.size, "status": status.get(f.path, "already verified")}
            for f in plan.files
        ],
    )
    summary = IngestSummary(
        repo,
        revision,
        plan.commit,
        len(plan.files),
        len(ok),
        len(plan.files) - len(todo),
        tuple((f.path, e) for f, e in failed),
        sum(f.size for f in ok),
        round(time.monotonic() - t0, 2),
    )
    logger.info(
        "summary: %s fetched, %s already verified, %s failed",
        summary.fetched,
        summary.already_verified,
        len(summary.failed),
    )
    return summary


def _cli_progress(total: int, start: int):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        "ingest", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()
    )
    bar.add_task("ingest", total=total, completed=start)
    bar.start()
    return bar
