"""`csdm report` and `csdm view`: thin glue over `tasks/report/html.py` and `view.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flows.cli_errors import fail
from flows.cli_options import StorageOptions, storage_options

console = Console(stderr=True)
report_console = Console()
COMPARE_HELP = "Other processed datasets (or agent trackings) to compare with."


def report(
    out: Annotated[
        str, typer.Argument(help="A dataset written by `csdm process` (folder or URL).")
    ],
    to: Annotated[Path, typer.Option("--out", help="Folder for index.html and its figures.")],
    compare: Annotated[
        list[str] | None,
        typer.Option(help="Other processed datasets (or agent trackings) to compare with."),
    ] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Write a self-contained HTML report: summary, quality, actions, map coverage, EMD."""
    from storage.dataset import DatasetFormatError
    from tasks.report.html import write_report

    storage_options(storage_option)
    with console.status("computing the report"):
        try:
            made = write_report([out, *(compare or [])], to)
        except (DatasetFormatError, OSError) as e:
            fail(str(e))
    for r in made["reports"]:
        s = r.summary
        report_console.print(
            f"{r.label}: {s['episodes']} episodes ({s['kept']} kept, "
            f"{s['rejected']} rejected, {s['failed']} failed), "
            f"{s['frames']} frames = {s['hours']:.2f} h"
        )
    report_console.print(
        f"wrote {made['index']} ({len(made['figures'])} figures) and {made['json']}"
    )


def view(
    out: Annotated[
        str, typer.Argument(help="A dataset written by `csdm process` (folder or URL).")
    ],
    episode: Annotated[str, typer.Argument(help="Episode name, e.g. dm_july2021_12.")],
    to: Annotated[Path, typer.Option("--out", help="FILE.png (a grid) or FILE.gif (16 fps).")],
    start: Annotated[int, typer.Option(min=0, help="First frame to draw.")] = 0,
    count: Annotated[int, typer.Option(min=1, help="Frames to draw.")] = 1,
    storage_option: StorageOptions = None,
) -> None:
    """Draw frames of an episode with the shipped and inferred actions overlaid."""
    from storage.dataset import DatasetFormatError
    from tasks.report.view import write_view

    storage_options(storage_option)
    try:
        path = write_view(out, episode, to, start, count)
    except (DatasetFormatError, KeyError, ValueError, OSError) as e:
        fail(str(e))
    report_console.print(f"wrote {path}")
