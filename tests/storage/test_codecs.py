"""Frame codecs: bit-exact through Zarr in uneven windows, recorded so plain Zarr reads them."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from storage.codecs import (
    ARCHIVE_CODEC,
    DEFAULT_CODEC,
    FRAME_CODECS,
    ImageCodec,
    PredictorCodec,
)
from storage.framestore import SHARD_FRAMES, open_frames, stored_as, write_frames
from storage.layout import OutLayout
from tasks.params import CODEC_NAMES
from tasks.synth.frames import render
from tasks.synth.players import simulate


@cache
def _frames(n: int) -> np.ndarray:
    """Realistic frames, with a death screen and edge values the predictor must wrap."""
    states = simulate(240 + n, 1)[240:]  # frames 16-35 of these are a death screen
    assert any(s["obs_health"] == 0 for s in states)
    fr = render(states, seed=11)
    fr[5, :4] = 255  # saturated and black rows: residuals wrap around uint8
    fr[6, :4] = 0
    return fr


def test_the_offered_codecs_are_the_parameters_choices() -> None:
    assert set(CODEC_NAMES) == set(FRAME_CODECS)
    assert DEFAULT_CODEC in FRAME_CODECS and ARCHIVE_CODEC in FRAME_CODECS


@pytest.mark.parametrize("codec", sorted(FRAME_CODECS))
def test_every_codec_is_bit_exact_in_uneven_windows(tmp_path: Path, codec: str) -> None:
    layout = OutLayout.at(tmp_path)
    fr = _frames(45)
    write_frames(layout, "dm_x_1", fr, {"sha256": "s"}, codec=codec)
    arr = open_frames(layout, "dm_x_1")
    chunk = FRAME_CODECS[codec].chunk_frames
    assert arr.chunks[0] == chunk and arr.attrs["codec"] == codec
    assert stored_as(layout, "dm_x_1") == ("s", codec)
    for a, b in [(0, 45), (chunk - 1, chunk + 1), (3, 41), (chunk, 2 * chunk), (44, 45), (7, 8)]:
        np.testing.assert_array_equal(arr[a:b], fr[a:b], err_msg=f"{codec} [{a}:{b}]")
    # strided and fancy selections go through the same decode
    np.testing.assert_array_equal(arr[1:44:5, 10:20, ::7], fr[1:44:5, 10:20, ::7])


def test_windows_across_shard_boundaries(tmp_path: Path) -> None:
    layout = OutLayout.at(tmp_path)
    n = SHARD_FRAMES + 37
    fr = np.concatenate([_frames(45)] * 7)[:n]
    write_frames(layout, "dm_x_1", fr, {}, codec=DEFAULT_CODEC)
    arr = open_frames(layout, "dm_x_1")
    assert arr.shards[0] == SHARD_FRAMES
    for a in (SHARD_FRAMES - 50, SHARD_FRAMES - 1, 200, n - 96):
        np.testing.assert_array_equal(arr[a : a + 96], fr[a : a + 96])


def test_predictor_undoes_wrapping_residuals_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    for kind in ("left", "gradient"):
        codec = PredictorCodec(kind=kind)
        r = codec.encode_array(x)
        assert r.dtype == np.uint8 and r.shape == x.shape and not np.array_equal(r, x)
        np.testing.assert_array_equal(codec.decode_array(r), x)
    # a smooth ramp leaves constant residuals: the point of predicting
    ramp = np.broadcast_to(np.arange(0, 230, 10, dtype=np.uint8)[None, None, :, None], x.shape)
    r = PredictorCodec(kind="gradient").encode_array(np.ascontiguousarray(ramp))
    assert set(np.unique(r[:, 1:, 1:])) == {0}


def test_bad_names_are_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="offered: up-zstd"):
        write_frames(OutLayout.at(tmp_path), "dm_x_1", _frames(45), {}, codec="gif")
    with pytest.raises(ValueError, match="unknown image format"):
        ImageCodec(format="bmp")
    with pytest.raises(ValueError, match="unknown predictor"):
        PredictorCodec(kind="paeth")


def test_plain_zarr_reads_the_array_without_csdm_imports(tmp_path: Path) -> None:
    """The codec names in zarr.json resolve through csdm's `zarr.codecs` entry points."""
    layout = OutLayout.at(tmp_path)
    fr = _frames(45)
    for codec in (DEFAULT_CODEC, ARCHIVE_CODEC):
        write_frames(layout, f"dm_x_{codec}", fr, {}, codec=codec)
    np.save(tmp_path / "want.npy", fr)
    script = (
        "import sys, numpy as np, zarr\n"
        "want = np.load(sys.argv[1] + '/want.npy')\n"
        "for name in sys.argv[2:]:\n"
        "    a = zarr.open_array(sys.argv[1] + '/frames.zarr/' + name, mode='r')\n"
        "    assert (a[:] == want).all(), name\n"
        "    print(name, [c['name'] for c in a.metadata.to_dict()['codecs'][0]"
        "['configuration']['codecs']])\n"
    )
    names = [layout.episode_array(f"dm_x_{c}") for c in (DEFAULT_CODEC, ARCHIVE_CODEC)]
    r = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *names],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "csdm.predictor" in r.stdout and "csdm.image" in r.stdout
