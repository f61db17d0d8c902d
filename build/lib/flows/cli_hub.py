"""`csdm ingest` and `csdm pipeline`: the Hub to a processed dataset, as thin glue over flows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_common import (
    DEFAULT_CHOICE,
    Codec,
    _expected_errors,
    _listed,
    _process_params,
    console,
    quality_options,
    report,
    report_source_facts,
)
from flows.cli_errors import fail, hide_expected_tracebacks
from flows.cli_options import StorageOptions, storage_options


def ingest(
    dest: Annotated[
        str,
        typer.Option(
            help="Folder or bucket URL (s3://bucket/raw); files land at "
            "DEST/<repo path>, in a bucket only once verified."
        ),
    ],
    repo: Annotated[
        str, typer.Option(help="Dataset repo on the Hub.")
    ] = "TeaPearce/CounterStrike_Deathmatch",
    revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
    include: Annotated[
        list[str] | None, typer.Option(help="fnmatch glob over repo paths (repeat).")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Glob to leave out (repeat).")] = None,
    subset: Annotated[
        list[str] | None,
        typer.Option(help="dm_scraped, dm_expert, aim_expert, other_maps, metadata (repeat)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel transfers.")] = 4,
    endpoint: Annotated[
        str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or the Hub).")
    ] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Download (resumable, sha256-verified, incremental) files of the dataset from the Hub."""
    options = storage_options(storage_option)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.prefect_api import local_api

    with local_api():
        from prefect.task_runners import ThreadPoolTaskRunner

        from flows.ingest import ingest_flow
        from tasks.hub.transfer import IngestError

        hide_expected_tracebacks()
        runner = ThreadPoolTaskRunner(max_workers=workers)
        with _expected_errors():
            try:
                summary = ingest_flow.with_options(task_runner=runner)(
                    repo,
                    revision,
                    include or [],
                    exclude or [],
                    subset or [],
                    dest,
                    endpoint,
                    show_progress=True,
                    storage_options=options,
                )
            except (IngestError, ValueError) as e:
                fail(str(e))
    s = summary
    report.print(
        f"{s.repo}@{s.commit[:12]}: {s.files} files selected, {s.fetched} fetched "
        f"({s.bytes / 1e9:.3f} GB in {s.seconds} s), {s.already_verified} already verified, "
        f"{len(s.failed)} failed"
    )
    for path, error in s.failed:
        console.print(f"[red]failed[/] {path}: {error}")
    if s.failed:
        raise typer.Exit(1)


def _size(text: str) -> int:
    """Bytes from `500MB`, `30GB`, `1.5TB` or a plain number."""
    units = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
    t = text.strip().upper()
    for unit, factor in units.items():
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * factor)
    return int(float(t))


@quality_options
def pipeline(
    out: Annotated[str, typer.Argument(help="Dataset to write, as for `csdm process`.")],
    dest: Annotated[Path, typer.Option(help="Where tars are downloaded to.")] = Path("data/hub"),
    source: Annotated[
        Path | None, typer.Option(help="A local tree in the public layout instead of the Hub.")
    ] = None,
    repo: Annotated[str, typer.Option(help="Dataset repo on the Hub.")] = (
        "TeaPearce/CounterStrike_Deathmatch"
    ),
    revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
    include: Annotated[
        list[str] | None, typer.Option(help="Glob over repo paths (repeat).")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Glob to leave out (repeat).")] = None,
    subset: Annotated[
        list[str] | None, typer.Option(help="Named subset (repeat); default: all.")
    ] = None,
    max_disk: Annotated[
        str | None,
        typer.Option(help="Budget for downloaded tars, e.g. 60GB; processed tars are deleted."),
    ] = None,
    delete_sources: Annotated[bool, typer.Option(help="Delete each tar once processed.")] = False,
    transfers: Annotated[int, typer.Option(min=1, help="Parallel downloads.")] = 2,
    workers: Annotated[int | None, typer.Option(help="Local Dask worker processes.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Existing Dask scheduler.")] = None,
    split_file: Annotated[Path | None, typer.Option(help="File of test episode names.")] = None,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of episodes in the test split.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split hash.")] = 0,
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT).")] = None,
    quality: dict | None = None,
    codec: Codec = DEFAULT_CHOICE,
    storage_option: StorageOptions = None,
    stream: Annotated[
        bool,
        typer.Option(
            help="Stream each archive from the Hub on a worker: no local copy; its "
            "episodes commit once its sha256 matches. --dest/--max-disk do not apply."
        ),
    ] = False,
    publish_to: Annotated[
        str | None,
        typer.Option(help="Then publish to this Hub dataset repo (hf://datasets/ORG/NAME)."),
    ] = None,
    retry_defects: Annotated[
        bool,
        typer.Option(
            help="Read again the archives and members recorded as source defects (by default "
            "they are named in every run, not retried)."
        ),
    ] = False,
) -> None:
    """Download and process as one stream: each tar is processed as soon as it is verified."""
    options = storage_options(storage_option)
    if publish_to:
        from storage.hub_repo import HubError, parse_target

        try:
            parse_target(publish_to)
        except HubError as e:
            fail(str(e))
    params = _process_params(locals())
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from flows.prefect_api import local_api

    with local_api():
        from flows.pipeline import pipeline_flow
        from tasks.hub.transfer import IngestError

        hide_expected_tracebacks()
        with _expected_errors():
            try:
                result = pipeline_flow(
                    out,
                    str(dest),
                    repo,
                    revision,
                    tuple(include or ()),
                    tuple(exclude or ()),
                    tuple(subset or ()),
                    str(source) if source else "",
                    params,
                    _size(max_disk) if max_disk else 0,
                    delete_sources,
                    transfers,
                    endpoint or "",
                    workers or 0,
                    scheduler or "",
                    show_progress=True,
                    storage_options=options,
                    stream=stream,
                    publish_to=publish_to or "",
                    retry_defects=retry_defects,
                )
            except IngestError as e:
                fail(str(e))
    report.print(" ".join(f"{k}={v}" for k, v in result.counts.items()), soft_wrap=True)
    _listed("failed", result.failures, "see files.parquet")
    report_source_facts(result)
    if result.published is not None:
        p = result.published
        report.print(
            f"published to {p.target}: {p.uploaded} files in {p.commits} commits, "
            f"{p.unchanged} unchanged; head {p.commit}",
            soft_wrap=True,
        )

    if result.failed:
        raise typer.Exit(1)
