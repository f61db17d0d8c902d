"""Frames in Zarr v3: one sharded array per episode, written atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore

from storage.action_space import FRAME_SHAPE
from storage.layout import OutLayout

# Chosen by measurement (bench/repack.py): zstd over 32-frame chunks compresses this imagery
# several times better than per-block Blosc at a similar speed.
CHUNK_FRAMES = 32
ZSTD_LEVEL = 3
CHANNEL_ORDER = "BGR"


def ensure_store(layout: OutLayout) -> None:
    """Create the root group of `frames.zarr` (idempotent)."""
    if not (layout.frames_zarr / "zarr.json").exists():
        zarr.open_group(LocalStore(layout.frames_zarr), mode="a", zarr_format=3).attrs.update(
            {"layout": "one sharded array per episode", "channel_order": CHANNEL_ORDER}
        )


def episode_exists(layout: OutLayout, episode: str) -> bool:
    """Whether a complete episode array is in place."""
    return (layout.frames_zarr / layout.episode_array(episode) / "zarr.json").exists()


def write_frames(layout: OutLayout, episode: str, frames: np.ndarray, attrs: dict) -> int:
    """Write an episode's frames as one shard of 32-frame zstd chunks; return stored bytes.

    The array is built under `.staging/` and renamed into `frames.zarr/` in one step, so a
    crash leaves either the whole episode or nothing visible.
    """
    if frames.dtype != np.uint8 or frames.shape[1:] != FRAME_SHAPE:
        raise ValueError(f"{episode}: frames must be uint8 (T, *{FRAME_SHAPE}), got {frames.shape}")
    ensure_store(layout)
    staging = layout.staging / f"{episode}.{uuid.uuid4().hex}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    n = len(frames)
    shard = max(CHUNK_FRAMES, -(-n // CHUNK_FRAMES) * CHUNK_FRAMES)
    try:
        arr = zarr.create_array(
            store=LocalStore(staging),
            shape=frames.shape,
            dtype=np.uint8,
            chunks=(CHUNK_FRAMES, *FRAME_SHAPE),
            shards=(shard, *FRAME_SHAPE),
            compressors=ZstdCodec(level=ZSTD_LEVEL),
            dimension_names=("time", "height", "width", "channel"),
            attributes={**attrs, "channel_order": CHANNEL_ORDER},
            zarr_format=3,
            # zarr's empty-chunk check compares every chunk to the fill value: a full extra
            # pass that cost more than compressing; frames are never empty anyway.
            config={"write_empty_chunks": True},
        )
        if n:
            arr[:] = frames
        stored = stored_bytes(staging)
        final = layout.frames_zarr / layout.episode_array(episode)
        if final.exists():  # an earlier run finished it meanwhile; keep the one in place
            shutil.rmtree(staging)
        else:
            os.replace(staging, final)
        return stored
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def open_frames(layout: OutLayout, episode: str) -> zarr.Array:
    """The episode's frame array, read-only."""
    return zarr.open_array(
        LocalStore(layout.frames_zarr, read_only=True), path=layout.episode_array(episode), mode="r"
    )


def stored_bytes(path: Path) -> int:
    """Bytes on disk under a folder."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
