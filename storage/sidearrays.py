"""Small per-episode Zarr arrays beside the frames: the source's raw actions, low-res views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from storage.fs import Root
from storage.layout import OutLayout, check_name
from storage.records import Versioned
from storage.side_reader import ARRAY_META, SideArray, SideArrayError

__all__ = ["ARRAY_META", "SideArray", "SideArrayError"]

ACTIONS_FORMAT = 1  # attributes["format_version"] of an `actions.zarr/<episode>` array


def write_array(
    root: Root, key: str, data: np.ndarray, attrs: dict, chunk: int | None = None
) -> int:
    """Write `data` as a Zarr v3 array at `key`, chunks first and `zarr.json` last.

    `chunk` frames per chunk (default: the whole episode in one). Returns the bytes stored.
    """
    part = lambda lo, hi: data[lo:hi]  # noqa: E731
    return write_chunks(root, key, data.shape, data.dtype, attrs, chunk, part)


def write_chunks(
    root: Root,
    key: str,
    shape: tuple[int, ...],
    dtype,
    attrs: dict,
    chunk: int | None,
    part: Callable[[int, int], np.ndarray],
    level: int = 3,
) -> int:
    """Write an array made chunk by chunk by `part(lo, hi)`: one chunk in memory at a time.

    Each chunk is uploaded as it is encoded, `zarr.json` last, so an array cut short by an
    error stays invisible. Returns the bytes stored.
    """
    import zarr  # writers only: a reader needs none (storage.side_reader)
    from zarr.codecs import ZstdCodec
    from zarr.storage import MemoryStore

    n = shape[0]
    step = min(chunk or n, max(n, 1))
    objects: dict = {}
    arr = zarr.create_array(
        store=MemoryStore(objects),
        shape=shape,
        dtype=dtype,
        chunks=(step, *shape[1:]),
        compressors=ZstdCodec(level=level, checksum=True),
        attributes=attrs,
        zarr_format=3,
        config={"write_empty_chunks": True},
    )
    meta = objects.pop(ARRAY_META).to_bytes()
    root.delete(f"{key}/{ARRAY_META}")  # an old array stays invisible until rewritten whole
    stored = 0
    for lo in range(0, n, step):
        arr[lo : lo + step] = part(lo, min(lo + step, n))
        for k in [k for k in objects if k != ARRAY_META]:
            body = objects.pop(k).to_bytes()
            root.put_bytes(f"{key}/{k}", body)
            stored += len(body)
    root.put_bytes(f"{key}/{ARRAY_META}", meta)
    return stored + len(meta)


def array_attrs(root: Root, key: str) -> dict | None:
    """The attributes of the array at `key`, or None where it is not (fully) written."""
    meta = root.read_json(f"{key}/{ARRAY_META}")
    return None if meta is None else dict(meta.get("attributes") or {})


def open_array(root: Root, key: str) -> SideArray:
    """The array at `key`, read-only (no Zarr needed)."""
    return SideArray(root, key)


# --- the raw actions: the source's `frame_i_y` rows, exactly ----------------------------------
def actions_key(layout: OutLayout, episode: str) -> str:
    """Key of an episode's raw actions array."""
    return f"{layout.actions_zarr}/{layout.episode_array(episode)}"


def write_actions(layout: OutLayout, episode: str, y: np.ndarray, sha256: str) -> int:
    """Store the episode's `frame_i_y` rows with their source dtype; `sha256` of the member."""
    attrs = {
        "format_version": ACTIONS_FORMAT,
        "source": "frame_i_y",
        "episode": episode,
        "sha256": sha256,
    }
    return write_array(layout.root, actions_key(layout, episode), np.ascontiguousarray(y), attrs)


def actions_stored(layout: OutLayout, episode: str, sha256: str | None = None) -> bool:
    """Whether the raw actions are stored (from the member with `sha256`, when given)."""
    attrs = array_attrs(layout.root, actions_key(layout, episode))
    if attrs is None or attrs.get("format_version") != ACTIONS_FORMAT:
        return False
    return sha256 is None or attrs.get("sha256") == sha256


def read_actions(layout: OutLayout, episode: str) -> np.ndarray:
    """The episode's `frame_i_y` rows as the source stored them, (T, 51)."""
    key = actions_key(layout, episode)
    attrs = array_attrs(layout.root, key)
    if attrs is None:
        raise SideArrayError(
            f"{layout.root.url_of(key)}: missing; episode {episode} was stored by a csdm that "
            f"kept no raw actions (rerun `csdm process SRC {layout.root}` to add them)"
        )
    if attrs.get("format_version") != ACTIONS_FORMAT:
        raise SideArrayError(
            f"{layout.root.url_of(key)}: raw actions format "
            f"{attrs.get('format_version')!r}, this csdm reads {ACTIONS_FORMAT}"
        )
    try:
        return open_array(layout.root, key)[...]
    except SideArrayError:
        raise
    except OSError as e:
        raise SideArrayError(
            f"{layout.root.url_of(key)}: unreadable raw actions ({type(e).__name__}: {e})"
        ) from None


# --- views: `views/<name>.zarr/<episode>`, (T, 3, h, w) uint8 RGB ----------------------------
VIEW_FORMAT = 2  # 2: the recipe (fit, filter, overshoot) and the stored size
VIEW_METHOD = "diamond"  # format 1's only recipe: DIAMOND's bicubic stretch, wrapping uint8 cast
VIEW_CHUNK = 64  # frames per chunk: a 16-step segment touches one or two
# zstd level 1: a third of level 3's time for about 6% more bytes (`python -m bench.views
# --level 3` against the default), on arrays made once per view and read at the same speed
VIEW_LEVEL = 1
FITS = ("stretch", "crop", "pad")
FILTERS = ("bicubic", "bilinear", "area", "box", "nearest")
OVERSHOOTS = ("wrap", "clamp")


def view_name(size: tuple[int, int]) -> str:
    """A view's name, e.g. `30x56`."""
    return f"{size[0]}x{size[1]}"


def view_key(layout: OutLayout, name: str, episode: str) -> str:
    """Key of an episode's array in a view."""
    return f"{layout.views}/{check_name(name, 'view')}.zarr/{layout.episode_array(episode)}"


@dataclass(frozen=True)
class ViewSpec(Versioned):
    """A stored view's recipe and size, kept in `catalog/views.json`.

    Format 1 held DIAMOND's recipe only, which the defaults restate.
    """

    format_version: ClassVar[int] = VIEW_FORMAT
    older: ClassVar[tuple[int, ...]] = (1,)
    kind: ClassVar[str] = "view"
    fix: ClassVar[str] = "rerun `csdm views` for this view"

    name: str
    height: int
    width: int
    method: str = VIEW_METHOD
    layout: str = "TCHW"
    channel_order: str = "RGB"
    dtype: str = "uint8"
    episodes: int = 0
    fit: str = "stretch"
    filter: str = "bicubic"
    overshoot: str = "wrap"
    stored_bytes: int = 0

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.fit, FITS, "fit"),
            (self.filter, FILTERS, "filter"),
            (self.overshoot, OVERSHOOTS, "overshoot"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}: one of {', '.join(allowed)}")
        if not (0 < self.height <= 4096 and 0 < self.width <= 4096):
            raise ValueError(f"view size {self.height}x{self.width}: each side must be 1..4096")
        if self.filter != "bicubic":  # only bicubic overshoots 0..255; the others stay inside
            object.__setattr__(self, "overshoot", "clamp")
        # format 1's one field for the recipe, kept readable: DIAMOND's, or any other resize
        object.__setattr__(self, "method", VIEW_METHOD if self.is_diamond else "resize")

    @property
    def recipe(self) -> dict:
        """What makes the view's pixels: two views with equal recipes hold equal arrays."""
        return {
            "size": [self.height, self.width],
            "fit": self.fit,
            "filter": self.filter,
            "overshoot": self.overshoot,
        }

    @property
    def is_diamond(self) -> bool:
        """Whether this is DIAMOND's own preparation (its bicubic stretch, wrapping cast)."""
        return (self.fit, self.filter, self.overshoot) == ("stretch", "bicubic", "wrap")


def default_view_name(spec: ViewSpec) -> str:
    """`30x56`, then what differs from the default recipe: `-crop`, `-area`, `-wrap`."""
    parts = [view_name((spec.height, spec.width))]
    parts += [v for v, d in ((spec.fit, "stretch"), (spec.filter, "bicubic")) if v != d]
    if spec.filter == "bicubic" and spec.overshoot == "wrap":
        parts.append("wrap")
    return "-".join(parts)


def read_views(layout: OutLayout) -> dict[str, ViewSpec]:
    """The dataset's stored views by name (none when `catalog/views.json` is absent)."""
    d = layout.root.read_json(layout.views_index) or {"views": []}
    where = layout.root.url_of(layout.views_index)
    return {v["name"]: ViewSpec.from_dict(v, where) for v in d.get("views", [])}


def record_view(layout: OutLayout, spec: ViewSpec) -> None:
    """Add or replace a view's entry in `catalog/views.json`."""
    views = {**read_views(layout), spec.name: spec}
    layout.root.put_json(layout.views_index, {"views": [v.to_dict() for v in views.values()]})


def write_view(
    layout: OutLayout,
    spec: ViewSpec,
    episode: str,
    n: int,
    part: Callable[[int, int], np.ndarray],
    sha256: str | None,
) -> int:
    """Store one episode's low-res observations, (n, 3, h, w) uint8, made a chunk at a time."""
    attrs = {
        "format_version": VIEW_FORMAT,
        "episode": episode,
        "sha256": sha256,
        "method": spec.method,
        **spec.recipe,
    }
    key, shape = view_key(layout, spec.name, episode), (n, 3, spec.height, spec.width)
    return write_chunks(layout.root, key, shape, np.uint8, attrs, VIEW_CHUNK, part, VIEW_LEVEL)


def view_current(
    layout: OutLayout, name: str, episode: str, sha256: str | None, recipe: dict | None = None
) -> bool:
    """Whether the episode's view is written from the frames now stored (and by `recipe`)."""
    attrs = array_attrs(layout.root, view_key(layout, name, episode))
    if attrs is None or attrs.get("sha256") != sha256:
        return False
    if recipe is None:
        return True
    if attrs.get("format_version") == 1:  # DIAMOND's recipe was the only one: the defaults
        attrs = {**ViewSpec("-", *attrs["size"]).recipe, **attrs}
    return all(attrs.get(k) == v for k, v in recipe.items())


def stored_size(layout: OutLayout, key: str) -> int:
    """Bytes stored under `key`."""
    return sum(layout.root.find(key).values())
