"""`csdm publish`: a processed dataset to a Hub dataset repo, as thin glue over the flow."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flows.cli_errors import fail, hide_expected_tracebacks
from flows.cli_options import StorageOptions, storage_options


def publish(
    out: Annotated[
        str, typer.Argument(help="A dataset written by `csdm process` (folder or URL).")
    ],
    repo: Annotated[
        str,
        typer.Argument(
            help="The Hub dataset repo, hf://datasets/ORG/NAME, or a folder in it: "
            "hf://datasets/ORG/NAME/FOLDER (nothing outside the folder is touched)."
        ),
    ],
    revision: Annotated[
        str, typer.Option(help="Branch to publish to (created from main if new).")
    ] = "main",
    private: Annotated[
        bool, typer.Option(help="Create the repo private (an existing one keeps its visibility).")
    ] = False,
    message: Annotated[str | None, typer.Option(help="Commit message of the last commit.")] = None,
    allow_deletions: Annotated[
        bool,
        typer.Option(
            help="Delete remote objects the dataset no longer has even if the local dataset "
            "fails its check (a lost shard would then be lost on the Hub too)."
        ),
    ] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Publish a dataset to the Hub for others to read in place (resumable, incremental).

    The token is HF_TOKEN or the cached login (`hf auth login`); it is never printed.
    """
    from rich.console import Console

    from storage.dataset import DatasetFormatError
    from storage.hub_repo import HubError, parse_target

    options = storage_options(storage_option)
    try:
        parse_target(repo, revision)  # a malformed target fails before any run starts
    except HubError as e:
        fail(str(e))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.prefect_api import local_api

    with local_api():
        from flows.publish import publish_flow

        hide_expected_tracebacks()
        try:
            s = publish_flow(
                out, repo, revision, private, message or "", options, True, allow_deletions
            )
        except (HubError, DatasetFormatError, OSError, ValueError) as e:
            fail(str(e))
    Console().print(
        f"{s.target}: uploaded {s.uploaded} files ({s.uploaded_bytes / 1e6:.1f} MB) in "
        f"{s.commits} commits; {s.unchanged} unchanged, {s.deleted} deleted; head {s.commit}",
        highlight=False,
        soft_wrap=True,
    )
