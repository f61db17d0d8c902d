"""The one place that knows file names in the public source layout."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath

from storage.fs import Root, root_of

METADATA_DIR = "dataset_metadata"
# Stubs and numbers in ASCII only (`\d` alone would take any script's digits), anchored at the
# very end (`$` would let a trailing newline through).
_STUB, _NUM = r"(?P<dataset>[A-Za-z0-9_.-]+)", r"[0-9]+"
EPISODE_RE = re.compile(rf"^hdf5_{_STUB}_(?P<num>{_NUM})\.hdf5\Z")
METADATA_RE = re.compile(rf"^currvarsv2_{_STUB}_(?P<first>{_NUM})_to_(?P<last>{_NUM})\.npy\Z")
RECORDING_RE = re.compile(rf"^{_STUB}_(?P<num>{_NUM})\.npy\Z")
ARCHIVE_RE = re.compile(rf"^hdf5_{_STUB}_(?P<first>{_NUM})_to_(?P<last>{_NUM})\.tar\Z")
METADATA_FILES_PER_CHUNK = 100  # the public currvarsv2 files each cover 100 episodes

# A name that becomes one path segment (an episode, a view, a latent): ASCII letters, digits,
# `_`, `.` and `-`, starting with a letter or digit, so it can never be `..`, absolute, hidden,
# or hold a separator or a control character, whichever catalog, CLI or source it came from.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}\Z")
# Windows device names (a gaming PC pulls views and exports) and the store's own file names.
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", "zarr.json", "index.json", "views.json"]
    + [f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10)]
)


class UnsafeNameError(ValueError):
    """A name that would become a path outside its folder, or one the store reserves."""


def check_name(name: object, what: str = "episode") -> str:
    """`name` if it is a safe single path segment, else `UnsafeNameError` saying why."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise UnsafeNameError(
            f"{what} name {name!r} is not allowed: use ASCII letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (no separators, '..' or control characters)"
        )
    if ".." in name or name.lower() in _RESERVED or name.split(".")[0].lower() in _RESERVED:
        raise UnsafeNameError(f"{what} name {name!r} is not allowed: it is reserved")
    return name


@dataclass(frozen=True, order=True)
class EpisodeId:
    """An episode's identity: `dataset` is the stub without its trailing underscore."""

    dataset: str
    file_num: int

    @property
    def name(self) -> str:
        """Episode id as used in catalogs, e.g. `dm_july2021_12`."""
        return f"{self.dataset}_{self.file_num}"

    @property
    def hdf5_name(self) -> str:
        """File name of the episode in the public layout."""
        return f"hdf5_{self.name}.hdf5"


def episode_from_member(path: str) -> EpisodeId | None:
    """Episode of an `hdf5_{stub}{n}.hdf5` file or archive member, or None for other files."""
    m = EPISODE_RE.match(PurePosixPath(path).name)
    return EpisodeId(m["dataset"], int(m["num"])) if m else None


def odd_member_name(path: str) -> str | None:
    """Why a file that is no episode still deserves a row: an odd name, or a near-episode one.

    READMEs and images pass quietly; a name with control or non-ASCII characters, or one that
    looks like an episode but does not parse, is reported rather than silently skipped.
    """
    name = PurePosixPath(path).name
    if not path.isascii() or not path.isprintable():
        return f"name {path!r} holds control or non-ASCII characters; not an episode name"
    if episode_from_member(path) is None and (
        name.lower().startswith("hdf5_") or name.lower().endswith(".hdf5")
    ):
        return f"name {name!r} is not an episode name (hdf5_{{stub}}_{{n}}.hdf5, ASCII)"
    return None


def metadata_dataset(path: str) -> tuple[str, int, int] | None:
    """`(dataset, first, last)` of a `currvarsv2_{stub}{a}_to_{b}.npy` file, else None."""
    m = METADATA_RE.match(PurePosixPath(path).name)
    return (m["dataset"], int(m["first"]), int(m["last"])) if m else None


def archive_range(path: str) -> tuple[str, int, int] | None:
    """`(dataset, first, last)` of a scraped `hdf5_{stub}{a}_to_{b}.tar`, else None."""
    m = ARCHIVE_RE.match(PurePosixPath(path).name)
    return (m["dataset"], int(m["first"]), int(m["last"])) if m else None


def recording_episode(path: str) -> EpisodeId:
    """Episode of a seed per-recording `.npy` (e.g. `dm_july2021_5.npy`); number 0 if none."""
    name = PurePosixPath(path).name
    m = RECORDING_RE.match(name)
    if m:
        return EpisodeId(m["dataset"], int(m["num"]))
    return EpisodeId(name.removesuffix(".npy"), 0)


def metadata_name(dataset: str, first: int, last: int) -> str:
    """File name of a metadata chunk, e.g. `currvarsv2_dm_july2021_1_to_100.npy`."""
    return f"currvarsv2_{dataset}_{first}_to_{last}.npy"


def metadata_chunk(file_num: int) -> tuple[int, int]:
    """The `(first, last)` file numbers of the public metadata chunk holding `file_num`."""
    first = (file_num - 1) // METADATA_FILES_PER_CHUNK * METADATA_FILES_PER_CHUNK + 1
    return first, first + METADATA_FILES_PER_CHUNK - 1


def tar_name(dataset: str, first: int, last: int) -> str:
    """Name of a scraped-set tar, e.g. `hdf5_dm_july2021_1_to_200.tar`."""
    return f"hdf5_{dataset}_{first}_to_{last}.tar"


def frame_key(i: int, part: str) -> str:
    """HDF5 dataset name of one frame's part: `x`, `y`, `xaux` or `helperarr`."""
    return f"frame_{i}_{part}"


# --- the output layout (DESIGN.md "Output layout") -------------------------------------------
FORMAT_VERSION = 3  # 3: rename-free commits, compacted catalog, typed manifest


@dataclass(frozen=True)
class OutLayout:
    """Every key under a processed dataset `OUT/`, relative to its root (a folder or a URL)."""

    root: Root

    @classmethod
    def at(cls, out: str | Root, options: dict | None = None) -> OutLayout:
        """The layout of a dataset at a path or URL."""
        return cls(root_of(out, options))

    frames_zarr = "frames.zarr"  # Zarr v3 group, one sharded array per episode
    actions_zarr = "actions.zarr"  # the source's raw `frame_i_y` rows, one array per episode
    views = "views"  # low-resolution views: `views/<name>.zarr`, one array per episode
    views_index = "catalog/views.json"  # the ViewsIndex: each view's parameters
    manifest = "manifest.json"  # the Manifest: format, sources, parameters
    lease = ".lease.json"  # the Lease of the run writing OUT
    catalog_index = "catalog/index.json"  # the CatalogIndex: the compacted generation
    records = "catalog/_episodes"  # one EpisodeRecord per committed, not yet compacted episode
    pending_frames = "catalog/_frames"  # their frames rows, one uniquely named file each
    failures = "catalog/_failed"  # one EpisodeRecord per failure of the latest attempt
    uncommitted = "catalog/_uncommitted"  # markers hiding compacted episodes being redone
    metadata_cache = ".cache/metadata"  # labels and game state derived from metadata files
    pipeline_state = ".cache/pipeline.json"  # containers the pipeline has processed
    report = "report"  # `csdm report` / the flows' HTML report

    def episode_array(self, episode: str) -> str:
        """Key of an episode's array inside `frames.zarr` (and `actions.zarr`, views)."""
        return check_name(episode)

    def episode_record(self, episode: str) -> str:
        """The episode's completion record (until compaction folds it in)."""
        return f"{self.records}/{check_name(episode)}.json"

    def new_frames_file(self, episode: str) -> str:
        """A fresh, unique key for an episode's frames rows (never overwritten in place)."""
        return f"{self.pending_frames}/{check_name(episode)}.{uuid.uuid4().hex[:12]}.parquet"

    def uncommit_marker(self, episode: str) -> str:
        """Marker that hides a compacted episode while it is redone."""
        return f"{self.uncommitted}/{check_name(episode)}"

    def failure_record(self, key: str) -> str:
        """Where a failure is remembered; `key` is the episode id or a hash of its location."""
        return f"{self.failures}/{check_name(key, 'failure')}.json"

    def compact_frames(self, generation: int, part: int) -> str:
        """A compacted frames file."""
        return f"catalog/frames-{generation:06d}-{part:03d}.parquet"

    def compact_files(self, generation: int) -> str:
        """The compacted records (one row per source episode)."""
        return f"catalog/files-{generation:06d}.parquet"

    def episode_metadata(self, episode: str) -> str:
        """The episode's cached metadata labels."""
        return f"{self.metadata_cache}/{check_name(episode)}.parquet"
