"""The one place that knows file names in the public source layout."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

METADATA_DIR = "dataset_metadata"
EPISODE_RE = re.compile(r"^hdf5_(?P<dataset>.+)_(?P<num>\d+)\.hdf5$")
METADATA_RE = re.compile(r"^currvarsv2_(?P<dataset>.+)_(?P<first>\d+)_to_(?P<last>\d+)\.npy$")
RECORDING_RE = re.compile(r"^(?P<dataset>.+)_(?P<num>\d+)\.npy$")
METADATA_FILES_PER_CHUNK = 100  # the public currvarsv2 files each cover 100 episodes


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


def metadata_dataset(path: str) -> tuple[str, int, int] | None:
    """`(dataset, first, last)` of a `currvarsv2_{stub}{a}_to_{b}.npy` file, else None."""
    m = METADATA_RE.match(PurePosixPath(path).name)
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
FORMAT_VERSION = 2  # 2: crc32c on every chunk, inputs in completion records


@dataclass(frozen=True)
class OutLayout:
    """Every path under a processed dataset `OUT/`."""

    root: Path

    @property
    def frames_zarr(self) -> Path:
        """Zarr v3 group holding one array per episode."""
        return self.root / "frames.zarr"

    @property
    def staging(self) -> Path:
        """Where units are written before they are renamed into place (same filesystem)."""
        return self.root / ".staging"

    @property
    def catalog(self) -> Path:
        """Parquet catalog folder."""
        return self.root / "catalog"

    @property
    def frames_catalog(self) -> Path:
        """Hive-partitioned Parquet dataset, one file per episode."""
        return self.catalog / "frames"

    @property
    def files_parquet(self) -> Path:
        """One row per source episode."""
        return self.catalog / "files.parquet"

    @property
    def records(self) -> Path:
        """One JSON record per completed episode: the marker that it is complete."""
        return self.catalog / "_episodes"

    @property
    def failures(self) -> Path:
        """One JSON record per source episode or member that failed in its latest attempt."""
        return self.catalog / "_failed"

    @property
    def metadata_cache(self) -> Path:
        """Labels and game state derived from metadata files, one Parquet file per episode."""
        return self.root / ".cache" / "metadata"

    @property
    def manifest(self) -> Path:
        """Source, revision, csdm version, parameters and checksums."""
        return self.root / "manifest.json"

    def episode_array(self, episode: str) -> str:
        """Path of an episode's array inside `frames.zarr`."""
        return episode

    def episode_frames(self, dataset: str, episode: str) -> Path:
        """The episode's file in the frames catalog."""
        return self.frames_catalog / f"dataset={dataset}" / f"{episode}.parquet"

    def episode_record(self, episode: str) -> Path:
        """The episode's completion record."""
        return self.records / f"{episode}.json"

    def failure_record(self, key: str) -> Path:
        """Where a failure is remembered; `key` is the episode id or a hash of its location."""
        return self.failures / f"{key}.json"

    def episode_metadata(self, episode: str) -> Path:
        """The episode's cached metadata labels."""
        return self.metadata_cache / f"{episode}.parquet"
