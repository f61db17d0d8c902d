"""What several `csdm` command groups share: consoles, progress, quality and codec options."""

from __future__ import annotations

import enum
import functools
import inspect
import typing
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.cli_errors import fail
from storage.codecs import DEFAULT_CODEC
from storage.dataset_card import QUALITY_LIMITS  # the seven limits, named once
from tasks.actions.quality import QualityThresholds
from tasks.params import CODEC_NAMES

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


_SEED = QualityThresholds()  # the seed's limits are the CLI defaults


def _limit(name: str):
    """A quality-limit option whose help is the flow parameter's description."""
    from tasks.params import ProcessParams

    return typer.Option(help=ProcessParams.model_fields[name].description)


def quality_options(command):
    """Give `command` the seven quality-limit options, defined here once.

    They are added to its signature before `--storage-option` (typer reads the signature), and
    reach the command as one `quality` dict of the limits given.
    """
    sig = inspect.signature(command)
    extra = [
        inspect.Parameter(
            n,
            inspect.Parameter.KEYWORD_ONLY,
            default=getattr(_SEED, n),
            annotation=Annotated[int, _limit(n)],
        )
        for n in QUALITY_LIMITS
    ]
    params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in sig.parameters.values()
        if p.name != "quality"
    ]
    at = next((i for i, p in enumerate(params) if p.name == "storage_option"), len(params))
    hints = typing.get_type_hints(command, include_extras=True)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in params]

    @functools.wraps(command)
    def wrapper(**kw):
        quality = {n: kw.pop(n) for n in QUALITY_LIMITS}
        return command(**kw, quality=quality)

    wrapper.__signature__ = sig.replace(parameters=params[:at] + extra + params[at:])
    wrapper.__annotations__ = {}  # the signature carries them, resolved
    return wrapper


def _codec_option():
    """--codec: one of the offered frame codecs, with the flow parameter's description."""
    from tasks.params import ProcessParams

    return typer.Option(help=ProcessParams.model_fields["codec"].description)


CodecChoice = enum.Enum("CodecChoice", {n: n for n in CODEC_NAMES}, type=str)
Codec = Annotated[CodecChoice, _codec_option()]
DEFAULT_CHOICE = CodecChoice(DEFAULT_CODEC)
_SHOW_REJECTED = 20
# Short headers so the summary fits a terminal; docs/cli-details.md explains them.
_SHORT = ("dead", "skip", "hp≠", "ammo≠", "obs", "still_m", "still_v")


def _process_params(args: dict):
    """The flow parameters from a command's arguments of the same names."""
    from tasks.params import ProcessParams

    if args["split_file"] is not None and args["test_fraction"]:
        fail("give --split-file or --test-fraction, not both")
    args = {**args, **(args.get("quality") or {})}
    fields = {k: args[k] for k in ProcessParams.model_fields if k in args}
    if isinstance(fields.get("codec"), enum.Enum):
        fields["codec"] = fields["codec"].value
    fields["split_file"] = str(args["split_file"]) if args["split_file"] else ""
    params = ProcessParams(**fields)
    try:  # a split file that is no list of names ends here, in one line, before any run
        params.splits()
    except ValueError as e:
        fail(str(e))
    return params


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
    except (ValueError, FileNotFoundError, StorageAccessError, LeaseHeldError, FormatError) as e:
        fail(str(e))
    except OSError as e:  # a file where a folder should be, a read-only mount, a permission
        fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e))


def _listed(what: str, lines: tuple[str, ...], more: str) -> None:
    """The first 20 of `lines`, one each, then a count."""
    out = console if what == "failed" else report
    for line in lines[:_SHOW_REJECTED]:
        out.print(f"  {what}: {escape(line)}", highlight=False, soft_wrap=True)
    if len(lines) > _SHOW_REJECTED:
        out.print(f"  ... and {len(lines) - _SHOW_REJECTED} more {what}; {more}".rstrip("; "))


def report_source_facts(summary) -> None:
    """Name every known source defect and duplicate, each run: none is ever silent."""
    _listed("source defect", summary.defects, "not retried (--retry-defects re-reads them)")
    _listed("duplicate", summary.duplicates, "catalogued with duplicate_of, stored once")
    if summary.defects or summary.duplicates:
        report.print(
            f"{len(summary.defects)} source defect(s) and {len(summary.duplicates)} duplicate "
            "recording(s) of the published data: recorded once, not failures"
        )
