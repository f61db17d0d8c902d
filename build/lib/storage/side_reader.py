"""Side arrays (raw actions, views) read without Zarr: the one layout csdm writes them in.

Zarr v3, a regular chunk grid along time, chunk keys `c/i/0/...`, codecs `bytes` then `zstd`
with its content checksum. Anything else is refused in one line (SideArrayError).
"""

from __future__ import annotations

import imagecodecs
import numpy as np

from storage.fs import Root

ARRAY_META = "zarr.json"


class SideArrayError(ValueError):
    """A side array that is missing or does not match what its reader needs."""


def _layout(meta: object, where: str) -> tuple[tuple[int, ...], int, np.dtype]:
    """Shape, frames per chunk and dtype of a side array's `zarr.json`, checked."""
    try:
        shape = tuple(int(v) for v in meta["shape"])
        chunks = [int(v) for v in meta["chunk_grid"]["configuration"]["chunk_shape"]]
        codecs = [c["name"] for c in meta["codecs"]]
        endian = (meta["codecs"][0].get("configuration") or {}).get("endian", "little")
        encoding = meta["chunk_key_encoding"]
        dtype = np.dtype(meta["data_type"]).newbyteorder("<" if endian == "little" else ">")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise SideArrayError(f"{where}: not a csdm side array ({type(e).__name__}: {e})") from None
    sep = (encoding.get("configuration") or {}).get("separator", "/")
    if codecs != ["bytes", "zstd"] or encoding.get("name") != "default" or sep != "/":
        raise SideArrayError(f"{where}: codecs {codecs} or chunk keys csdm does not write")
    if not shape or len(chunks) != len(shape) or list(chunks[1:]) != list(shape[1:]):
        raise SideArrayError(f"{where}: chunks {chunks} do not tile shape {list(shape)}")
    if chunks[0] < 1 or min(shape) < 0 or int(np.prod(chunks)) * dtype.itemsize > 1 << 31:
        raise SideArrayError(f"{where}: chunks {chunks} out of bounds")
    return shape, chunks[0], dtype


class SideArray:
    """A side array read chunk by chunk through the `Root`: `a[lo:hi]`, `a[...]`, `a[:n]`."""

    def __init__(self, root: Root, key: str) -> None:
        self.root, self.key = root, key
        where = root.url_of(f"{key}/{ARRAY_META}")
        meta = root.read_json(f"{key}/{ARRAY_META}")
        if meta is None:
            raise SideArrayError(f"{where}: missing")
        self.shape, self.chunk, self.dtype = _layout(meta, where)
        self.attrs = dict(meta.get("attributes") or {})

    def __len__(self) -> int:
        return self.shape[0]

    def _chunk(self, c: int) -> np.ndarray:
        zeros = "/".join("0" for _ in self.shape[1:])
        key = f"{self.key}/c/{c}" + (f"/{zeros}" if zeros else "")
        try:
            data = self.root.read_bytes(key)
        except FileNotFoundError:
            raise SideArrayError(f"{self.root.url_of(key)}: chunk missing") from None
        try:  # zstd checks the content checksum csdm writes with every chunk
            raw = imagecodecs.zstd_decode(data)
        except Exception as e:
            raise SideArrayError(f"{self.root.url_of(key)}: corrupt chunk ({e})") from None
        shape = (self.chunk, *self.shape[1:])
        if len(raw) != int(np.prod(shape)) * self.dtype.itemsize:
            raise SideArrayError(f"{self.root.url_of(key)}: {len(raw)} bytes, not {shape}")
        return np.frombuffer(raw, self.dtype).reshape(shape)

    def __getitem__(self, index) -> np.ndarray:
        if index is Ellipsis:
            index = slice(None)
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a side array reads contiguous ranges along time: a[lo:hi]")
        lo, hi = index.indices(self.shape[0])[:2]
        out = np.empty((max(0, hi - lo), *self.shape[1:]), self.dtype.newbyteorder("="))
        for c in range(lo // self.chunk, -(-hi // self.chunk) if hi > lo else 0):
            a, b = max(lo, c * self.chunk), min(hi, (c + 1) * self.chunk)
            out[a - lo : b - lo] = self._chunk(c)[a - c * self.chunk : b - c * self.chunk]
        return out
