"""Read a processed dataset back: frames by window, catalog tables, SQL views."""

from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from storage.action_space import FRAME_SHAPE
from storage.commit import CatalogState, load_state
from storage.fs import Root, StorageAccessError
from storage.hub_repo import HubError, is_hub_dataset, pin
from storage.layout import OutLayout
from storage.records import FormatError, Manifest
from storage.shards import (
    ARRAY_META,
    ChunkError,
    CorruptFramesError,
    FrameBinding,
    LayoutError,
    ShardLayout,
    ShardReader,
    fresh_array,
)

if TYPE_CHECKING:  # zarr reads only layouts csdm's reader does not serve (pipeline extra)
    import zarr

__all__ = ["CorruptFramesError", "Dataset", "DatasetFormatError", "open_dataset"]


# What a Dataset keeps of the episodes it read: shard readers (each a chunk-sized scratch
# buffer per reading thread, about 2 MB, and its shards' indexes) within a byte budget.
READER_CACHE_BYTES = 64 << 20
ARRAY_CACHE = 32  # zarr arrays kept open (only for layouts csdm's reader does not serve)


class DatasetFormatError(ValueError):
    """An OUT that is not a processed dataset of this csdm format."""


class Dataset:
    """A processed dataset: `frames(episode, start, stop)` plus the catalog tables.

    Only committed episodes are seen; opening costs a handful of requests however many
    episodes there are (the manifest, the catalog index and its records, three listings).
    """

    def __init__(self, root: str | Root, storage_options: dict | None = None) -> None:
        self.commit: str | None = None  # the Hub commit read, for `hf://datasets/...`
        spec = root.url if isinstance(root, Root) else str(root)
        if is_hub_dataset(spec):  # one opening reads one commit, however the branch moves
            try:
                spec, self.commit = pin(spec)
            except HubError as e:
                raise DatasetFormatError(str(e)) from None
            options = root.options if isinstance(root, Root) else storage_options
            root, storage_options = Root(spec, dict(options or {})), None
        self.layout = OutLayout.at(root, storage_options)
        url = self.layout.root.url_of(self.layout.manifest)
        try:
            d = self.layout.root.read_json(self.layout.manifest)
        except OSError:
            self.layout.root.check_access()  # names a missing bucket or refused credentials
            raise
        if d is None:
            try:
                self.layout.root.check_access()
            except StorageAccessError as e:
                if not self.layout.root.local:
                    raise
                raise DatasetFormatError(
                    f"{e}; not a processed dataset (run `csdm process SRC {root}`)"
                ) from None
            raise DatasetFormatError(
                f"{url}: missing; not a processed dataset (run `csdm process SRC {root}`)"
            )
        try:
            self.manifest = Manifest.from_dict(d, url)
        except FormatError as e:
            raise DatasetFormatError(str(e)) from None
        self.state: CatalogState = load_state(self.layout)
        self._records = self.state.committed
        # bounded: a long run touches every episode of a large store (LRU, evicted by bytes)
        self._arrays: OrderedDict[str, zarr.Array] = OrderedDict()  # only zarr's layouts
        self._readers: OrderedDict[str, ShardReader | None] = OrderedDict()
        self._reader_bytes = 0

    def __str__(self) -> str:
        return self.layout.root.url

    @property
    def root(self) -> Root:
        """Where the dataset is."""
        return self.layout.root

    @cached_property
    def files(self) -> pa.Table:
        """One row per source episode (docs/format.md, `files` table)."""
        return self.state.files_table()

    @cached_property
    def catalog(self) -> FramesCatalog:
        """The per-frame catalog of committed episodes (lazy; read with `to_table`)."""
        return FramesCatalog(*self.state.frames_sources(self.layout))

    @property
    def episodes(self) -> list[str]:
        """Committed episodes (their frames are stored)."""
        return sorted(self._records)

    def sha256(self, episode: str) -> str | None:
        """The sha256 of the source member an episode was stored from."""
        return self._records[episode].sha256

    def _array(self, episode: str) -> zarr.Array:
        if episode not in self._arrays:
            if episode not in self._records:
                raise KeyError(f"{episode}: not stored in {self.layout.root}")
            try:
                from storage.framestore import open_frames
            except ImportError as e:
                raise DatasetFormatError(
                    f"{self.layout.root}: episode {episode} is stored in a layout only zarr "
                    f"reads ({e}); pip install 'csdm[pipeline]'"
                ) from None
            self._arrays[episode] = open_frames(self.layout, episode)
            if len(self._arrays) > ARRAY_CACHE:
                self._arrays.popitem(last=False)
        self._arrays.move_to_end(episode)
        return self._arrays[episode]

    def _keep_reader(self, episode: str, reader: ShardReader | None) -> None:
        """Remember a reader, forgetting the least recently used past the byte budget."""
        self._readers[episode] = reader
        self._reader_bytes += reader.footprint() if reader else 0
        while self._reader_bytes > READER_CACHE_BYTES and len(self._readers) > 1:
            _, old = self._readers.popitem(last=False)
            self._reader_bytes -= old.footprint() if old else 0

    def reader(self, episode: str) -> ShardReader | None:
        """The episode's csdm shard reader, or None where zarr must read it.

        The array's geometry is checked against the episode's record before any read, and the
        reader checks every shard index and chunk against the record's binding.
        """
        if episode not in self._readers:
            record = self._records.get(episode)
            if record is None:
                raise KeyError(f"{episode}: not stored in {self.layout.root}")
            key = f"{self.layout.frames_zarr}/{self.layout.episode_array(episode)}"
            n = record.n_frames or 0
            try:
                meta = self.layout.root.read_json(f"{key}/{ARRAY_META}")
                if meta is None:
                    raise LayoutError(f"{ARRAY_META} missing")
                layout = ShardLayout.parse(meta, FRAME_SHAPE)
                found = layout.shape[0] if layout else meta["shape"][0]
                if record.n_frames is not None and found != record.n_frames:
                    raise LayoutError(f"{found} frames in {ARRAY_META}, the record says {n}")
                binding = FrameBinding.from_hex(record.shard_crc32c, record.chunk_crc32c)
                reader = layout and ShardReader(self.layout.root, key, layout, binding)
            except ValueError as e:  # LayoutError, or a zarr.json that is not JSON
                raise self.corrupt_error(episode, 0, max(n, 1), str(e)) from None
            self._keep_reader(episode, reader)
        self._readers.move_to_end(episode)
        return self._readers[episode]

    def n_frames(self, episode: str) -> int:
        """Frames in an episode."""
        reader = self.reader(episode)
        return reader.layout.shape[0] if reader else self._array(episode).shape[0]

    def frames(
        self, episode: str, start: int = 0, stop: int | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """uint8 frames `[start, stop)`, (n, 150, 280, 3) BGR; decodes only the chunks touched.

        With `out` they are decoded into it. A chunk whose checksum or compression fails, or a
        missing or truncated shard, raises `CorruptFramesError`.
        """
        reader = self.reader(episode)
        if reader is None:
            got = self._zarr_frames(episode, start, stop)
            if out is not None:
                out[:] = got
            return got if out is None else out
        lo, hi = slice(start, stop).indices(reader.layout.shape[0])[:2]
        hi = max(lo, hi)
        if out is None:
            out = fresh_array((hi - lo, *reader.layout.shape[1:]))
        elif out.shape != (hi - lo, *reader.layout.shape[1:]) or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {(hi - lo, *reader.layout.shape[1:])}")
        if hi > lo:
            try:
                reader.read(lo, hi, out)
            except ChunkError as bad:
                raise self.corrupt_error(episode, bad.lo, bad.hi, bad.why) from None
        return out

    def corrupt_error(self, episode: str, lo: int, hi: int, why: str) -> CorruptFramesError:
        """The error for frames `[lo, hi)` of `episode` that fail, saying why."""
        return CorruptFramesError(
            f"{self.layout.root}: episode {episode}, frames {lo}-{hi - 1}: corrupt chunk "
            f"({why}); `csdm verify {self.layout.root}` lists every bad episode"
        )

    def _zarr_frames(self, episode: str, start: int, stop: int | None) -> np.ndarray:
        """Read by zarr, for arrays whose codecs csdm's reader does not serve."""
        arr = self._array(episode)
        try:
            return arr[start:stop]
        except Exception as e:  # zarr surfaces crc32c and codec failures as assorted errors
            lo, hi = slice(start, stop).indices(arr.shape[0])[:2]
            lo, hi, why = next(iter(chunk_problems(arr, lo, hi)), (lo, hi, _reason(e)))
            raise self.corrupt_error(episode, lo, hi, why) from None


class FramesCatalog:
    """The frames table: compacted files minus hidden episodes, plus rows committed since."""

    def __init__(self, compacted: pads.Dataset, hidden: list[str], pending: pads.Dataset):
        self.compacted, self.hidden, self.pending = compacted, hidden, pending

    def to_table(self, columns: list[str] | None = None, filter=None) -> pa.Table:
        """Rows of committed episodes; `filter` is a pyarrow.dataset expression."""
        keep = ~pads.field("episode").isin(self.hidden) if self.hidden else None
        both = keep if filter is None else (filter if keep is None else keep & filter)
        old = self.compacted.to_table(columns=columns, filter=both)
        return pa.concat_tables([old, self.pending.to_table(columns=columns, filter=filter)])


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


def open_dataset(root: str | Root | Dataset, storage_options: dict | None = None) -> Dataset:
    """Open a dataset written by `csdm process`: a folder or a URL (`s3://bucket/out`).

    A `Dataset` already open is returned as it is, so callers can share one opening.
    """
    return root if isinstance(root, Dataset) else Dataset(root, storage_options)


def connect_catalog(root: str | Root | Dataset, storage_options: dict | None = None):
    """A DuckDB connection that sees the catalog as views `frames` and `files`, and nothing else.

    The views are Arrow datasets csdm opens with the dataset's own filesystem, so no DuckDB
    extension is needed; DuckDB itself may touch no file, network or extension, and its
    configuration is locked, so SQL from a user cannot read or write outside the catalog.
    """
    import duckdb

    ds = open_dataset(root, storage_options)
    compacted, hidden, pending = ds.state.frames_sources(ds.layout)
    con = duckdb.connect(
        config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    con.register("_csdm_compacted", compacted)
    con.register("_csdm_pending", pending)
    con.register("_csdm_hidden", pa.table({"episode": pa.array(hidden, pa.string())}))
    con.register("_csdm_files", ds.files)
    con.execute(
        "CREATE VIEW frames AS SELECT * FROM _csdm_compacted WHERE episode NOT IN "
        "(SELECT episode FROM _csdm_hidden) UNION ALL SELECT * FROM _csdm_pending"
    )
    con.execute("CREATE VIEW files AS SELECT * FROM _csdm_files")
    con.execute("SET lock_configuration = true")
    return con
