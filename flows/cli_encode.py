"""`csdm encode`: thin glue over the encode flow."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flows.cli_diamond import OutArg, console, out_console, show_lines
from flows.cli_errors import fail, hide_expected_tracebacks
from flows.cli_options import StorageOptions, storage_options


def encode(
    out: OutArg,
    encoder: Annotated[
        str,
        typer.Option(
            help="MODULE:FACTORY; FACTORY() returns a torch.nn.Module (B,3,h,w)->(B,C,h',w')."
        ),
    ],
    view: Annotated[str, typer.Option(help="A stored view's name, or full for the frames.")],
    name: Annotated[str, typer.Option(help="The latent's name.")],
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    batch: Annotated[int, typer.Option(min=1, help="Frames per encoder call.")] = 32,
    dtype: Annotated[
        str, typer.Option(help="float32, float16 or bfloat16, as stored.")
    ] = "float32",
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Local Dask worker processes (default: one per core; cuda: 1)."),
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="Existing Dask scheduler.")] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Encode every episode's view to latents stored beside its frames; resumable."""
    from storage.dataset import DatasetFormatError
    from storage.fs import StorageAccessError
    from tasks.encode import EncodeError

    options = storage_options(storage_option)
    if device not in ("cpu", "cuda"):
        fail(f"device {device!r}: cpu or cuda")
    if device == "cuda" and workers is None:
        workers = 1  # one process holds the GPU
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from flows.prefect_api import local_api

    with local_api() as api:
        from flows.encode import encode_flow
        from flows.process import dask_runner

        hide_expected_tracebacks()
        console.print(f"Prefect API: {api}")
        try:
            results = encode_flow.with_options(task_runner=dask_runner(workers, scheduler))(
                out,
                encoder,
                view,
                name,
                device=device,
                batch=batch,
                dtype=dtype,
                show_progress=True,
                storage_options=options,
            )
        except (DatasetFormatError, StorageAccessError, EncodeError, ValueError) as e:
            fail(str(e))
    failed = [r.reason for r in results if r.status == "failed"]
    show_lines("failed", failed)
    written = sum(r.status == "written" for r in results)
    stored = sum(r.stored_bytes for r in results)
    out_console.print(
        f"{out}: latent {name} of {len(results)} episodes; written {written}, already there "
        f"{len(results) - written - len(failed)}, failed {len(failed)}; "
        f"{stored / 2**20:.1f} MiB stored"
    )
    if failed:
        raise typer.Exit(1)
