"""Frames in Zarr v3: one sharded array per episode, written atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore

from storage.action_space import FRAME_SHAPE
from storage.diskspace import DiskFullError, is_disk_full
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


def write_frames(
    layout: OutLayout, episode: str, frames: np.ndarray, attrs: dict, replace: bool = False
) -> int:
    """Write an episode's frames as one shard of 32-frame zstd chunks; return stored bytes.

    The array is built under `.staging/` and renamed into `frames.zarr/` in one step, so a
    crash leaves either the whole episode or nothing visible. `replace` swaps out an array
    already in place (its source changed); otherwise one in place is kept.
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
            # crc32c after compression: every chunk is checked on read (bench/repack.py
            # measures the cost), and the shard index carries its own crc32c by default.
            compressors=(ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()),
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
        if final.exists() and replace:
            old = staging.with_name(staging.name + ".old")
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        elif final.exists():  # an earlier run finished it meanwhile; keep the one in place
            shutil.rmtree(staging)
        else:
            os.replace(staging, final)
        return stored
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(e):
            raise DiskFullError(layout.root, frames.nbytes) from None
        raise


def remove_frames(layout: OutLayout, episode: str) -> None:
    """Take an episode's array out of `frames.zarr` in one rename, then delete it."""
    final = layout.frames_zarr / layout.episode_array(episode)
    if final.exists():
        layout.staging.mkdir(parents=True, exist_ok=True)
        gone = layout.staging / f"{episode}.{uuid.uuid4().hex}.removed"
        os.replace(final, gone)
        shutil.rmtree(gone)


def sweep_leftovers(layout: OutLayout) -> int:
    """Remove staging folders and temporary files a crashed run left; return how many."""
    gone = 0
    if layout.staging.exists():
        for p in layout.staging.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            gone += 1
    for folder in (layout.root, layout.catalog, layout.records, layout.failures,
                   layout.metadata_cache, *layout.frames_catalog.glob("dataset=*")):  # fmt: skip
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)
            gone += 1
    return gone


def frames_sha256(layout: OutLayout, episode: str) -> str | None:
    """The sha256 of the source member the stored frames were written from."""
    return open_frames(layout, episode).attrs.get("sha256")


def open_frames(layout: OutLayout, episode: str) -> zarr.Array:
    """The episode's frame array, read-only."""
    return zarr.open_array(
        LocalStore(layout.frames_zarr, read_only=True), path=layout.episode_array(episode), mode="r"
    )


def stored_bytes(path: Path) -> int:
    """Bytes on disk under a folder."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
