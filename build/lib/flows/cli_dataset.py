"""`csdm query`, `csdm verify` and `csdm compact`: reading and keeping a processed dataset."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli_common import _expected_errors, _progress, console, report
from flows.cli_errors import fail
from flows.cli_options import StorageOptions, storage_options


def query(
    out: Annotated[str, typer.Argument(help="A dataset written by `csdm process`.")],
    sql: Annotated[str, typer.Argument(help="SQL over the views `frames` and `files`.")],
    format: Annotated[str, typer.Option(help="table, csv, json or parquet.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write the result to this file.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown by the table format.")] = 50,
    storage_option: StorageOptions = None,
) -> None:
    """Run read-only DuckDB SQL over a processed dataset's catalog (a folder or a URL)."""
    import duckdb
    import pyarrow as pa

    from storage.dataset import DatasetFormatError, connect_catalog, open_dataset
    from tasks.query_output import render, write_result

    if format not in ("table", "csv", "json", "parquet"):
        fail(f"--format must be table, csv, json or parquet, not {format!r}")
    if not sql.strip():
        fail('empty SQL: give a query, e.g. "select count(*) from frames"')
    if format == "parquet" and output is None:
        fail("--format parquet needs --output FILE")
    if output is not None and not output.parent.is_dir():
        fail(f"--output {output}: folder {output.parent} does not exist; create it first")
    storage_options(storage_option)
    with _expected_errors():
        try:
            con = connect_catalog(open_dataset(out))  # checks the format
        except DatasetFormatError as e:
            fail(str(e))
    try:
        result = con.sql(sql)
        table = result.to_arrow_table() if result is not None else None
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0]
        fail(f"query failed: {first} (queries are read-only, over `frames` and `files` only)")
    if table is None:
        fail("the SQL returned no result; write a SELECT over `frames` or `files`")
    if format == "table":
        t = Table(*table.column_names)
        for row in table.slice(0, limit).to_pylist():
            t.add_row(*[str(v) for v in row.values()])
        report.print(t)
        if table.num_rows > limit:
            report.print(f"({table.num_rows} rows, {limit} shown; --limit to see more)")
        return
    try:
        if output is None:
            sys.stdout.write(render(table, format).decode())
            return
        write_result(table, format, output)
    except (OSError, pa.ArrowException) as e:
        fail(f"--output {output}: could not write the result ({e})")
    console.print(f"wrote {output}")


def verify(
    out: Annotated[str, typer.Argument(help="A dataset written by `csdm process`.")],
    episodes: Annotated[
        list[str] | None, typer.Option("--episodes", help="Check only these (repeat).")
    ] = None,
    repair: Annotated[
        bool, typer.Option(help="Uncommit the bad episodes so `csdm process` stores them anew.")
    ] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Re-read every stored chunk, check its crc32c and decode it; list the bad episodes."""
    from storage.dataset import DatasetFormatError, open_dataset
    from tasks.verify import UnknownEpisodeError, uncommit, verify_dataset

    storage_options(storage_option)
    try:
        with _expected_errors():
            ds = open_dataset(out)
        total = len(episodes) if episodes else len(ds.episodes)
        with _progress() as bar:
            task = bar.add_task("verify", total=total, item="")

            def tick(check) -> None:
                bar.update(task, advance=1, item=check.episode)

            checks = verify_dataset(ds, episodes, progress=tick)
    except (DatasetFormatError, UnknownEpisodeError) as e:
        fail(str(e))
    bad = [c for c in checks if not c.ok]
    for c in bad:
        for problem in c.problems:
            report.print(f"bad {c.episode}: {escape(problem)}", highlight=False, soft_wrap=True)
    frames = sum(c.frames for c in checks)
    report.print(f"{len(checks)} episode(s), {frames} frames checked: {len(bad)} bad")
    unbound = sum(c.unbound for c in checks if c.ok)
    if unbound:
        report.print(
            f"{unbound} sound episode(s) stored by a csdm before bindings: their chunks are "
            "checked, not which episode they belong to (`csdm process` again to bind them)"
        )
    if bad and repair:
        with _expected_errors():
            uncommit(out, bad)
        console.print(f"uncommitted {len(bad)} episode(s); now run `csdm process SRC {out}`")
    elif bad:
        console.print(f"to store them again: `csdm verify {out} --repair`, then `csdm process`")
    if bad:
        raise typer.Exit(1)


def compact(
    out: Annotated[str, typer.Argument(help="A dataset written by `csdm process`.")],
    storage_option: StorageOptions = None,
) -> None:
    """Fold per-episode catalog files and records into a few large files (under OUT's lease)."""
    from storage.commit import compact as compact_catalog
    from storage.dataset import DatasetFormatError, open_dataset
    from storage.lease import DatasetLease

    storage_options(storage_option)
    with _expected_errors():
        try:
            ds = open_dataset(out)
        except DatasetFormatError as e:
            fail(str(e))
        before = len(ds.state.pending) + len(ds.state.failed)
        with DatasetLease(ds.layout):
            index = compact_catalog(ds.layout)
    report.print(
        f"{out}: generation {index.generation}, {index.episodes} episodes in "
        f"{len(index.frames_parts)} frames file(s); {before} record(s) folded in"
    )
