"""The `csdm` command line: thin glue over tasks."""

from __future__ import annotations

import enum
import os
import pickle
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.cli_errors import fail, hide_expected_tracebacks
from flows.cli_options import StorageOptions, storage_options
from storage.catalog import COUNTERS
from storage.codecs import DEFAULT_CODEC
from storage.layout import METADATA_RE, RECORDING_RE
from tasks.actions.labels import LabelsWriter, label_metadata_file
from tasks.actions.quality import QualityThresholds
from tasks.params import CODEC_NAMES
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


console = Console(stderr=True)  # progress and diagnostics
report = Console()  # results; wide enough for the summary table even when piped
report.width = max(report.width, 130)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[item]}"),
        console=console,
    )


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
    from tasks.synth.tree import earlier_synth_files

    earlier = earlier_synth_files(out)
    if earlier and not force:
        fail(f"{out}: already holds a source tree ({len(earlier)} files, e.g. {earlier[0].name}); "
             "pass --force to replace it, or choose an empty folder")  # fmt: skip
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


_SEED = QualityThresholds()  # the seed's limits are the CLI defaults


def _limit(name: str):
    """A quality-limit option whose help is the flow parameter's description."""
    from tasks.params import ProcessParams

    return typer.Option(help=ProcessParams.model_fields[name].description)


DeadSkipped = Annotated[int, _limit("dead_skipped")]
DisagreeHp = Annotated[int, _limit("ram_gsi_disagree_hp")]
DisagreeAmmo = Annotated[int, _limit("ram_gsi_disagree_ammo")]
ObsCount = Annotated[int, _limit("obs_count")]
MouseStatic = Annotated[int, _limit("mouse_static")]
VelStatic = Annotated[int, _limit("vel_static")]
PerFrames = Annotated[int, _limit("per_frames")]


def _codec_option():
    """--codec: one of the offered frame codecs, with the flow parameter's description."""
    from tasks.params import ProcessParams

    return typer.Option(help=ProcessParams.model_fields["codec"].description)


CodecChoice = enum.Enum("CodecChoice", {n: n for n in CODEC_NAMES}, type=str)
Codec = Annotated[CodecChoice, _codec_option()]
DEFAULT_CHOICE = CodecChoice(DEFAULT_CODEC)
_SHOW_REJECTED = 20
# Short headers so the summary fits a terminal; README explains them.
_SHORT = ("dead", "skip", "hp≠", "ammo≠", "obs", "still_m", "still_v")


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
                str(ds), str(len(g)), str(int(g["n_frames"].sum())), str(int(ok["keep"].sum())),
                str(int((~ok["keep"]).sum())), str(int(g["error"].sum())),
                *[str(int(ok[c].sum())) for c in COUNTERS],
            )  # fmt: skip
    return table


@app.command()
def infer(
    paths: Annotated[list[Path], typer.Argument(help="Metadata .npy files or folders of them.")],
    out: Annotated[Path, typer.Option(help="Folder for frames.parquet and files.parquet.")],
    dead_skipped: DeadSkipped = _SEED.dead_skipped,
    ram_gsi_disagree_hp: DisagreeHp = _SEED.ram_gsi_disagree_hp,
    ram_gsi_disagree_ammo: DisagreeAmmo = _SEED.ram_gsi_disagree_ammo,
    obs_count: ObsCount = _SEED.obs_count,
    mouse_static: MouseStatic = _SEED.mouse_static,
    vel_static: VelStatic = _SEED.vel_static,
    per_frames: PerFrames = _SEED.per_frames,
) -> None:
    """Infer actions from game-state metadata and judge each episode's quality."""
    thresholds = QualityThresholds(
        dead_skipped=dead_skipped,
        ram_gsi_disagree_hp=ram_gsi_disagree_hp,
        ram_gsi_disagree_ammo=ram_gsi_disagree_ammo,
        obs_count=obs_count,
        mouse_static=mouse_static,
        vel_static=vel_static,
        per_frames=per_frames or None,
    )
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
    dead_skipped: DeadSkipped = _SEED.dead_skipped,
    ram_gsi_disagree_hp: DisagreeHp = _SEED.ram_gsi_disagree_hp,
    ram_gsi_disagree_ammo: DisagreeAmmo = _SEED.ram_gsi_disagree_ammo,
    obs_count: ObsCount = _SEED.obs_count,
    mouse_static: MouseStatic = _SEED.mouse_static,
    vel_static: VelStatic = _SEED.vel_static,
    per_frames: PerFrames = _SEED.per_frames,
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
                src, out, params, show_progress=True, reprocess=reprocess,
                storage_options=options,
            )  # fmt: skip
    table = Table(title=f"processed {src} -> {out}")
    for col in ("episodes", "stored", "redone", "already done", "kept", "rejected", "failed",
                "raw GB", "stored GB"):  # fmt: skip
        table.add_column(col, justify="right")
    table.add_row(
        str(summary.episodes), str(summary.stored), str(summary.redone),
        str(summary.skipped), str(summary.kept), str(summary.rejected), str(summary.failed),
        f"{summary.raw_bytes / 1e9:.2f}", f"{summary.stored_bytes / 1e9:.3f}",
    )  # fmt: skip
    report.print(table)
    _listed("redone (inputs changed)", summary.redone_episodes, "")
    _listed("metadata file unusable", summary.metadata_failures, "")
    _listed("failed", summary.failures, "see reject_reason in the files table (csdm query)")
    report.print(
        f'try: csdm query {out} "select dataset, split, count(*) from frames group by all"'
    )
    if summary.failed:
        console.print(
            f"{summary.failed} episode(s) failed; fix the source and re-run: stored episodes "
            "are kept, the failed ones are retried"
        )
        raise typer.Exit(1)


def _process_params(args: dict):
    """The flow parameters from a command's arguments of the same names."""
    from tasks.params import ProcessParams

    if args["split_file"] is not None and args["test_fraction"]:
        fail("give --split-file or --test-fraction, not both")
    fields = {k: args[k] for k in ProcessParams.model_fields if k in args}
    if isinstance(fields.get("codec"), enum.Enum):
        fields["codec"] = fields["codec"].value
    fields["split_file"] = str(args["split_file"]) if args["split_file"] else ""
    return ProcessParams(**fields)


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


@contextmanager
def _expected_errors():
    """Known failures end the command with one line: 3 for a full disk, else 1."""
    from storage.diskspace import DiskFullError
    from storage.fs import StorageAccessError
    from storage.lease import LeaseHeldError
    from storage.records import FormatError

    try:
        yield
    except DiskFullError as e:
        fail(str(e), code=3)
    except (ValueError, FileNotFoundError, StorageAccessError, LeaseHeldError,
            FormatError) as e:  # fmt: skip
        fail(str(e))


def _listed(what: str, lines: tuple[str, ...], more: str) -> None:
    """The first 20 of `lines`, one each, then a count."""
    out = console if what == "failed" else report
    for line in lines[:_SHOW_REJECTED]:
        out.print(f"  {what}: {escape(line)}", highlight=False, soft_wrap=True)
    if len(lines) > _SHOW_REJECTED:
        out.print(f"  ... and {len(lines) - _SHOW_REJECTED} more {what}; {more}".rstrip("; "))


@app.command()
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
                    repo, revision, include or [], exclude or [], subset or [], dest, endpoint,
                    show_progress=True, storage_options=options,
                )  # fmt: skip
            except (IngestError, ValueError) as e:
                fail(str(e))
    gb, secs = summary["bytes"] / 1e9, summary["seconds"]
    report.print(
        f"{summary['repo']}@{summary['commit'][:12]}: {summary['files']} files selected, "
        f"{summary['fetched']} fetched ({gb:.3f} GB in {secs} s), "
        f"{summary['already_verified']} already verified, {len(summary['failed'])} failed"
    )
    for f in summary["failed"]:
        console.print(f"[red]failed[/] {f['path']}: {f['error']}")
    if summary["failed"]:
        raise typer.Exit(1)


def _size(text: str) -> int:
    """Bytes from `500MB`, `30GB`, `1.5TB` or a plain number."""
    units = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
    t = text.strip().upper()
    for unit, factor in units.items():
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * factor)
    return int(float(t))


@app.command()
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
    dead_skipped: DeadSkipped = _SEED.dead_skipped,
    ram_gsi_disagree_hp: DisagreeHp = _SEED.ram_gsi_disagree_hp,
    ram_gsi_disagree_ammo: DisagreeAmmo = _SEED.ram_gsi_disagree_ammo,
    obs_count: ObsCount = _SEED.obs_count,
    mouse_static: MouseStatic = _SEED.mouse_static,
    vel_static: VelStatic = _SEED.vel_static,
    per_frames: PerFrames = _SEED.per_frames,
    codec: Codec = DEFAULT_CHOICE,
    storage_option: StorageOptions = None,
    stream: Annotated[
        bool,
        typer.Option(
            help="Stream each archive from the Hub on a worker: no local copy; its "
            "episodes commit once its sha256 matches. --dest/--max-disk do not apply."
        ),
    ] = False,
) -> None:
    """Download and process as one stream: each tar is processed as soon as it is verified."""
    options = storage_options(storage_option)
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
                    out, str(dest), repo, revision, tuple(include or ()),
                    tuple(exclude or ()), tuple(subset or ()), str(source) if source else "",
                    params, _size(max_disk) if max_disk else 0, delete_sources, transfers,
                    endpoint or "", workers or 0, scheduler or "", show_progress=True,
                    storage_options=options, stream=stream,
                )  # fmt: skip
            except IngestError as e:
                fail(str(e))
    failures = result.pop("failures", ())
    report.print(" ".join(f"{k}={v}" for k, v in result.items()), soft_wrap=True)
    _listed("failed", tuple(failures), "see files.parquet")
    if result.get("failed") or result.get("failed_archives"):
        raise typer.Exit(1)


@app.command()
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


@app.command()
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
    from tasks.verify import uncommit, verify_dataset

    storage_options(storage_option)
    try:
        total = len(episodes) if episodes else len(open_dataset(out).episodes)
        with _progress() as bar:
            task = bar.add_task("verify", total=total, item="")

            def tick(check) -> None:
                bar.update(task, advance=1, item=check.episode)

            checks = verify_dataset(out, episodes, progress=tick)
    except DatasetFormatError as e:
        fail(str(e))
    bad = [c for c in checks if not c.ok]
    for c in bad:
        for problem in c.problems:
            report.print(f"bad {c.episode}: {escape(problem)}", highlight=False, soft_wrap=True)
    frames = sum(c.frames for c in checks)
    report.print(f"{len(checks)} episode(s), {frames} frames checked: {len(bad)} bad")
    if bad and repair:
        with _expected_errors():
            uncommit(out, bad)
        console.print(f"uncommitted {len(bad)} episode(s); now run `csdm process SRC {out}`")
    elif bad:
        console.print(f"to store them again: `csdm verify {out} --repair`, then `csdm process`")
    if bad:
        raise typer.Exit(1)


@app.command()
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


from flows import cli_diamond, cli_eval, cli_report, cli_train  # noqa: E402  (join this app)

app.command()(cli_train.train)
app.command()(cli_train.export)
app.command("import-keras")(cli_train.import_keras)
app.command("eval")(cli_eval.evaluate)
app.command()(cli_train.register)
app.command()(cli_report.report)
app.command()(cli_report.view)
app.command("export-diamond")(cli_diamond.export_diamond)
app.command()(cli_diamond.views)


def main() -> None:
    """Entry point for `python -m flows.cli`."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
