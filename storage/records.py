"""Typed, versioned JSON formats of a processed dataset: records, manifest, catalog index."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from storage.catalog import COUNTERS

RECORD_VERSION = 1
MANIFEST_VERSION = 3  # the dataset format (storage.layout.FORMAT_VERSION)
INDEX_VERSION = 1


class FormatError(ValueError):
    """A csdm file of another format version, or not a csdm file at all."""


def _check(d: object, version: int, where: str, kind: str, fix: str) -> dict:
    if not isinstance(d, dict):
        raise FormatError(f"{where}: not a csdm {kind} (expected a JSON object)")
    found = d.get("format_version")
    if found != version:
        raise FormatError(f"{where}: {kind} format version {found}, this csdm reads {version}; "
                          f"{fix}")  # fmt: skip
    return {k: v for k, v in d.items() if k != "format_version"}


def _build(cls, d: dict, where: str, kind: str):
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in d.items() if k in known})
    except TypeError as e:
        raise FormatError(f"{where}: malformed {kind} ({e})") from None


@dataclass(frozen=True)
class EpisodeRecord:
    """One row of the `files` table; in `_episodes/` its presence commits the episode."""

    episode: str | None
    dataset: str | None
    file_num: int | None
    split: str | None
    container: str
    member: str | None
    size: int | None = None
    sha256: str | None = None
    n_frames: int | None = None
    stored_bytes: int | None = None
    metadata_file: str | None = None
    counters: dict[str, int] | None = None
    keep: bool = False
    reject_reason: str | None = None
    status: str = "failed"  # stored | failed
    agree_keys: float | None = None
    agree_clicks: float | None = None
    agree_mouse: float | None = None
    inputs: dict | None = None  # what it was built from (tasks.repack.episode_inputs)
    frames_file: str | None = None  # key of its frames rows in the catalog
    skipped: bool = field(default=False, compare=False)  # complete before this run, same inputs
    redone: str | None = field(default=None, compare=False)  # rebuilt: these inputs changed
    format_version = RECORD_VERSION

    def to_dict(self) -> dict:
        """The stored JSON form (run-only fields left out)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("skipped", "redone")}
        return {"format_version": RECORD_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict, where: str = "record") -> EpisodeRecord:
        """Parse a stored record; another version raises `FormatError` naming `where`."""
        body = _check(d, RECORD_VERSION, where, "episode record",
                      "re-run `csdm process` into a new OUT")  # fmt: skip
        return _build(cls, body, where, "episode record")

    def row(self) -> dict:
        """The `files` table row."""
        d = asdict(self)
        counters = d.pop("counters") or {}
        for k in ("skipped", "redone", "inputs", "frames_file"):
            d.pop(k)
        return {**d, **{c: counters.get(c) for c in COUNTERS}}


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`: what a dataset was built from and with which parameters."""

    csdm_version: str
    sources: list[str]
    parameters: dict  # ProcessParams, quality limits among them
    revision: str | None = None  # the Hub commit, when from the Hub
    updated: str = ""
    format_version = MANIFEST_VERSION

    def to_dict(self) -> dict:
        """The stored JSON form."""
        return {"format_version": MANIFEST_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest.json") -> Manifest:
        """Parse; another version raises `FormatError` naming `where` and the fix."""
        body = _check(d, MANIFEST_VERSION, where, "dataset",
                      "re-run `csdm process` into a new OUT to convert it")  # fmt: skip
        return _build(cls, body, where, "manifest")


@dataclass(frozen=True)
class CatalogIndex:
    """`catalog/index.json`: the compacted generation readers start from."""

    generation: int = 0
    frames_parts: list[str] = field(default_factory=list)  # keys of compacted frames files
    files_part: str | None = None  # key of the compacted records
    episodes: int = 0
    format_version = INDEX_VERSION

    def to_dict(self) -> dict:
        """The stored JSON form."""
        return {"format_version": INDEX_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "catalog/index.json") -> CatalogIndex:
        """Parse; another version raises `FormatError` naming `where`."""
        body = _check(d, INDEX_VERSION, where, "catalog index",
                      "re-run `csdm process` into a new OUT")  # fmt: skip
        return _build(cls, body, where, "catalog index")
