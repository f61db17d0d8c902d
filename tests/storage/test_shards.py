"""csdm's shard reader against zarr's own reads, and the predictor's inverse against its encode.

Every offered codec, across chunk and shard boundaries, on a local folder and on S3.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from storage import framestore
from storage.codecs import FRAME_CODECS, PredictorCodec
from storage.framestore import ensure_store, open_frames, write_frames
from storage.layout import OutLayout
from storage.shards import ChunkError, LayoutError, ShardLayout, ShardReader
from storage.unpredict import undo_predictor
from tasks.synth.frames import render
from tasks.synth.players import simulate

N = 70  # frames: 4 shards of 16 or 32 (patched below) and a partial last chunk


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return render(simulate(N, 11), seed=11)


def _windows(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    edges = [(0, n), (0, 1), (n - 1, n), (7, 9), (15, 17), (31, 33), (16, 48), (63, n)]
    rand = [tuple(sorted(rng.integers(0, n + 1, 2))) for _ in range(12)]
    return [(a, b) for a, b in edges + rand if b > a]


def _written(root: str, frames: np.ndarray, codec: str, monkeypatch) -> tuple[OutLayout, str]:
    # small shards so that 70 frames cross several; the format is the same at 256
    monkeypatch.setattr(framestore, "SHARD_FRAMES", 2 * FRAME_CODECS[codec].chunk_frames)
    layout = OutLayout.at(root)
    ensure_store(layout)
    write_frames(layout, "dm_july2021_1", frames, {"sha256": "s"}, codec)
    return layout, f"{layout.frames_zarr}/{layout.episode_array('dm_july2021_1')}"


def _check_against_zarr(layout: OutLayout, key: str, frames: np.ndarray) -> None:
    meta = layout.root.read_json(f"{key}/zarr.json")
    spec = ShardLayout.parse(meta)
    assert spec is not None and spec.shape == frames.shape, meta
    reader, arr = ShardReader(layout.root, key, spec), open_frames(layout, "dm_july2021_1")
    for lo, hi in _windows(np.random.default_rng(3), len(frames)):
        out = np.empty((hi - lo, *frames.shape[1:]), np.uint8)
        reader.read(lo, hi, out)
        want = arr[lo:hi]  # zarr's own read is the reference; the frames written agree with it
        np.testing.assert_array_equal(out, want, err_msg=f"{lo}-{hi}")
        np.testing.assert_array_equal(want, frames[lo:hi])


@pytest.mark.parametrize("codec", sorted(FRAME_CODECS))
def test_windows_are_bit_exact_with_zarr_for_every_codec(
    codec: str, frames, tmp_path, monkeypatch
) -> None:
    layout, key = _written(str(tmp_path / "out"), frames, codec, monkeypatch)
    _check_against_zarr(layout, key, frames)


@pytest.mark.parametrize("codec", sorted(FRAME_CODECS))
def test_windows_are_bit_exact_on_s3(codec: str, frames, bucket: str, monkeypatch) -> None:
    layout, key = _written(f"{bucket}/out", frames, codec, monkeypatch)
    _check_against_zarr(layout, key, frames)


def test_damage_names_the_chunk_or_shard(frames, tmp_path, monkeypatch) -> None:
    layout, key = _written(str(tmp_path / "out"), frames, "gradient-zstd", monkeypatch)
    spec = ShardLayout.parse(layout.root.read_json(f"{key}/zarr.json"))
    shard1 = tmp_path / "out" / key / "c" / "1" / "0" / "0" / "0"
    pristine = shard1.read_bytes()
    out = np.empty((40, *frames.shape[1:]), np.uint8)
    cases = {
        "flipped": (
            pristine[:100] + bytes([pristine[100] ^ 1]) + pristine[101:],
            32,
            48,
            "crc32c mismatch",
        ),
        "truncated": (pristine[: len(pristine) // 2], 32, 64, "shard index"),
    }
    for name, (data, lo, hi, why) in cases.items():
        shard1.write_bytes(data)
        with pytest.raises(ChunkError) as err:
            ShardReader(layout.root, key, spec).read(20, 60, out)
        assert (err.value.lo, err.value.hi) == (lo, hi) and why in err.value.why, name
    shard1.unlink()
    with pytest.raises(ChunkError) as err:
        ShardReader(layout.root, key, spec).read(20, 60, out)
    assert (err.value.lo, err.value.hi, err.value.why) == (32, 64, "shard missing")


def test_arrays_this_reader_does_not_know_are_left_to_zarr() -> None:
    meta = {
        "shape": [10, 2, 2, 3],
        "chunk_grid": {"configuration": {"chunk_shape": [5, 2, 2, 3]}},
        "codecs": [{"name": "bytes"}],
    }
    assert ShardLayout.parse(meta) is None


def test_geometry_no_csdm_array_has_is_refused_before_any_read() -> None:
    with pytest.raises(LayoutError, match="lacks its geometry"):
        ShardLayout.parse({})
    with pytest.raises(LayoutError, match="not an object"):
        ShardLayout.parse([1, 2])


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["up", "left", "gradient"]),
    st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 12), st.integers(1, 4)).flatmap(
        lambda s: arrays(np.uint8, s)
    ),
)
def test_the_compiled_inverse_undoes_the_codecs_encode(kind: str, a: np.ndarray) -> None:
    residuals = PredictorCodec(kind=kind).encode_array(a)
    np.testing.assert_array_equal(undo_predictor(residuals, kind), a)
    inplace = residuals.copy()
    undo_predictor(inplace, kind, out=inplace)
    np.testing.assert_array_equal(inplace, a)
    # the store's own shape too: a chunk of real frames
    assert PredictorCodec(kind=kind).decode_array(residuals).tobytes() == a.tobytes()


def test_without_numba_the_inverse_is_the_same(monkeypatch, caplog) -> None:
    from storage import unpredict

    monkeypatch.setattr(unpredict, "_compiled", {})
    rng = np.random.default_rng(5)
    for kind in ("up", "left", "gradient"):
        a = rng.integers(0, 256, (3, 7, 11, 3), dtype=np.uint8)
        np.testing.assert_array_equal(
            undo_predictor(PredictorCodec(kind=kind).encode_array(a), kind), a
        )
    assert "numba is not installed" in caplog.text  # said, not silent
