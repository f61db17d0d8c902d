"""The Zarr frame store: atomic episodes, window reads that decode only touched chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from zarr.codecs import ZstdCodec

from storage.framestore import episode_exists, open_frames, write_frames
from storage.layout import OutLayout


def _frames(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 150, 280, 3), dtype=np.uint8)


def test_round_trip_and_layout(tmp_path: Path) -> None:
    layout = OutLayout.at(tmp_path)
    fr = _frames(70)
    stored = write_frames(layout, "dm_x_1", fr, {"sha256": "abc"}, codec="zstd")
    arr = open_frames(layout, "dm_x_1")
    assert arr.shape == (70, 150, 280, 3) and arr.chunks == (32, 150, 280, 3)
    assert arr.shards == (96, 150, 280, 3)  # one shard file holds the whole episode
    assert arr.attrs["channel_order"] == "BGR" and arr.attrs["sha256"] == "abc"
    assert arr.attrs["codec"] == "zstd"
    np.testing.assert_array_equal(arr[:], fr)
    files = [p for p in (tmp_path / "frames.zarr/dm_x_1").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["0", "zarr.json"]
    assert stored.stored == sum(p.stat().st_size for p in files)


def test_window_reads_decode_only_the_chunks_they_touch(tmp_path: Path, monkeypatch) -> None:
    layout = OutLayout.at(tmp_path)
    write_frames(layout, "dm_x_1", _frames(100), {}, codec="zstd")
    calls = []
    original = ZstdCodec._decode_single

    async def counting(self, chunk_bytes, chunk_spec):
        calls.append(1)
        return await original(self, chunk_bytes, chunk_spec)

    monkeypatch.setattr(ZstdCodec, "_decode_single", counting)
    arr = open_frames(layout, "dm_x_1")
    for (a, b), chunks in {
        (33, 40): 1,
        (30, 70): 3,
        (0, 96): 3,
        (95, 100): 2,
        (96, 100): 1,
    }.items():
        calls.clear()
        arr[a:b]
        assert len(calls) == chunks, (a, b)


def test_an_array_counts_only_once_its_metadata_is_written(tmp_path: Path, monkeypatch) -> None:
    from storage.fs import Root

    layout = OutLayout.at(tmp_path)
    written = []
    real = Root.put_bytes

    def crash_before_metadata(self, key, data):
        if key.endswith("dm_x_2/zarr.json"):
            raise OSError("killed")
        written.append(key)
        real(self, key, data)

    monkeypatch.setattr(Root, "put_bytes", crash_before_metadata)
    with pytest.raises(OSError, match="killed"):
        write_frames(layout, "dm_x_2", _frames(10), {})
    assert "frames.zarr/dm_x_2/c/0/0/0/0" in written  # the shard went first
    assert not episode_exists(layout, "dm_x_2")
    monkeypatch.setattr(Root, "put_bytes", real)
    write_frames(layout, "dm_x_2", _frames(10), {})  # a rerun overwrites the leftover
    np.testing.assert_array_equal(open_frames(layout, "dm_x_2")[:], _frames(10))


def test_wrong_frames_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_frames(OutLayout.at(tmp_path), "e", np.zeros((2, 150, 280, 3), np.float32), {})
