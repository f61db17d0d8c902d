"""Options several `csdm` commands share."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_errors import fail

StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        help="fsspec option KEY=VALUE for URLs, e.g. "
        "endpoint_url=http://host:9000 (repeat); secrets come from the environment.",
    ),
]


def storage_options(pairs: list[str] | None) -> dict:
    """Apply `--storage-option`s to every URL this command opens; bad ones end the command."""
    from storage.fs_options import use_options

    try:
        return use_options(pairs or [])
    except ValueError as e:
        fail(str(e))
