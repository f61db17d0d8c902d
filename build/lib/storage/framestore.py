"""Frames in Zarr v3: one sharded array per episode, written without any rename."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.storage import MemoryStore

from storage.action_space import FRAME_SHAPE
from storage.codecs import DEFAULT_CODEC, FRAME_CODECS
from storage.diskspace import DiskFullError, is_disk_full
from storage.layout import OutLayout
from storage.shards import ARRAY_META, FrameBinding, ShardLayout

# 256 frames (about 30 MB raw, 8 to 32 chunks) per shard object: an upload overlaps the next
# shard's encoding, and object stores serve such objects well; a short episode is one shard.
SHARD_FRAMES = 256
CHANNEL_ORDER = "BGR"
LEGACY_CODEC = "zstd"  # arrays written before the codec was recorded


def ensure_store(layout: OutLayout) -> None:
    """Create the root group of `frames.zarr` (idempotent; once per run, not per episode)."""
    key = f"{layout.frames_zarr}/{ARRAY_META}"
    if not layout.root.exists(key):
        layout.root.put_json(
            key,
            {
                "zarr_format": 3,
                "node_type": "group",
                "attributes": {
                    "layout": "one sharded array per episode",
                    "channel_order": CHANNEL_ORDER,
                },
            },
        )


def _array_key(layout: OutLayout, episode: str, key: str = "") -> str:
    base = f"{layout.frames_zarr}/{layout.episode_array(episode)}"
    return f"{base}/{key}" if key else base


def episode_exists(layout: OutLayout, episode: str) -> bool:
    """Whether an episode's array was written to the end (its metadata is written last)."""
    return layout.root.exists(_array_key(layout, episode, ARRAY_META))


def codec_of(name: str):
    """The frame codec called `name`, or an error that lists the offered ones."""
    if name not in FRAME_CODECS:
        raise ValueError(f"unknown frame codec {name!r}; offered: {', '.join(FRAME_CODECS)}")
    return FRAME_CODECS[name]


def _encoded(frames: np.ndarray, attrs: dict, codec: str) -> Iterator[tuple[str, bytes]]:
    """The array's objects as they are encoded: each shard in turn, then `zarr.json`."""
    if frames.dtype != np.uint8 or frames.shape[1:] != FRAME_SHAPE:
        raise ValueError(f"frames must be uint8 (T, *{FRAME_SHAPE}), got {frames.shape}")
    spec = codec_of(codec)
    n, chunk = len(frames), spec.chunk_frames
    shard = min(SHARD_FRAMES, max(chunk, -(-n // chunk) * chunk))
    objects: dict = {}
    arr = zarr.create_array(
        store=MemoryStore(objects),
        shape=frames.shape,
        dtype=np.uint8,
        shards=(shard, *FRAME_SHAPE),
        # the shard index carries its own crc32c by default
        **spec.array_options(),
        dimension_names=("time", "height", "width", "channel"),
        attributes={**attrs, "codec": codec, "channel_order": CHANNEL_ORDER},
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


@dataclass(frozen=True)
class FramesWritten:
    """What `write_frames` stored: its bytes, and the binding its record keeps."""

    stored: int
    binding: FrameBinding


def write_frames(
    layout: OutLayout, episode: str, frames: np.ndarray, attrs: dict, codec: str = DEFAULT_CODEC
) -> FramesWritten:
    """Write an episode's array: its shard objects first, `zarr.json` last.

    `codec` names one of `storage.codecs.FRAME_CODECS`; the array's `zarr.json` records it.

    No rename is needed: the episode is invisible to readers until its completion record is
    written (storage.commit), and an array without `zarr.json` does not count as written. Each
    shard is uploaded while the next one is encoded. An array already there is overwritten,
    its metadata taken away first.
    """
    try:
        objects = _encoded(frames, attrs, codec)
        key, data = next(objects)  # the dtype and shape are checked before anything is written
    except ValueError as e:
        raise ValueError(f"{episode}: {e}") from None
    stored, shards = 0, []
    try:
        layout.root.delete(_array_key(layout, episode, ARRAY_META))
        with ThreadPoolExecutor(1, thread_name_prefix="csdm-upload") as upload:
            sent = []
            while key != ARRAY_META:
                sent.append(
                    upload.submit(layout.root.put_bytes, _array_key(layout, episode, key), data)
                )
                stored += len(data)
                shards.append(data)
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
    per_shard = ShardLayout.parse(json.loads(data), FRAME_SHAPE).per_shard
    return FramesWritten(stored + len(data), FrameBinding.of_shards(shards, per_shard))


def read_binding(layout: OutLayout, episode: str) -> FrameBinding:
    """The binding of frames already stored (kept by a rerun): each shard read whole once."""
    key = _array_key(layout, episode)
    spec = ShardLayout.parse(layout.root.read_json(f"{key}/{ARRAY_META}"), FRAME_SHAPE)
    if spec is None:
        raise ValueError(f"{layout.root.url_of(key)}: frames in a layout csdm does not bind")
    n_shards = -(-spec.shape[0] // spec.shard)
    zeros = "/".join("0" for _ in spec.shape[1:])
    shards = [layout.root.read_bytes(f"{key}/c/{s}/{zeros}") for s in range(n_shards)]
    return FrameBinding.of_shards(shards, spec.per_shard)


def remove_frames(layout: OutLayout, episode: str) -> None:
    """Delete an episode's array, its metadata first."""
    layout.root.delete(_array_key(layout, episode, ARRAY_META))
    layout.root.delete_tree(_array_key(layout, episode))


def stored_as(layout: OutLayout, episode: str) -> tuple[str | None, str]:
    """The sha256 of the source member the stored frames came from, and their codec."""
    meta = layout.root.read_json(_array_key(layout, episode, ARRAY_META)) or {}
    attrs = meta.get("attributes") or {}
    return attrs.get("sha256"), attrs.get("codec", LEGACY_CODEC)


def stored_bytes(layout: OutLayout, episode: str) -> int:
    """Bytes of an episode's array in the store."""
    return sum(layout.root.find(_array_key(layout, episode)).values())


def open_frames(layout: OutLayout, episode: str) -> zarr.Array:
    """The episode's frame array, read-only."""
    store = layout.root.zarr_store(layout.frames_zarr, read_only=True)
    return zarr.open_array(store, path=layout.episode_array(episode), mode="r")
