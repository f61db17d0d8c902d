"""Typed, versioned JSON formats of a processed dataset: records, manifest, catalog index."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from storage.catalog import COUNTERS

_log = logging.getLogger("csdm")
RECORD_VERSION = 2  # 2: the frames' binding (shard and chunk crc32c); 1 is read, unbound
MANIFEST_VERSION = 3  # the dataset format (storage.layout.FORMAT_VERSION)
INDEX_VERSION = 1
PIPELINE_STATE_VERSION = 1


def csdm_version() -> str:
    """The version of csdm: the installed distribution's, else the source tree's.

    The GPU machine runs the checks from a checkout that was never installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("csdm")
    except PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        m = (
            re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M)
            if pyproject.exists()
            else None
        )
        return f"{m[1]}+source" if m else "unknown"


class FormatError(ValueError):
    """A csdm file of another format version, or not a csdm file at all."""


def _check(
    d: object, version: int, where: str, kind: str, fix: str, also: tuple[int, ...] = ()
) -> dict:
    if not isinstance(d, dict):
        raise FormatError(f"{where}: not a csdm {kind} (expected a JSON object)")
    found = d.get("format_version")
    if found != version and (isinstance(found, bool) or found not in also):
        raise FormatError(
            f"{where}: {kind} format version {found}, this csdm reads {version}; {fix}"
        )
    return {k: v for k, v in d.items() if k != "format_version"}


def _build(cls, d: dict, where: str, kind: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:  # a newer csdm wrote them: read what this one knows, and say what it skips
        _log.warning(
            "%s: %s keys this csdm does not know, ignored: %s", where, kind, ", ".join(unknown[:10])
        )
    try:
        return cls(**{k: v for k, v in d.items() if k in known})
    except TypeError as e:
        raise FormatError(f"{where}: malformed {kind} ({e})") from None


class Versioned:
    """`to_dict`/`from_dict` of a dataclass stored as JSON with its `format_version`."""

    format_version: ClassVar[int]
    kind: ClassVar[str]  # in messages: "episode record", "dataset", ...
    fix: ClassVar[str] = "re-run `csdm process` into a new OUT"
    older: ClassVar[tuple[int, ...]] = ()  # earlier versions still read (their fields a subset)

    def to_dict(self) -> dict:
        """The stored JSON form."""
        return {"format_version": self.format_version, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str):
        """Parse; another version raises `FormatError` naming `where` and the fix."""
        body = _check(d, cls.format_version, where, cls.kind, cls.fix, cls.older)
        return _build(cls, body, where, cls.kind)


@dataclass(frozen=True)
class EpisodeRecord(Versioned):
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
    # stored | failed (retried) | defect (the published bytes, never retried by default) |
    # duplicate (the same bytes as `duplicate_of`, not stored again) | resolved (forgets a
    # failure; never in `files`)
    status: str = "failed"
    agree_keys: float | None = None
    agree_clicks: float | None = None
    agree_mouse: float | None = None
    inputs: dict | None = None  # what it was built from (tasks.repack.episode_inputs)
    frames_file: str | None = None  # key of its frames rows in the catalog
    duplicate_of: str | None = None  # the earlier episode whose source bytes these equal
    shard_crc32c: str | None = None  # FrameBinding: each shard index's crc32c, 8 hex digits each
    chunk_crc32c: str | None = None  # and each chunk's; None in records of version 1
    skipped: bool = field(default=False, compare=False)  # complete before this run, same inputs
    redone: str | None = field(default=None, compare=False)  # rebuilt: these inputs changed
    format_version: ClassVar[int] = RECORD_VERSION
    kind: ClassVar[str] = "episode record"
    older: ClassVar[tuple[int, ...]] = (1,)

    def to_dict(self) -> dict:
        """The stored JSON form (run-only fields left out)."""
        d = super().to_dict()
        return {k: v for k, v in d.items() if k not in ("skipped", "redone")}

    def row(self) -> dict:
        """The `files` table row."""
        d = asdict(self)
        counters = d.pop("counters") or {}
        for k in ("skipped", "redone", "inputs", "frames_file", "shard_crc32c", "chunk_crc32c"):
            d.pop(k)
        return {**d, **{c: counters.get(c) for c in COUNTERS}}


@dataclass(frozen=True)
class Manifest(Versioned):
    """`manifest.json`: what a dataset was built from and with which parameters."""

    csdm_version: str
    sources: list[str]
    parameters: dict  # ProcessParams, quality limits among them
    revision: str | None = None  # the Hub commit, when from the Hub
    updated: str = ""
    frame_rate: int = 16  # frames per second as recorded (docs/format.md "What the data is")
    format_version: ClassVar[int] = MANIFEST_VERSION
    kind: ClassVar[str] = "dataset"
    fix: ClassVar[str] = "re-run `csdm process` into a new OUT to convert it"


@dataclass(frozen=True)
class CatalogIndex(Versioned):
    """`catalog/index.json`: the compacted generation readers start from."""

    generation: int = 0
    frames_parts: list[str] = field(default_factory=list)  # keys of compacted frames files
    files_part: str | None = None  # key of the compacted records
    episodes: int = 0
    format_version: ClassVar[int] = INDEX_VERSION
    kind: ClassVar[str] = "catalog index"


@dataclass(frozen=True)
class PipelineState(Versioned):
    """`.cache/pipeline.json`: archives the pipeline has committed, and those that failed.

    `done` maps a repo path to the checksum it was committed at; `failed` maps a repo path to
    `{"checksum", "reason"}`. A failed archive is retried by the next run, and the run exits
    non-zero while any remains.
    """

    done: dict[str, str] = field(default_factory=dict)
    failed: dict[str, dict] = field(default_factory=dict)
    format_version: ClassVar[int] = PIPELINE_STATE_VERSION
    kind: ClassVar[str] = "pipeline state"
    fix: ClassVar[str] = "delete it: the next run re-checks every archive against the catalog"

    @classmethod
    def read(cls, d: dict | None, where: str) -> PipelineState:
        """Parse the stored state; the first, unversioned form was `{path: checksum}`."""
        if d is None:
            return cls()
        legacy = isinstance(d, dict) and "format_version" not in d
        if legacy and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
            return cls(done=dict(d))
        return cls.from_dict(d, where)

    def is_done(self, path: str, checksum: str) -> bool:
        """Whether the archive was committed at this checksum (a changed one is redone)."""
        return self.done.get(path) == checksum

    def mark(self, path: str, checksum: str, failure: str | None = None) -> None:
        """Record an archive's outcome: committed, or failed with the reason."""
        if failure is None:
            self.done[path] = checksum
            self.failed.pop(path, None)
        else:
            self.done.pop(path, None)
            self.failed[path] = {"checksum": checksum, "reason": failure}


@dataclass(frozen=True)
class IngestManifest(Versioned):
    """`DEST/.csdm-ingest.json`: what `csdm ingest` verified in DEST, so reruns skip it.

    `files` maps a repo path to `{"size", "checksum", "sha256", "commit"}`.
    """

    files: dict[str, dict] = field(default_factory=dict)
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    format_version: ClassVar[int] = 1
    kind: ClassVar[str] = "ingest manifest"
    fix: ClassVar[str] = "delete it: the next `csdm ingest` verifies every file again"

    @classmethod
    def read(cls, d: dict | None, where: str) -> IngestManifest:
        """Parse the stored manifest; one written before versions is the same fields."""
        if d is None:
            return cls()
        if isinstance(d, dict) and "format_version" not in d:
            d = {**d, "format_version": cls.format_version}
        return cls.from_dict(d, where)
