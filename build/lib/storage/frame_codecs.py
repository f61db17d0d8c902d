"""The frame codecs' names and image formats, without Zarr: what csdm's own reader decodes.

`storage.codecs` builds the Zarr codecs (for writers and for `zarr.open_array`) on these; the
shard reader needs only this module, so reading frames needs no Zarr.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagecodecs
import numpy as np

IMAGE_CODEC = "csdm.image"
PREDICTOR_CODEC = "csdm.predictor"
PREDICTORS = ("up", "left", "gradient")


def encoder(fmt: str, level: int | None):
    """The imagecodecs call that writes `fmt` losslessly at `level` (format's own meaning)."""
    if fmt == "jpegxl":  # level: effort 1-9; one thread so figures are per core
        return lambda a: imagecodecs.jpegxl_encode(
            a, lossless=True, effort=level or 1, numthreads=1
        )
    if fmt == "webp":  # level: 0-100, the lossless effort
        return lambda a: imagecodecs.webp_encode(a, lossless=True, level=level or 0)
    if fmt == "png":  # level: zlib level
        return lambda a: imagecodecs.png_encode(a, level=level)
    if fmt == "jpegls":  # level 0: lossless
        return lambda a: imagecodecs.jpegls_encode(a, level=0)
    if fmt == "qoi":
        return imagecodecs.qoi_encode
    raise ValueError(f"unknown image format {fmt!r}; expected one of {IMAGE_FORMATS}")


IMAGE_FORMATS = ("jpegxl", "webp", "png", "jpegls", "qoi")
DECODERS = {
    "jpegxl": lambda b: imagecodecs.jpegxl_decode(b, numthreads=1),
    "webp": imagecodecs.webp_decode,
    "png": imagecodecs.png_decode,
    "jpegls": imagecodecs.jpegls_decode,
    "qoi": imagecodecs.qoi_decode,
}


def frames_as_image(chunk: np.ndarray) -> np.ndarray:
    """(T, H, W, C) frames stacked into one (T*H, W, C) image: no container format of our own."""
    if chunk.dtype != np.uint8 or chunk.ndim < 3:
        raise ValueError(f"image codecs take uint8 (..., H, W, C) chunks, got {chunk.dtype}")
    return np.ascontiguousarray(chunk).reshape(-1, *chunk.shape[-2:])


@dataclass(frozen=True)
class ImageSpec:
    """A `csdm.image` serializer as `zarr.json` names it: one image per chunk of frames."""

    format: str
    level: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> ImageSpec:
        """The spec of a `{"name": "csdm.image", "configuration": {...}}` entry."""
        if data.get("name") != IMAGE_CODEC:
            raise ValueError(f"not a {IMAGE_CODEC} codec: {data.get('name')!r}")
        config = dict(data.get("configuration") or {})
        if config.get("format") not in DECODERS or set(config) - {"format", "level"}:
            raise ValueError(f"{IMAGE_CODEC}: unknown configuration {config}")
        return cls(config["format"], config.get("level"))

    def decode_array(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """The chunk back from its bytes, bit-exact."""
        image = np.asarray(DECODERS[self.format](data))
        if image.ndim == 2:  # a single-channel image comes back without its channel axis
            image = image[..., None]
        if image.size != int(np.prod(shape)):
            raise ValueError(f"{self.format} image has {image.shape}, the chunk is {shape}")
        return image.reshape(shape)
