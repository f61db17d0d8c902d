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
        """uint8 frames `[start, stop)`, (n, 150, 280, 3) BGR; decodes only the chunks touched."""
        return self._array(episode)[start:stop]


def open_dataset(root: str | Path) -> Dataset:
    """Open a folder written by `csdm process`."""
    return Dataset(root)


def duckdb_views(con, root: str | Path) -> None:
    """Create views `frames` and `files` over a processed dataset's catalog."""
    layout = OutLayout(Path(root))
    frames_glob = str(layout.frames_catalog / "*" / "*.parquet").replace("'", "''")
    files = str(layout.files_parquet).replace("'", "''")
    con.execute(
        f"CREATE OR REPLACE VIEW frames AS SELECT * FROM read_parquet('{frames_glob}', "
        "hive_partitioning = true, union_by_name = true)"
    )
    con.execute(f"CREATE OR REPLACE VIEW files AS SELECT * FROM read_parquet('{files}')")
