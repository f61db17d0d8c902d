"""Windows of frames read straight from an episode's Zarr v3 shards: csdm's lean read path.

The sharding format is a documented table at each shard's end: per inner chunk a little-endian
(offset, length) pair of uint64, then the table's crc32c. Each shard's table is read once and
kept; a window's chunks in one shard are fetched as one byte range; each chunk's crc32c is
checked, then zstd decompresses it straight into the caller's array where the chunk lies
inside the window, and the predictor is undone in place by one compiled pass. Arrays whose
codecs this reader does not know are read by zarr (`Dataset.frames` decides).
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
from dataclasses import dataclass

import google_crc32c
import imagecodecs
import numpy as np

from storage.frame_codecs import IMAGE_CODEC, PREDICTOR_CODEC, ImageSpec
from storage.fs import Root
from storage.unpredict import undo_predictor

ARRAY_META = "zarr.json"  # an array's metadata, written last
EMPTY = (1 << 64) - 1  # an index entry for a chunk never written
MAX_FRAMES = 1 << 20  # an episode's frames: the public ones hold 1000 (18 h at 16 fps here)
MAX_CHUNK_FRAMES = 4096
# the kernel maps every page at once (Linux), cheaper than a fault per page as they are read
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


class CorruptFramesError(ValueError):
    """Stored frames whose bytes fail their checksum or do not decode."""


class ChunkError(Exception):
    """A chunk or shard that fails; `Dataset.frames` names the episode and frames."""

    def __init__(self, lo: int, hi: int, why: str) -> None:
        super().__init__(why)
        self.lo, self.hi, self.why = lo, hi, why


class LayoutError(ValueError):
    """An array's `zarr.json` whose geometry no csdm array has (negative, zero, too large)."""


@dataclass(frozen=True)
class FrameBinding:
    """What ties stored frames to their episode: each shard index's and each chunk's crc32c.

    Kept in the episode's record, which readers already read, so a shard, an index or a chunk
    copied or served from elsewhere fails its episode's check even though its own crc32c holds.
    """

    shards: tuple[int, ...]  # the crc32c closing each shard's index, in shard order
    chunks: tuple[int, ...]  # the crc32c closing each inner chunk's bytes, in frame order

    def to_hex(self) -> tuple[str, str]:
        """Both lists as hex strings, 8 digits an entry (the record's two fields)."""
        return "".join(f"{v:08x}" for v in self.shards), "".join(f"{v:08x}" for v in self.chunks)

    @classmethod
    def from_hex(cls, shards: str | None, chunks: str | None) -> FrameBinding | None:
        """The binding a record holds, or None for records written before bindings."""
        if shards is None or chunks is None:
            return None

        def ints(text: str) -> tuple[int, ...]:
            if len(text) % 8:
                raise ValueError("a binding is 8 hex digits an entry")
            return tuple(int(text[i : i + 8], 16) for i in range(0, len(text), 8))

        return cls(ints(shards), ints(chunks))

    @classmethod
    def of_shards(cls, shards: list[bytes], per_shard: int) -> FrameBinding:
        """The binding of whole shard objects as written, in shard order."""
        index, chunks = [], []
        for data in shards:
            raw = np.frombuffer(data, np.uint8)
            tail = raw[-(16 * per_shard + 4) :]
            index.append(int.from_bytes(tail[-4:].tobytes(), "little"))
            for off, n in tail[:-4].view("<u8").reshape(per_shard, 2).tolist():
                if off != EMPTY:
                    chunks.append(int.from_bytes(raw[off + n - 4 : off + n].tobytes(), "little"))
        return cls(tuple(index), tuple(chunks))


def _positive(v: object, what: str, most: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= most:
        raise LayoutError(f"{what} {v!r} is not a whole number from 1 to {most}")
    return v


@dataclass(frozen=True)
class ShardLayout:
    """What this reader needs from an episode array's `zarr.json`."""

    shape: tuple[int, ...]
    shard: int  # frames per shard object
    chunk: int  # frames per inner chunk
    predictor: str | None  # csdm.predictor's kind, undone after decompression
    image: ImageSpec | None  # the serializer, when chunks are images
    zstd: bool

    @property
    def per_shard(self) -> int:
        """Inner chunks per shard."""
        return self.shard // self.chunk

    @classmethod
    def parse(cls, meta: object, frame_shape: tuple[int, ...] | None = None) -> ShardLayout | None:
        """The layout of a csdm frames array, or None for one this reader does not serve.

        Geometry is checked first, whoever reads the array next: a shape, chunk or shard that
        is not positive, consistent and bounded raises `LayoutError` (zarr would read zeros).
        """
        check_geometry(meta, frame_shape)
        try:
            (sharding,) = meta["codecs"]
            cfg = sharding["configuration"]
            if sharding["name"] != "sharding_indexed" or cfg.get("index_location") != "end":
                return None
            if [c["name"] for c in cfg["index_codecs"]] != ["bytes", "crc32c"]:
                return None
            if cfg["index_codecs"][0].get("configuration", {}).get("endian", "little") != "little":
                return None
            codecs = list(cfg["codecs"])
            if meta.get("data_type") != "uint8" or not codecs or codecs.pop()["name"] != "crc32c":
                return None
            predictor = image = None
            zstd = bool(codecs) and codecs[-1]["name"] == "zstd"
            if zstd and codecs.pop().get("configuration", {}).get("checksum"):
                return None  # zstd's own checksum: leave such arrays to zarr
            serializer = codecs.pop()
            if serializer["name"] == IMAGE_CODEC:
                image = ImageSpec.from_dict(serializer)
            elif serializer["name"] != "bytes":
                return None
            if codecs and codecs[-1]["name"] == PREDICTOR_CODEC:
                predictor = codecs.pop()["configuration"]["kind"]
            if codecs:
                return None
            shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
            chunk = cfg["chunk_shape"]
            shape = tuple(meta["shape"])
            if list(shard[1:]) != list(shape[1:]) or list(chunk[1:]) != list(shape[1:]):
                return None
            if shard[0] % chunk[0] or meta["chunk_key_encoding"]["name"] != "default":
                return None
            if meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") != "/":
                return None
            return cls(shape, int(shard[0]), int(chunk[0]), predictor, image, zstd)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def check_geometry(meta: object, frame_shape: tuple[int, ...] | None = None) -> None:
    """Refuse a frames array's `zarr.json` whose shape, shards or chunks no csdm array has."""
    if not isinstance(meta, dict):
        raise LayoutError(f"zarr.json holds a {type(meta).__name__}, not an object")
    try:
        shape = list(meta["shape"])
        grid = list(meta["chunk_grid"]["configuration"]["chunk_shape"])
        inner = [
            c["configuration"]["chunk_shape"]
            for c in meta.get("codecs") or []
            if isinstance(c, dict) and c.get("name") == "sharding_indexed"
        ]
    except (KeyError, TypeError, AttributeError) as e:
        raise LayoutError(f"zarr.json lacks its geometry ({type(e).__name__}: {e})") from None
    if not shape:
        raise LayoutError("zarr.json gives an empty shape")
    if not isinstance(shape[0], int) or isinstance(shape[0], bool) or not shape[0] >= 0:
        raise LayoutError(f"frame count {shape[0]!r} is not a whole number")
    if shape[0] > MAX_FRAMES:
        raise LayoutError(f"frame count {shape[0]} exceeds {MAX_FRAMES}")
    if frame_shape is not None and tuple(shape[1:]) != tuple(frame_shape):
        raise LayoutError(f"frame shape {shape[1:]} is not {list(frame_shape)}")
    for i, v in enumerate(shape[1:], 1):
        _positive(v, f"dimension {i}", 1 << 16)
    for chunk in [grid, *inner]:
        if len(chunk) != len(shape):
            raise LayoutError(f"chunk shape {chunk} does not match shape {shape}")
        _positive(chunk[0], "frames per chunk", MAX_FRAMES)
        for i, v in enumerate(chunk[1:], 1):
            _positive(v, f"chunk dimension {i}", 1 << 16)
    if inner:
        _positive(inner[0][0], "frames per inner chunk", MAX_CHUNK_FRAMES)
        if grid[0] % inner[0][0]:
            raise LayoutError(f"a shard of {grid[0]} frames is not whole chunks of {inner[0][0]}")


def fresh_array(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array in anonymous memory the kernel may back with 2 MB pages.

    Windows are tens of MB of fresh memory: with 4 KB pages, faulting it in cost about as much
    as decoding it on this project's virtual machines; huge pages take far fewer faults.
    """
    n = int(np.prod(shape))
    if n < 4 << 20 or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, np.uint8)
    region = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(region, np.uint8).reshape(shape)


def _checked(data: np.ndarray) -> np.ndarray:
    """`data` (read-only uint8) less its trailing crc32c, which must match."""
    if len(data) < 4:
        raise ValueError("shorter than its checksum")
    body = data[:-4]
    if google_crc32c.value(body) != int.from_bytes(data[-4:].tobytes(), "little"):
        raise ValueError("crc32c mismatch")
    return body


class ShardReader:
    """One episode's frames; `read(lo, hi, out)` decodes `[lo, hi)` into `out`."""

    def __init__(
        self, root: Root, key: str, layout: ShardLayout, binding: FrameBinding | None = None
    ) -> None:
        self.root, self.key, self.layout, self.binding = root, key, layout, binding
        n_chunks = -(-layout.shape[0] // layout.chunk)
        if binding is not None and (
            len(binding.chunks) != n_chunks
            or len(binding.shards) != -(-n_chunks // layout.per_shard)
        ):
            raise LayoutError(
                f"{len(binding.shards)} shards and {len(binding.chunks)} chunks recorded, "
                f"zarr.json makes {-(-n_chunks // layout.per_shard)} and {n_chunks}"
            )
        self._index: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    # --- bytes -------------------------------------------------------------------------------
    def _shard_key(self, s: int) -> str:
        zeros = "/".join("0" for _ in self.layout.shape[1:])
        return f"{self.key}/c/{s}/{zeros}"

    def _fetch(self, s: int, start: int | None, end: int | None) -> np.ndarray:
        """Bytes of shard `s` in `[start, end)`, read-only uint8; a negative start counts back.

        A local file is mapped, not copied: the page cache is read in place.
        """
        key = self._shard_key(s)
        if not self.root.local:
            return np.frombuffer(self.root.read_bytes(key, start, end), np.uint8)
        # never blocks on a FIFO, and reads nothing but a regular file (not /dev/zero)
        fd = os.open(self.root.full(key), os.O_RDONLY | os.O_NONBLOCK)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ValueError("not a regular file")
        with open(fd, "rb") as f:
            size = st.st_size
            if start is not None and start < 0:
                start = max(0, size + start)
            start, end = start or 0, size if end is None else min(end, size)
            end = max(start, end)  # a range past the end reads nothing (then: truncated)
            if end - start < 1 << 16:  # small reads (indexes): a copy is cheaper than a map
                f.seek(start)
                return np.frombuffer(f.read(end - start), np.uint8)
            # only whole pages are mapped, and never past the end (that would be SIGBUS)
            base = start - start % mmap.ALLOCATIONGRANULARITY
            view = mmap.mmap(
                f.fileno(), end - base, flags=_MAP_FLAGS, prot=mmap.PROT_READ, offset=base
            )
            return np.frombuffer(view, np.uint8)[start - base :]

    def index(self, s: int) -> np.ndarray:
        """Shard `s`'s (offset, length) per inner chunk, read once and kept."""
        with self._lock:
            if s in self._index:
                return self._index[s]
        n = self.layout.per_shard
        first = s * self.layout.shard
        last = min(first + self.layout.shard, self.layout.shape[0])
        try:
            raw = self._fetch(s, -(16 * n + 4), None)
            if len(raw) != 16 * n + 4:
                raise ValueError(f"shard of {len(raw)} bytes, shorter than its index")
            if self.binding is not None and s < len(self.binding.shards):
                found = int.from_bytes(raw[-4:].tobytes(), "little")
                if found != self.binding.shards[s]:
                    raise ValueError("not this episode's shard (its index is another's)")
            table = _checked(raw).view("<u8").reshape(n, 2)
            self._check_table(table)
        except FileNotFoundError:
            raise ChunkError(first, last, "shard missing") from None
        except (ValueError, OSError) as e:
            raise ChunkError(first, last, f"shard index: {e}") from None
        with self._lock:
            self._index[s] = table
        return table

    def footprint(self) -> int:
        """Bytes it may hold: an estimate for the cache's budget, not a measurement.

        A chunk-sized scratch buffer for each of a few reading threads, and its shard indexes.
        """
        lay = self.layout
        chunk = lay.chunk * int(np.prod(lay.shape[1:]))
        shards = -(-lay.shape[0] // lay.shard)
        return 4 * chunk + shards * 16 * lay.per_shard

    def _check_table(self, table: np.ndarray) -> None:
        """Refuse index entries no writer makes: past any bound, or shorter than a checksum."""
        lay = self.layout
        most = 2 * lay.chunk * int(np.prod(lay.shape[1:])) + (1 << 16)  # worst-case expansion
        for off, n in table.tolist():
            if off == EMPTY and n == EMPTY:
                continue
            if off == EMPTY or n < 4 or n > most or off > (1 << 48):
                raise ValueError(f"entry ({off}, {n}) out of bounds")

    # --- decoding ----------------------------------------------------------------------------
    def _scratch(self) -> np.ndarray:
        """A chunk-sized buffer per thread, for chunks the window only partly covers."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            lay = self.layout
            buf = self._local.buf = np.empty((lay.chunk, *lay.shape[1:]), np.uint8)
        return buf

    def _decode(self, c: int, data: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
        """Chunk `c`'s frames `[lo, hi)` (array frame numbers) into `out` (frames lo..hi-1)."""
        lay = self.layout
        first = c * lay.chunk
        try:
            body = _checked(data)
            whole = lo == first and hi == first + lay.chunk
            if lay.image is not None:
                frames = lay.image.decode_array(bytes(body), (lay.chunk, *lay.shape[1:]))
                if lay.predictor:
                    frames = undo_predictor(frames, lay.predictor)
                out[:] = frames[lo - first : hi - first]
                return
            target = out if whole else self._scratch()
            if lay.zstd:
                imagecodecs.zstd_decode(body, out=target.reshape(-1))
            elif len(body) == target.nbytes:
                target.reshape(-1)[:] = np.frombuffer(body, np.uint8)
            else:
                raise ValueError(f"{len(body)} bytes, the chunk holds {target.nbytes}")
            part = target if whole else target[lo - first : hi - first]
            if lay.predictor:
                undo_predictor(part, lay.predictor, out=out)
            elif not whole:
                out[:] = part
        except Exception as e:  # codecs raise assorted errors on damaged bytes
            raise ChunkError(
                first, min(first + lay.chunk, lay.shape[0]), f"{type(e).__name__}: {str(e)[:160]}"
            ) from None

    def chunks(self, lo: int, hi: int) -> list[tuple[int, np.ndarray, int, int]]:
        """(chunk, its stored bytes, first, stop) for the chunks frames `[lo, hi)` touch.

        `first`/`stop` bound the frames wanted from each chunk; the bytes are fetched one range
        per shard and still carry their crc32c (`body` checks and strips it).
        """
        lay = self.layout
        found = []
        c0, c1 = lo // lay.chunk, (hi - 1) // lay.chunk + 1
        for s in range(c0 // lay.per_shard, (c1 - 1) // lay.per_shard + 1):
            cs = range(max(c0, s * lay.per_shard), min(c1, (s + 1) * lay.per_shard))
            table = self.index(s)[[c - s * lay.per_shard for c in cs]]
            empty = np.flatnonzero(table[:, 0] == EMPTY)
            if len(empty):
                c = cs[empty[0]]
                hi_c = min((c + 1) * lay.chunk, lay.shape[0])
                raise ChunkError(c * lay.chunk, hi_c, "chunk missing")
            start, end = int(table[:, 0].min()), int((table[:, 0] + table[:, 1]).max())
            try:
                data = self._fetch(s, start, end)
            except FileNotFoundError:
                raise ChunkError(
                    s * lay.shard, min((s + 1) * lay.shard, lay.shape[0]), "shard missing"
                ) from None
            except (ValueError, OSError) as e:
                raise ChunkError(
                    s * lay.shard, min((s + 1) * lay.shard, lay.shape[0]), f"shard: {e}"
                ) from None
            if len(data) != end - start:
                raise ChunkError(
                    cs[0] * lay.chunk,
                    min(cs[-1] * lay.chunk + lay.chunk, hi),
                    f"shard truncated ({len(data)} of {end - start} bytes)",
                )
            for c, (off, n) in zip(cs, table.tolist(), strict=True):
                a, b = max(lo, c * lay.chunk), min(hi, (c + 1) * lay.chunk)
                part = data[off - start : off - start + n]
                if self.binding is not None:
                    crc = int.from_bytes(part[-4:].tobytes(), "little")
                    if crc != self.binding.chunks[c]:
                        hi_c = min((c + 1) * lay.chunk, lay.shape[0])
                        raise ChunkError(c * lay.chunk, hi_c, "not this episode's chunk")
                found.append((c, part, a, b))
        return found

    def body(self, c: int, data: np.ndarray) -> np.ndarray:
        """Chunk `c`'s compressed bytes less their crc32c, which must match."""
        try:
            return _checked(data)
        except ValueError as e:
            lo, n = c * self.layout.chunk, self.layout.shape[0]
            raise ChunkError(lo, min(lo + self.layout.chunk, n), str(e)) from None

    def read(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Decode frames `[lo, hi)` into `out`; raises `ChunkError` naming the failing chunk.

        GIL-free throughout, so callers' threads (`WindowStream`'s) decode in parallel.
        """
        for c, data, a, b in self.chunks(lo, hi):
            self._decode(c, data, a, b, out[a - lo : b - lo])
