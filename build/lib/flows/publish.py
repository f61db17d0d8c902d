"""The `publish` flow: a processed dataset to a Hub dataset repo, with progress and a summary."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from storage.fs import Root
from storage.hub_repo import parse_target
from tasks.publish import PublishSummary, publish


def _bar(show: bool):
    """A rich bar on a terminal (bytes hashed, then bytes uploaded), else None."""
    if not show:
        return None
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn()
    )
    bar.start()
    return bar


@task(name="publish-dataset")
def publish_task(
    out: str,
    repo: str,
    revision: str,
    private: bool,
    message: str,
    options: dict,
    show: bool,
    allow_deletions: bool = False,
) -> PublishSummary:
    """Publish, updating a progress artifact (and a bar on a terminal) as bytes go."""
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    artifact = create_progress_artifact(progress=0.0, key="publish-progress")
    bar, tasks, last = _bar(show), {}, [0.0]

    def on_progress(what: str, done: int, total: int) -> None:
        if bar is not None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)
        share = (0.0 if what == "hash" else 50.0) + 50.0 * done / max(total, 1)
        if share - last[0] >= 5 or done == total:
            last[0] = share
            update_progress_artifact(artifact, progress=share)

    target, under = parse_target(repo, revision)
    disable_progress_bars()  # ours shows bytes across commits; the client's show each file
    try:
        return publish(
            Root(out, options),
            target,
            private,
            message or None,
            on_progress=on_progress,
            under=under,
            allow_deletions=allow_deletions,
        )
    finally:
        enable_progress_bars()
        if bar is not None:
            bar.stop()


@flow(name="publish", log_prints=True)
def publish_flow(
    out: str,
    repo: str,
    revision: str = "main",
    private: bool = False,
    message: str = "",
    storage_options: dict[str, str] | None = None,
    show_progress: bool = False,
    allow_deletions: bool = False,
) -> PublishSummary:
    """Publish a processed dataset to `hf://datasets/ORG/NAME` for others to read in place.

    Args:
        out: The dataset: a folder or a URL (s3://bucket/out).
        repo: The Hub dataset repo, `hf://datasets/ORG/NAME[@REVISION][/FOLDER]`; with a
            folder, the dataset lives there and nothing outside it is touched.
        revision: The branch to publish to (created from main if new).
        private: Create the repo private (an existing repo keeps its visibility).
        message: The commit message; empty: one naming the dataset's update time.
        storage_options: Non-secret fsspec options for `out` (secrets: the environment).
        show_progress: A progress bar on the terminal (the CLI sets it).
        allow_deletions: Delete remote objects the dataset no longer has even when the
            local dataset fails its check (by default such a publish is refused).

    """
    s = publish_task(
        out,
        repo,
        revision,
        private,
        message,
        dict(storage_options or {}),
        show_progress,
        allow_deletions,
    )
    line = (
        f"{s.target}: {s.uploaded} files ({s.uploaded_bytes / 1e6:.1f} MB) in {s.commits} "
        f"commits, {s.unchanged} unchanged, {s.deleted} deleted; head {s.commit}"
    )
    get_run_logger().info(line)
    create_markdown_artifact(key="publish-summary", markdown=f"# Published\n\n{line}")
    return s
