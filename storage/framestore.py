"""Frames in Zarr v3: one sharded array per episode, written without any rename."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.storage import MemoryStore

from storage.action_space import FRAME_SHAPE
from storage.diskspace import DiskFullError, is_disk_full
from storage.layout import OutLayout

# Chosen by measurement (bench/repack.py): zstd over 32-frame chunks compresses this imagery
# several times better than per-block Blosc at a similar speed.
CHUNK_FRAMES = 32
# 8 chunks (about 30 MB of real frames) per shard object: an upload overlaps the next shard's
# encoding, and object stores serve such objects well; a short episode is one shard.
SHARD_FRAMES = 256
ZSTD_LEVEL = 3
CHANNEL_ORDER = "BGR"
ARRAY_META = "zarr.json"


def ensure_store(layout: OutLayout) -> None:
    """Create the root group of `frames.zarr` (idempotent; once per run, not per episode)."""
    key = f"{layout.frames_zarr}/{ARRAY_META}"
    if not layout.root.exists(key):
        layout.root.put_json(key, {
            "zarr_format": 3, "node_type": "group",
            "attributes": {"layout": "one sharded array per episode",
                           "channel_order": CHANNEL_ORDER},
        })  # fmt: skip


def _array_key(layout: OutLayout, episode: str, key: str = "") -> str:
    base = f"{layout.frames_zarr}/{layout.episode_array(episode)}"
    return f"{base}/{key}" if key else base


def episode_exists(layout: OutLayout, episode: str) -> bool:
    """Whether an episode's array was written to the end (its metadata is written last)."""
    return layout.root.exists(_array_key(layout, episode, ARRAY_META))


def _encoded(frames: np.ndarray, attrs: dict) -> Iterator[tuple[str, bytes]]:
    """The array's objects as they are encoded: each shard in turn, then `zarr.json`."""
    if frames.dtype != np.uint8 or frames.shape[1:] != FRAME_SHAPE:
        raise ValueError(f"frames must be uint8 (T, *{FRAME_SHAPE}), got {frames.shape}")
    n = len(frames)
    shard = min(SHARD_FRAMES, max(CHUNK_FRAMES, -(-n // CHUNK_FRAMES) * CHUNK_FRAMES))
    objects: dict = {}
    arr = zarr.create_array(
        store=MemoryStore(objects),
        shape=frames.shape,
        dtype=np.uint8,
        chunks=(CHUNK_FRAMES, *FRAME_SHAPE),
        shards=(shard, *FRAME_SHAPE),
        # crc32c after compression: every chunk is checked on read (bench/repack.py measures
        # the cost), and the shard index carries its own crc32c by default.
        compressors=(ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()),
        dimension_names=("time", "height", "width", "channel"),
        attributes={**attrs, "channel_order": CHANNEL_ORDER},
        zarr_format=3,
        # zarr's empty-chunk check compares every chunk to the fill value: a full extra pass
        # that cost more than compressing; frames are never empty anyway.
        config={"write_empty_chunks": True},
    )
    meta = objects.pop(ARRAY_META)
    for lo in range(0, n, shard):
        arr[lo : lo + shard] = frames[lo : lo + shard]
        for key in [k for k in objects if k != ARRAY_META]:
            yield key, objects.pop(key).to_bytes()
    yield ARRAY_META, meta.to_bytes()


def write_frames(layout: OutLayout, episode: str, frames: np.ndarray, attrs: dict) -> int:
    """Write an episode's array: its shard objects first, `zarr.json` last; return bytes stored.

    No rename is needed: the episode is invisible to readers until its completion record is
    written (storage.commit), and an array without `zarr.json` does not count as written. Each
    shard is uploaded while the next one is encoded. An array already there is overwritten,
    its metadata taken away first.
    """
    try:
        objects = _encoded(frames, attrs)
        key, data = next(objects)  # the dtype and shape are checked before anything is written
    except ValueError as e:
        raise ValueError(f"{episode}: {e}") from None
    stored = 0
    try:
        layout.root.delete(_array_key(layout, episode, ARRAY_META))
        with ThreadPoolExecutor(1, thread_name_prefix="csdm-upload") as upload:
            sent = []
            while key != ARRAY_META:
                sent.append(upload.submit(layout.root.put_bytes, _array_key(layout, episode, key),
                                          data))  # fmt: skip
                stored += len(data)
                key, data = next(objects)
            for f in sent:
                f.result()
        layout.root.put_bytes(_array_key(layout, episode, ARRAY_META), data)
    except OSError as e:
        if isinstance(e, DiskFullError) or not is_disk_full(e):
            raise
        raise DiskFullError(
            layout.root.url_of(_array_key(layout, episode)), frames.nbytes
        ) from None
    return stored + len(data)


def remove_frames(layout: OutLayout, episode: str) -> None:
    """Delete an episode's array, its metadata first."""
    layout.root.delete(_array_key(layout, episode, ARRAY_META))
    layout.root.delete_tree(_array_key(layout, episode))


def frames_sha256(layout: OutLayout, episode: str) -> str | None:
    """The sha256 of the source member the stored frames were written from."""
    meta = layout.root.read_json(_array_key(layout, episode, ARRAY_META)) or {}
    return (meta.get("attributes") or {}).get("sha256")


def stored_bytes(layout: OutLayout, episode: str) -> int:
    """Bytes of an episode's array in the store."""
    return sum(layout.root.find(_array_key(layout, episode)).values())


def open_frames(layout: OutLayout, episode: str) -> zarr.Array:
    """The episode's frame array, read-only."""
    store = layout.root.zarr_store(layout.frames_zarr, read_only=True)
    return zarr.open_array(store, path=layout.episode_array(episode), mode="r")
