"""`csdm eval`: thin glue over `training/evaluate.py` and `tasks/report/eval_html.py`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.cli_errors import fail
from flows.cli_options import StorageOptions, storage_options

console = Console(stderr=True)
out_console = Console()
MODEL_HELP = "A run folder, an export folder, or NAME@alias / NAME@vN / NAME with --registry."


def evaluate(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    data: Annotated[str, typer.Argument(help="A dataset written by `csdm process`.")],
    split: Annotated[str, typer.Option(help="Catalog split ('all': every one).")] = "test",
    compare: Annotated[
        list[str] | None, typer.Option(help="Other models to score on the same frames.")
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry for NAME@alias models (folder, s3://, hf://).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for eval.json and index.html (default: none).")
    ] = None,
    all_episodes: Annotated[bool, typer.Option(help="Include quality-rejected episodes.")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Score models with the seed's metrics, per-key F1 and mouse confusion, per episode."""
    from storage.dataset import DatasetFormatError
    from storage.policy import DescriptorError
    from storage.registry import RegistryError
    from tasks.report.eval_html import summary_table, write_eval
    from training.checkpoint import CheckpointError
    from training.evaluate import EvalError, check_split, resolve_model
    from training.evaluate import evaluate as run_eval

    storage_options(storage_option)
    errors = (
        EvalError,
        RegistryError,
        CheckpointError,
        DatasetFormatError,
        DescriptorError,
        OSError,
    )
    try:
        check_split(data, None if split == "all" else split)
    except errors as e:
        fail(str(e))
    with tempfile.TemporaryDirectory(prefix="csdm-eval-") as tmp:  # remote registry copies
        models = []
        with console.status("loading models"):
            for m in [model, *(compare or [])]:
                try:
                    models.append(resolve_model(m, registry, Path(tmp)))
                except errors as e:
                    fail(str(e))
                except (ValueError, TypeError, RuntimeError) as e:  # not a usable model
                    fail(f"{m}: cannot be loaded as a model ({type(e).__name__}: {e})")
        bar = Progress(
            TextColumn("eval"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[item]}"),
            console=console,
        )
        with bar:
            task = bar.add_task("eval", total=None, item="")

            def on_episode(i: int, n: int, name: str) -> None:
                bar.update(task, completed=i, total=n, item=name)

            try:
                report = run_eval(
                    models,
                    data,
                    None if split == "all" else split,
                    on_episode=on_episode,
                    all_episodes=all_episodes,
                )
            except errors as e:
                fail(str(e))
    table = summary_table(report)
    out_console.print(f"{report.episodes} episodes, {report.frames} frames of {data} ({split})")
    out_console.print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if out is not None:
        made = write_eval(report, out)
        out_console.print(f"wrote {made['json']} and {made['index']}")
