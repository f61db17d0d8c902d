"""The `csdm` command line: thin glue over tasks."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
import typer
from rich.table import Table

from flows.cli_common import (
    _SHORT,
    _SHOW_REJECTED,
    DEFAULT_CHOICE,
    Codec,
    _expected_errors,
    _listed,
    _process_params,
    _progress,
    console,
    quality_options,
    report,
    report_source_facts,
)
from flows.cli_errors import fail, hide_expected_tracebacks
from flows.cli_options import StorageOptions, storage_options
from storage.catalog import COUNTERS
from storage.layout import METADATA_RE, RECORDING_RE
from tasks.actions.labels import LabelsWriter, label_metadata_file
from tasks.synth.tree import SynthConfig, write_synthetic_tree

# Plain click help: one option per line, wrapped to the terminal, readable at 80 columns.
app = typer.Typer(
    help="csdm: the Counter-Strike deathmatch dataset pipeline.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"csdm {version('csdm')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """csdm: the Counter-Strike deathmatch dataset pipeline."""


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic source tree into.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same tree.")] = 0,
    frames: Annotated[int, typer.Option(min=2, help="Frames per episode (public: 1000).")] = 200,
    tars: Annotated[int, typer.Option(min=0, help="Scraped-set tars to write.")] = 2,
    episodes_per_tar: Annotated[int, typer.Option(min=0, help="Episodes in each tar.")] = 3,
    expert_episodes: Annotated[int, typer.Option(min=0, help="Episodes in the expert zip.")] = 2,
    disagree: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1 / 3,
            help="Share of frames per label kind (keys, clicks, "
            "mouse) shipped with a deliberately changed label.",
        ),
    ] = 0.02,
    force: Annotated[
        bool, typer.Option(help="Replace the tars, zips and metadata of an earlier synth in OUT.")
    ] = False,
) -> None:
    """Write a small synthetic dataset in the public Hub layout (tars, zip, metadata)."""
    from storage.fs import Root, StorageAccessError
    from tasks.synth.tree import earlier_synth_files

    try:
        Root(str(out)).check_access(writable=True)
    except StorageAccessError as e:
        fail(str(e))
    earlier = earlier_synth_files(out)
    if earlier and not force:
        fail(
            f"{out}: already holds a source tree ({len(earlier)} files, e.g. {earlier[0].name}); "
            "pass --force to replace it, or choose an empty folder"
        )
    for p in earlier:
        p.unlink()
    cfg = SynthConfig(seed, frames, tars, episodes_per_tar, expert_episodes, disagree)
    total = tars * episodes_per_tar + expert_episodes
    with _progress() as bar:
        task = bar.add_task("synth", total=total, item="")
        written = write_synthetic_tree(
            out, cfg, progress=lambda name: bar.update(task, advance=1, item=name)
        )
    for p in written:
        report.print(f"  {p}  ({p.stat().st_size / 1e6:.1f} MB)")


def _metadata_files(paths: list[Path]) -> list[Path]:
    """Metadata files named on the command line, or found under named folders."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(
                f
                for f in p.rglob("*.npy")
                if METADATA_RE.match(f.name) or RECORDING_RE.match(f.name)
            )
        elif p.exists():
            found.append(p)
        else:
            raise typer.BadParameter(f"{p}: no such file or folder")
    return found


def _summary(per_file: list[pa.Table]) -> Table:
    table = Table(title="quality per dataset (counter totals over kept and rejected episodes)")
    for col in ("dataset", "episodes", "frames", "kept", "rejected", "errors", *_SHORT):
        table.add_column(col, justify="right" if col != "dataset" else "left")
    files = pa.concat_tables(per_file) if per_file else None
    if files is not None and files.num_rows:
        df = files.to_pandas()
        df["error"] = df["reject_reason"].fillna("").str.startswith("error:")
        for ds, g in df.groupby("dataset"):
            ok = g[~g["error"]]
            table.add_row(
                str(ds),
                str(len(g)),
                str(int(g["n_frames"].sum())),
                str(int(ok["keep"].sum())),
                str(int((~ok["keep"]).sum())),
                str(int(g["error"].sum())),
                *[str(int(ok[c].sum())) for c in COUNTERS],
            )
    return table


@app.command()
@quality_options
def infer(
    paths: Annotated[list[Path], typer.Argument(help="Metadata .npy files or folders of them.")],
    out: Annotated[Path, typer.Option(help="Folder for frames.parquet and files.parquet.")],
    quality: dict | None = None,
) -> None:
    """Infer actions from game-state metadata and judge each episode's quality."""
    from tasks.params import ProcessParams

    thresholds = ProcessParams(**(quality or {})).thresholds()
    files = _metadata_files(paths)
    if not files:
        console.print("[red]no metadata files found[/] (want currvarsv2_*.npy or <stub><n>.npy)")
        raise typer.Exit(2)
    summaries: list[pa.Table] = []
    failed: list[tuple[Path, str]] = []
    with _progress() as bar, LabelsWriter(out) as writer:
        task = bar.add_task("infer", total=len(files), item="")
        for f in files:
            bar.update(task, item=f.name)
            try:
                labels = label_metadata_file(f, thresholds)
            except (ValueError, OSError, pickle.UnpicklingError) as e:  # reported; the rest goes on
                failed.append((f, str(e)))
            else:
                writer.add(labels)
                summaries.append(labels.files)
            bar.advance(task)
    frames_path, files_path = writer.paths
    report.print(_summary(summaries))
    rejected = [r for t in summaries for r in t.filter(pc.invert(t["keep"])).to_pylist()]
    for row in rejected[:_SHOW_REJECTED]:
        report.print(f"  rejected {row['episode']}: {row['reject_reason']}")
    if len(rejected) > _SHOW_REJECTED:
        report.print(f"  ... and {len(rejected) - _SHOW_REJECTED} more (see files.parquet)")
    report.print(f"wrote {frames_path} and {files_path}")
    if failed:
        for f, why in failed:
            console.print(f"[red]failed[/] {f}: {why}")
        console.print(f"{len(failed)} file(s) could not be read; fix or remove them and re-run.")
        raise typer.Exit(1)


@app.command()
@quality_options
def process(
    src: Annotated[
        str,
        typer.Argument(
            help="Source in the public layout: a folder or a URL "
            "(s3://bucket/raw) of tars, zips, .hdf5."
        ),
    ],
    out: Annotated[
        str, typer.Argument(help="Dataset to write: a folder or a URL (s3://bucket/out).")
    ],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Local Dask worker processes (default: one per core).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Existing Dask scheduler, tcp://host:8786.")
    ] = None,
    split_file: Annotated[Path | None, typer.Option(help="File of test episode names.")] = None,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of episodes in the test split.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split hash.")] = 0,
    reprocess: Annotated[
        bool,
        typer.Option(
            help="Accept parameters other than OUT's: re-judge, re-split, keep frames "
            "(rewritten only for a new --codec)."
        ),
    ] = False,
    retry_defects: Annotated[
        bool,
        typer.Option(
            help="Read again the members recorded as source defects (by default they are "
            "named in every run, not retried)."
        ),
    ] = False,
    quality: dict | None = None,
    codec: Codec = DEFAULT_CHOICE,
    storage_option: StorageOptions = None,
) -> None:
    """Repack a source into Zarr frames and a Parquet catalog (resumable)."""
    options = storage_options(storage_option)
    params = _process_params(locals())
    # Quiet per-task logs on the terminal; the Prefect UI keeps them.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    _check_roots(src, out, options)
    from flows.prefect_api import local_api

    with local_api() as api:
        from flows.process import dask_runner, process_flow

        hide_expected_tracebacks()
        console.print(f"Prefect API: {api}")
        with _expected_errors():
            summary = process_flow.with_options(task_runner=dask_runner(workers, scheduler))(
                src,
                out,
                params,
                show_progress=True,
                reprocess=reprocess,
                storage_options=options,
                retry_defects=retry_defects,
            )
    table = Table(title=f"processed {src} -> {out}")
    for col in (
        "episodes",
        "stored",
        "redone",
        "already done",
        "kept",
        "rejected",
        "failed",
        "raw GB",
        "stored GB",
    ):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary.episodes),
        str(summary.stored),
        str(summary.redone),
        str(summary.skipped),
        str(summary.kept),
        str(summary.rejected),
        str(summary.failed),
        f"{summary.raw_bytes / 1e9:.2f}",
        f"{summary.stored_bytes / 1e9:.3f}",
    )
    report.print(table)
    _listed("redone (inputs changed)", summary.redone_episodes, "")
    _listed("metadata file unusable", summary.metadata_failures, "")
    _listed("failed", summary.failures, "see reject_reason in the files table (csdm query)")
    report_source_facts(summary)
    report.print(
        f'try: csdm query {out} "select dataset, split, count(*) from frames group by all"'
    )
    if summary.failed:
        console.print(
            f"{summary.failed} episode(s) failed; fix the source and re-run: stored episodes "
            "are kept, the failed ones are retried"
        )
        raise typer.Exit(1)


def _check_roots(src: str, out: str, options: dict) -> None:
    """Fail before any work when SRC or OUT cannot be reached or SRC holds no episode."""
    from storage.fs import Root, StorageAccessError
    from tasks.process_source import EXPECTED
    from tasks.source import find_any_episode

    try:
        Root(src, options).check_access()
        Root(out, options).check_access(writable=True)
        if not find_any_episode(src, options):
            fail(f"no episodes found in {src} ({EXPECTED})")
    except StorageAccessError as e:
        fail(str(e))


from flows import (  # noqa: E402  (their commands join this app)
    cli_dataset,
    cli_diamond,
    cli_eval,
    cli_hub,
    cli_publish,
    cli_report,
    cli_train,
    cli_views,
)

app.command()(cli_hub.ingest)
app.command()(cli_hub.pipeline)
app.command()(cli_dataset.query)
app.command()(cli_dataset.verify)
app.command()(cli_dataset.compact)

app.command()(cli_train.train)
app.command()(cli_train.export)
app.command("import-keras")(cli_train.import_keras)
app.command("eval")(cli_eval.evaluate)
app.command()(cli_train.register)
app.command()(cli_report.report)
app.command()(cli_report.view)
app.command("export-diamond")(cli_diamond.export_diamond)
app.command()(cli_views.views)
app.command()(cli_views.encode)
app.command()(cli_publish.publish)


def main() -> None:
    """Entry point for `python -m flows.cli`."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
