"""`csdm views` and `csdm encode`: thin glue over the views and encode flows."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flows.cli_diamond import OutArg, SizeOption, console, out_console, show_lines, size_or_fail
from flows.cli_errors import fail, hide_expected_tracebacks
from flows.cli_options import StorageOptions, storage_options

Workers = Annotated[
    int | None, typer.Option(min=1, help="Local Dask worker processes (default: one per core).")
]
Scheduler = Annotated[str | None, typer.Option(help="Existing Dask scheduler.")]
Refresh = Annotated[
    bool,
    typer.Option(
        "--refresh", help="Remake every recorded one where missing or stale (after process)."
    ),
]


def views(
    out: OutArg,
    size: SizeOption = "30x56",
    fit: Annotated[
        str, typer.Option(help="stretch, crop (the centred region of the view's aspect) or pad.")
    ] = "stretch",
    filter: Annotated[
        str,
        typer.Option(
            help="bicubic (torchvision's, antialiased), area (OpenCV's INTER_AREA), or "
            "Pillow's box, bilinear or nearest."
        ),
    ] = "bicubic",
    overshoot: Annotated[
        str,
        typer.Option(help="bicubic past 0..255: clamp, or wrap (DIAMOND's uint8 cast)."),
    ] = "clamp",
    name: Annotated[
        str | None,
        typer.Option(help="The view's name (default: e.g. 30x56, 64x112-crop-area, 30x56-wrap)."),
    ] = None,
    refresh: Refresh = False,
    workers: Workers = None,
    scheduler: Scheduler = None,
    storage_option: StorageOptions = None,
) -> None:
    """Store a view of every episode beside its frames (any size, fit and filter), RGB."""
    from storage.layout import check_name
    from storage.sidearrays import ViewSpec

    hw = size_or_fail(size)
    try:  # one line for an unknown fit, filter or overshoot, or a name that is no name
        ViewSpec("-", *hw, fit=fit, filter=filter, overshoot=overshoot)
        if name is not None:
            check_name(name, "view")
    except ValueError as e:
        fail(str(e))
    kwargs = dict(fit=fit, filter=filter, overshoot=overshoot, name=name, refresh=refresh)
    _run("views", out, workers, scheduler, storage_option, hw, **kwargs)


def encode(
    out: OutArg,
    encoder: Annotated[
        str | None,
        typer.Option(help="MODULE:FACTORY; FACTORY() returns a torch.nn.Module, (B,3,h,w) in."),
    ] = None,
    view: Annotated[
        str | None, typer.Option(help="A stored view's name, or full for the frames.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="The latent's name.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    batch: Annotated[int, typer.Option(min=1, help="Frames per encoder call.")] = 32,
    dtype: Annotated[
        str, typer.Option(help="float32, float16 or bfloat16, as stored.")
    ] = "float32",
    refresh: Refresh = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Local Dask worker processes (default: one per core; cuda: 1)."),
    ] = None,
    scheduler: Scheduler = None,
    storage_option: StorageOptions = None,
) -> None:
    """Encode every episode's view to latents stored beside its frames; resumable."""
    if device not in ("cpu", "cuda"):
        fail(f"device {device!r}: cpu or cuda")
    if not refresh and not (encoder and view and name):
        fail("--encoder, --view and --name are needed (or --refresh)")
    if device == "cuda" and workers is None:
        workers = 1  # one process holds the GPU
    kwargs = dict(device=device, batch=batch, dtype=dtype, refresh=refresh)
    _run("encode", out, workers, scheduler, storage_option, encoder, view, name, **kwargs)


def _run(what: str, out: str, workers, scheduler, storage_option, *args, **kwargs) -> None:
    """Run the flow on Dask under a Prefect API; one line per failure, then a summary."""
    from storage.dataset import DatasetFormatError
    from storage.fs import StorageAccessError

    options = storage_options(storage_option)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from flows.prefect_api import local_api

    with local_api() as api:
        from flows.encode import encode_flow
        from flows.process import dask_runner
        from flows.views import views_flow

        hide_expected_tracebacks()
        console.print(f"Prefect API: {api}")
        run = (views_flow if what == "views" else encode_flow).with_options(
            task_runner=dask_runner(workers, scheduler)
        )
        try:
            results = run(out, *args, show_progress=True, storage_options=options, **kwargs)
        except (DatasetFormatError, StorageAccessError, ValueError) as e:
            fail(str(e))
    failed = [r.reason for r in results if r.status == "failed"]
    show_lines("failed", failed)
    kind = "view" if what == "views" else "latent"
    for name in sorted({r.view for r in results}):
        mine = [r for r in results if r.view == name]
        written = sum(r.status == "written" for r in mine)
        bad = sum(r.status == "failed" for r in mine)
        out_console.print(
            f"{out}: {kind} {name} of {len(mine)} episodes; written {written}, already there "
            f"{len(mine) - written - bad}, failed {bad}; "
            f"{sum(r.stored_bytes for r in mine) / 2**20:.1f} MiB stored",
            soft_wrap=True,
        )
    if not results:
        out_console.print(f"{out}: no {kind}s to make")
    if failed:
        raise typer.Exit(1)
