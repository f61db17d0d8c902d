"""Read a processed dataset back: frames by window, catalog tables, SQL views."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import zarr

from storage.catalog import FRAMES_SCHEMA
from storage.framestore import open_frames
from storage.layout import FORMAT_VERSION, OutLayout


class DatasetFormatError(ValueError):
    """An OUT folder that is not a processed dataset of this csdm format."""


class Dataset:
    """A processed dataset: `frames(episode, start, stop)` plus the catalog tables."""

    def __init__(self, root: str | Path) -> None:
        self.layout = OutLayout(Path(root))
        if not self.layout.manifest.exists():
            raise DatasetFormatError(
                f"{root}: no manifest.json; not a processed dataset (run `csdm process SRC {root}`)"
            )
        self.manifest = json.loads(self.layout.manifest.read_text())
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetFormatError(
                f"{root}: format version {version}, this csdm reads {FORMAT_VERSION}; "
                f"re-run `csdm process` into a new folder to convert it"
            )
        self._arrays: dict[str, zarr.Array] = {}

    @cached_property
    def files(self) -> pa.Table:
        """One row per source episode (see README, `files.parquet`)."""
        return pq.read_table(self.layout.files_parquet)

    @cached_property
    def catalog(self) -> pads.Dataset:
        """The per-frame catalog as a hive-partitioned Arrow dataset (lazy)."""
        return pads.dataset(self.layout.frames_catalog, format="parquet", partitioning="hive")

    @property
    def episodes(self) -> list[str]:
        """Episodes whose frames are stored."""
        return sorted(self.manifest["episodes"])

    def _array(self, episode: str) -> zarr.Array:
        if episode not in self._arrays:
            if episode not in self.manifest["episodes"]:
                raise KeyError(f"{episode}: not stored in {self.layout.root}")
            self._arrays[episode] = open_frames(self.layout, episode)
        return self._arrays[episode]

    def n_frames(self, episode: str) -> int:
        """Frames in an episode."""
        return self._array(episode).shape[0]

    def frames(self, episode: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """uint8 frames `[start, stop)`, (n, 150, 280, 3) BGR; decodes only the chunks touched.

        A chunk whose checksum or compression fails raises `CorruptFramesError`.
        """
        arr = self._array(episode)
        try:
            return arr[start:stop]
        except Exception as e:  # zarr surfaces crc32c and codec failures as assorted errors
            lo, hi = slice(start, stop).indices(arr.shape[0])[:2]
            lo, hi, why = next(iter(chunk_problems(arr, lo, hi)), (lo, hi, _reason(e)))
            raise CorruptFramesError(
                f"{self.layout.root}: episode {episode}, frames {lo}-{hi - 1}: corrupt chunk "
                f"({why}); `csdm verify {self.layout.root}` lists every bad episode"
            ) from None


class CorruptFramesError(ValueError):
    """Stored frames whose bytes fail their checksum or do not decode."""


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


def chunk_problems(
    arr: zarr.Array, start: int = 0, stop: int | None = None
) -> list[tuple[int, int, str]]:
    """Each frame chunk touching `[start, stop)` that fails its checksum or decode.

    As `(first, stop, reason)`; the chunks are read one by one to tell which.
    """
    step, n = arr.chunks[0], arr.shape[0]
    stop = n if stop is None else stop
    bad = []
    for lo in range(start // step * step, max(stop, start + 1), step):
        hi = min(lo + step, n)
        try:
            arr[lo:hi]
        except Exception as e:
            bad.append((lo, hi, _reason(e)))
    return bad


def open_dataset(root: str | Path) -> Dataset:
    """Open a folder written by `csdm process`."""
    return Dataset(root)


def connect_catalog(root: str | Path):
    """A DuckDB connection that sees the catalog as views `frames` and `files`, and nothing else.

    The views are Arrow datasets registered by csdm; DuckDB itself may touch no file, network
    or extension, and its configuration is locked, so SQL from a user cannot write or read
    anything outside the catalog.
    """
    import duckdb

    layout = OutLayout(Path(root))
    con = duckdb.connect(
        config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    if layout.frames_catalog.exists():
        frames = pads.dataset(layout.frames_catalog, format="parquet", partitioning="hive")
    else:  # nothing stored yet: the views still exist, empty
        frames = FRAMES_SCHEMA.append(pa.field("dataset", pa.string())).empty_table()
    con.register("_csdm_frames", frames)
    con.register("_csdm_files", pads.dataset(layout.files_parquet, format="parquet"))
    con.execute("CREATE VIEW frames AS SELECT * FROM _csdm_frames")
    con.execute("CREATE VIEW files AS SELECT * FROM _csdm_files")
    con.execute("SET lock_configuration = true")
    return con
