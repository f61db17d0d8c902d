"""How every `csdm` command reports a user's mistake: one line on stderr, a non-zero exit."""

from __future__ import annotations

import logging
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One red line on stderr, then exit `code`: the user's error is not a crash."""
    console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Errors the commands report themselves in one line: Prefect's console logs of them (a flow's
# traceback, "Finished in state Failed(...)") would only bury that line. The UI keeps them.
EXPECTED_ERRORS = (
    "DiskFullError",
    "NoEpisodesError",
    "ParametersChangedError",
    "IngestError",
    "StorageAccessError",
    "LeaseHeldError",
    "FormatError",
    "ExportError",
    "SplitFileError",
    "HubError",
    "DatasetFormatError",
    "UnsafeNameError",
    "UnsafeKeyError",
    "CorruptFileError",
    "InputFileError",
    "NotADirectoryError",
    "IsADirectoryError",
    "PermissionError",
)


class _HideExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ in EXPECTED_ERRORS:
            return False
        text = record.getMessage()
        return not any(name in text for name in EXPECTED_ERRORS)


def hide_expected_tracebacks() -> None:
    """Keep Prefect's terminal logs from repeating, as tracebacks, errors the CLI reports."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, _HideExpected) for f in handler.filters
        ):
            handler.addFilter(_HideExpected())
