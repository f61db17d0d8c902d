"""`csdm export-diamond`: thin glue over the DIAMOND export flow and its tasks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flows.cli_errors import fail, hide_expected_tracebacks
from flows.cli_options import StorageOptions, storage_options

console = Console(stderr=True)
out_console = Console()
SHOWN = 20  # lines per list before a count

SizeOption = Annotated[str, typer.Option("--size", help="Low-res HEIGHTxWIDTH.")]
OutArg = Annotated[str, typer.Argument(help="A dataset written by `csdm process` (folder or URL).")]


def size_or_fail(text: str) -> tuple[int, int]:
    """HEIGHTxWIDTH as a pair, or one line and exit 2."""
    from training.diamond_obs import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        fail(str(e))


def show_lines(what: str, lines: list[str]) -> None:
    """The first lines of a list, one each, then a count."""
    for line in lines[:SHOWN]:
        console.print(f"  {what}: {escape(line)}", highlight=False, soft_wrap=True)
    if len(lines) > SHOWN:
        console.print(f"  ... and {len(lines) - SHOWN} more {what}")


def export_diamond(
    out: OutArg,
    dest: Annotated[str, typer.Argument(help="Where DIAMOND's low_res/ goes (folder or URL).")],
    size: SizeOption = "30x56",
    test_split: Annotated[
        Path | None,
        typer.Option(help="Test episode file names, one per line (default: DIAMOND's 500)."),
    ] = None,
    kept_only: Annotated[
        bool, typer.Option(help="Only episodes csdm's quality verdicts keep.")
    ] = False,
    length: Annotated[
        int, typer.Option(min=1, help="Frames per episode, as DIAMOND reads them.")
    ] = 1000,
    spawn: Annotated[
        int,
        typer.Option(min=0, help="Spawn points for DIAMOND's play.py, in DEST/spawn (test first)."),
    ] = 0,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Local Dask worker processes (default: one per core).")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="Existing Dask scheduler.")] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Write DIAMOND's low_res/train and low_res/test from the store (resumable)."""
    from storage.dataset import DatasetFormatError, open_dataset
    from storage.diamond_layout import (
        SplitFileError,
        default_test_split,
        diamond_records,
        parse_test_split,
        select_episodes,
    )
    from storage.fs import Root, StorageAccessError, is_url
    from storage.localfile import InputFileError, read_text_input
    from tasks.diamond_export import ExportError, check_dest

    options = storage_options(storage_option)
    hw = size_or_fail(size)
    # Hydra runs DIAMOND in a folder of its own: every path it is given must be absolute
    out, dest = (p if is_url(p) else os.path.abspath(p) for p in (out, dest))
    text, source = None, "DIAMOND's test split"
    if test_split is not None:
        try:
            text, source = read_text_input(test_split, "test split"), str(test_split)
        except InputFileError as e:
            fail(str(e))
    try:  # a bad split or an OUT with nothing to export fail here, before any run starts
        parse_test_split(default_test_split() if text is None else text, source)
        ds = open_dataset(out, options)
        check_dest(ds.root, Root(dest, options))
        if not select_episodes(diamond_records(ds.state), kept_only):
            raise ExportError(
                f"{out}: no {'kept ' if kept_only else ''}scraped dust2 episodes "
                "(hdf5_dm_july2021_<n>.hdf5 from hdf5_dm_july2021_<a>_to_<b>.tar)"
            )
    except (ExportError, SplitFileError, DatasetFormatError, StorageAccessError) as e:
        fail(str(e))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from flows.prefect_api import local_api

    with local_api() as api:
        from flows.diamond import export_diamond_flow
        from flows.process import dask_runner

        hide_expected_tracebacks()
        console.print(f"Prefect API: {api}")
        try:
            s = export_diamond_flow.with_options(task_runner=dask_runner(workers, scheduler))(
                out,
                dest,
                hw,
                length,
                text,
                source,
                kept_only,
                show_progress=True,
                storage_options=options,
                spawn=spawn,
            )
        except (ExportError, SplitFileError, DatasetFormatError, StorageAccessError) as e:
            fail(str(e))
    show_lines("left out", s.left_out)
    show_lines("failed", s.failed)
    out_console.print(
        f"{dest}: {s.train} train and {s.test} test episodes; written {s.written}, "
        f"already there {s.present}, failed {len(s.failed)}"
    )
    if s.failed:
        console.print("re-run the same command to retry the failed episodes")
        raise typer.Exit(1)
    out_console.print(
        f"DIAMOND: set path_data_low_res: {dest.rstrip('/')}/low_res in config/env/csgo.yaml"
    )
    if spawn:
        out_console.print(f"DIAMOND's play.py: spawn points in {dest.rstrip('/')}/spawn")
