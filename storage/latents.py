"""Latents of a view, stored beside the frames: `latents/<name>.zarr/<episode>`, (T, C, h, w).

Each array records the episode's source sha256 and the encoder's identity, so a redone
episode or another encoder makes it stale. bfloat16 is stored as its 16 raw bits (Zarr v3
has no bfloat16) and read back as `torch.bfloat16`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from storage.layout import OutLayout, check_name
from storage.records import Versioned
from storage.sidearrays import array_attrs, open_array, write_chunks

LATENT_FORMAT = 1
LATENT_CHUNK = 64  # frames per chunk, as views
LATENTS = "latents"
LATENTS_INDEX = "catalog/latents.json"
FULL = "full"  # a latent's source that is no view: the stored full-resolution frames
DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


@dataclass(frozen=True)
class Encoder:
    """Who made a latent: `module:factory` and the sha256 of its parameters and buffers."""

    module: str
    factory: str
    params_sha256: str

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"module": self.module, "factory": self.factory, "params_sha256": self.params_sha256}


@dataclass(frozen=True)
class LatentSpec(Versioned):
    """A stored latent: its source view, encoder, dtype and shape, in `catalog/latents.json`."""

    format_version: ClassVar[int] = LATENT_FORMAT
    kind: ClassVar[str] = "latent"
    fix: ClassVar[str] = "rerun `csdm encode` for this latent"

    name: str
    view: str  # a view's name, or "full" for the stored frames
    module: str
    factory: str
    params_sha256: str
    dtype: str
    channels: int
    height: int
    width: int
    episodes: int = 0
    stored_bytes: int = 0
    input: str = "RGB float in [-1, 1], (B, 3, h, w)"

    @property
    def encoder(self) -> Encoder:
        """The encoder's identity."""
        return Encoder(self.module, self.factory, self.params_sha256)


def latent_key(layout: OutLayout, name: str, episode: str) -> str:
    """Key of an episode's array in a latent."""
    return f"{LATENTS}/{check_name(name, 'latent')}.zarr/{layout.episode_array(episode)}"


def read_latents(layout: OutLayout) -> dict[str, LatentSpec]:
    """The dataset's stored latents by name (none when `catalog/latents.json` is absent)."""
    d = layout.root.read_json(LATENTS_INDEX) or {"latents": []}
    where = layout.root.url_of(LATENTS_INDEX)
    return {v["name"]: LatentSpec.from_dict(v, where) for v in d.get("latents", [])}


def record_latent(layout: OutLayout, spec: LatentSpec) -> None:
    """Add or replace a latent's entry in `catalog/latents.json`."""
    latents = {**read_latents(layout), spec.name: spec}
    layout.root.put_json(LATENTS_INDEX, {"latents": [v.to_dict() for v in latents.values()]})


def write_latent(
    layout: OutLayout,
    spec: LatentSpec,
    episode: str,
    n: int,
    part: Callable[[int, int], np.ndarray],
    sha256: str | None,
    view_recipe: dict | None,
) -> int:
    """Store one episode's latents, (n, C, h, w), made a chunk at a time. Returns bytes."""
    attrs = {
        "format_version": LATENT_FORMAT,
        "episode": episode,
        "sha256": sha256,
        "encoder": spec.encoder.to_dict(),
        "view": spec.view,
        "view_recipe": view_recipe,
        "dtype": spec.dtype,
        "latent_shape": [spec.channels, spec.height, spec.width],
    }
    key = latent_key(layout, spec.name, episode)
    shape = (n, spec.channels, spec.height, spec.width)
    dtype = DTYPES[spec.dtype]  # level 1 as views: floats gain little from more effort
    return write_chunks(layout.root, key, shape, dtype, attrs, LATENT_CHUNK, part, level=1)


def latent_current(
    layout: OutLayout, spec: LatentSpec, episode: str, sha256: str | None, view_recipe: dict | None
) -> bool:
    """Whether the episode's latents were made from its frames now, by this encoder and view."""
    attrs = array_attrs(layout.root, latent_key(layout, spec.name, episode))
    return (
        attrs is not None
        and attrs.get("sha256") == sha256
        and attrs.get("encoder") == spec.encoder.to_dict()
        and attrs.get("view_recipe") == view_recipe
        and attrs.get("dtype") == spec.dtype
        and attrs.get("latent_shape") == [spec.channels, spec.height, spec.width]
    )


def open_latent(layout: OutLayout, name: str, episode: str):
    """An episode's latent array, read-only (`arr[lo:hi]` gives numpy; see `as_tensor`)."""
    return open_array(layout.root, latent_key(layout, name, episode))


def as_tensor(arr, data: np.ndarray):
    """Rows read from a latent array as a torch tensor of its dtype (bfloat16 from its bits)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(data))
    return t.view(torch.bfloat16) if arr.attrs.get("dtype") == "bfloat16" else t
