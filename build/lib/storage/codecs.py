"""Frame codecs as registered Zarr v3 codecs: imagecodecs' lossless formats and a predictor.

Both are named in each array's `zarr.json`, and csdm registers them with Zarr on import and
through the `zarr.codecs` entry points, so a reader needs nothing but the store and csdm.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

from storage.action_space import FRAME_SHAPE
from storage.frame_codecs import (
    IMAGE_CODEC,
    IMAGE_FORMATS,
    PREDICTOR_CODEC,
    PREDICTORS,
    ImageSpec,
    encoder,
    frames_as_image,
)

__all__ = ["IMAGE_CODEC", "IMAGE_FORMATS", "PREDICTORS", "PREDICTOR_CODEC"]


class _Named:
    """Zarr's `{"name", "configuration"}` round trip for a frozen dataclass codec."""

    codec_name: ClassVar[str]

    @classmethod
    def from_dict(cls, data: dict[str, JSON]):
        """The codec a `zarr.json` entry describes."""
        _, config = parse_named_configuration(data, cls.codec_name)
        return cls(**config)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        """The codec's `zarr.json` entry."""
        config = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {"name": self.codec_name, "configuration": config}

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
        """Unknown before encoding (Zarr asks only of fixed-size codecs)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ImageCodec(_Named, ArrayBytesCodec):
    """A chunk of frames stored as one lossless image (imagecodecs: JPEG-XL, WebP, PNG, ...)."""

    codec_name = IMAGE_CODEC
    is_fixed_size = False
    format: str
    level: int | None

    def __init__(self, *, format: str, level: int | None = None) -> None:
        encoder(format, level)  # refuse an unknown format when the array is described
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "level", level)

    def encode_array(self, chunk: np.ndarray) -> bytes:
        """The chunk's bytes in this format."""
        return bytes(encoder(self.format, self.level)(frames_as_image(chunk)))

    def decode_array(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """The chunk back from its bytes, bit-exact."""
        return ImageSpec(self.format, self.level).decode_array(data, shape)

    async def _decode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
        arr = await asyncio.to_thread(self.decode_array, chunk_bytes.to_bytes(), chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    async def _encode_single(self, chunk_array: Any, chunk_spec: Any) -> Any:
        data = await asyncio.to_thread(self.encode_array, chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(data)


@dataclass(frozen=True)
class PredictorCodec(_Named, ArrayArrayCodec):
    """PNG-style prediction per channel on (..., H, W, C) frames; residuals for a compressor.

    `up` keeps x - up, `left` keeps x - left, `gradient` keeps x - left - up + upleft (both
    deltas): natural images leave small residuals, which zstd's entropy stage codes well.
    """

    codec_name = PREDICTOR_CODEC
    is_fixed_size = True
    kind: str

    def __init__(self, *, kind: str = "gradient") -> None:
        if kind not in PREDICTORS:
            raise ValueError(f"unknown predictor {kind!r}; expected one of {PREDICTORS}")
        object.__setattr__(self, "kind", kind)

    def resolve_metadata(self, chunk_spec: Any) -> Any:
        """Residuals keep the frames' shape and dtype."""
        return chunk_spec

    def encode_array(self, a: np.ndarray) -> np.ndarray:
        """Residuals of `a` (uint8, wrapping)."""
        out = np.array(a, copy=True)
        if self.kind != "up":
            out = imagecodecs.delta_encode(out, axis=-2, out=out)
        if self.kind != "left":
            out[..., 1:, :, :] -= out[..., :-1, :, :].copy()
        return out

    def decode_array(self, r: np.ndarray) -> np.ndarray:
        """Frames back from residuals, bit-exact."""
        # always a copy: a writable input may be the store's own buffer (no compressor after)
        out = np.array(r, copy=True)
        if self.kind != "left":
            # A running sum down the rows, one row of every frame at a time: numpy adds each
            # (T, W*C) row slab in one call, several times faster than imagecodecs' strided
            # delta along that axis or np.cumsum.
            for i in range(1, out.shape[-3]):
                np.add(out[..., i, :, :], out[..., i - 1, :, :], out=out[..., i, :, :])
        if self.kind != "up":
            out = imagecodecs.delta_decode(out, axis=-2, out=out)
        return out

    async def _decode_single(self, chunk_array: Any, chunk_spec: Any) -> Any:
        arr = await asyncio.to_thread(self.decode_array, chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    async def _encode_single(self, chunk_array: Any, chunk_spec: Any) -> Any:
        arr = await asyncio.to_thread(self.encode_array, chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
        """As many bytes as went in."""
        return input_byte_length


register_codec(IMAGE_CODEC, ImageCodec)
register_codec(PREDICTOR_CODEC, PredictorCodec)


@dataclass(frozen=True)
class FrameCodec:
    """One way to store a dataset's frames: its Zarr codecs and chunk length."""

    name: str
    chunk_frames: int
    about: str
    filters: tuple = ()
    serializer: Any = "auto"
    compressors: tuple = ()

    def array_options(self) -> dict:
        """Keyword arguments of `zarr.create_array` (chunks and codecs)."""
        return {
            "chunks": (self.chunk_frames, *FRAME_SHAPE),
            "filters": self.filters,
            "serializer": self.serializer,
            # crc32c last: every chunk is checked on read (bench/repack.py measures the cost)
            "compressors": (*self.compressors, Crc32cCodec()),
        }


def _image(fmt: str, level: int | None = None, chunk: int = 8) -> dict:
    return {"chunk_frames": chunk, "serializer": ImageCodec(format=fmt, level=level)}


# Offered by `--codec`; bench/repack.py measured each on realistic frames (docs/format.md).
FRAME_CODECS: dict[str, FrameCodec] = {
    c.name: c
    for c in (
        FrameCodec(
            "up-zstd",
            16,
            "PNG's up predictor, then zstd level 1 (the default: 1.8x, the fastest reads)",
            filters=(PredictorCodec(kind="up"),),
            compressors=(ZstdCodec(level=1),),
        ),
        FrameCodec(
            "gradient-zstd",
            16,
            "gradient predictor, then zstd level 1 (2x; the default before 2026-12)",
            filters=(PredictorCodec(kind="gradient"),),
            compressors=(ZstdCodec(level=1),),
        ),
        FrameCodec(
            "zstd",
            32,
            "zstd level 3 on raw pixels (the format before 2026-11)",
            compressors=(ZstdCodec(level=3),),
        ),
        FrameCodec(
            "jpegxl",
            about="JPEG-XL lossless, effort 2 (the archive option: 2.5x, slow reads)",
            **_image("jpegxl", 2),
        ),
        FrameCodec("webp", about="WebP lossless, effort 0", **_image("webp", 0)),
        FrameCodec("jpegls", about="JPEG-LS lossless (CharLS)", **_image("jpegls")),
        FrameCodec("qoi", about="QOI", **_image("qoi")),
        FrameCodec("png", about="PNG, zlib level 6", **_image("png", 6)),
    )
}
# measured by bench/loader.py (docs/benchmarks.md): its predictor's inverse vectorises, so it
# reads about 1.4x faster than gradient-zstd on a core for 11% more bytes
DEFAULT_CODEC = "up-zstd"
ARCHIVE_CODEC = "jpegxl"
