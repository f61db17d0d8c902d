"""Realistic frames: calibrated against the real frame, moving by sub-pixel steps."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from tasks.synth.frames import CROSSHAIR_BGR, render
from tasks.synth.players import simulate

REAL = Path(__file__).resolve().parents[1] / "assets" / "real_frame.png"


def _ratios(frame: np.ndarray) -> np.ndarray:
    f = np.ascontiguousarray(frame)
    sizes = [
        len(imagecodecs.zstd_encode(f.tobytes(), 3)),
        len(imagecodecs.png_encode(f)),
        len(imagecodecs.jpegxl_encode(f, lossless=True, effort=1, numthreads=1)),
    ]
    return f.nbytes / np.array(sizes)


@pytest.fixture(scope="module")
def episode() -> tuple[list[dict], np.ndarray]:
    states = simulate(320, 1)[200:]  # holds a death (frames 56-75 of these)
    return states, render(states, seed=5)


def test_single_frame_ratios_are_within_15_percent_of_the_real_frame(episode) -> None:
    real = np.asarray(Image.open(REAL).convert("RGB"))[..., ::-1]
    assert real.shape == (150, 280, 3)
    want = _ratios(real)  # the baseline: measured here, in this run, by this machine's codecs
    # A sanity check against ../shared/data/README's figures (1.26, 1.93, 2.3), not a
    # calibration: libjxl picks its SIMD path at run time (an AMD EPYC measured 2.29 where the
    # machine that wrote the README measured 2.32) and zlib builds differ, so 3% is allowed; a
    # wrong setting is off by more (zstd level 1: 1.21, PNG level 1: 1.80, JPEG-XL effort 3: 2.56).
    np.testing.assert_allclose(want, [1.26, 1.93, 2.32], rtol=0.03)
    _, frames = episode
    alive = [f for f in frames[::6] if f.mean() > 60]  # death screens are darker, and easier
    got = np.mean([_ratios(f) for f in alive], axis=0)
    np.testing.assert_array_less(np.abs(got / want - 1), 0.15)


def test_the_view_moves_by_sub_pixel_steps(episode) -> None:
    """Frames of a slow turn match no whole-pixel shift of the frame before."""
    states, frames = episode
    slow = [
        t
        for t in range(1, len(states))
        if 1e-4 < abs(states[t]["xy_rad"] - states[t - 1]["xy_rad"]) < 0.01
        and states[t]["obs_health"] > 0
        and states[t - 1]["obs_health"] > 0
    ]
    assert len(slow) >= 3
    for t in slow[:3]:
        a, b = frames[t - 1, 20:60, 20:240].astype(int), frames[t, 20:60, 20:240].astype(int)
        best = min(
            np.abs(np.roll(a, (dy, dx), axis=(0, 1)) - b)[4:-4, 4:-4].mean()
            for dx in range(-4, 5)
            for dy in range(-2, 3)
        )
        assert best > 0.5, t


def test_frames_follow_the_state(episode) -> None:
    states, frames = episode
    assert frames.shape == (120, 150, 280, 3) and frames.dtype == np.uint8
    assert (frames[:, 75, 140] == CROSSHAIR_BGR).all()
    dead = [t for t, s in enumerate(states) if s["obs_health"] == 0]
    live = [t for t, s in enumerate(states) if s["obs_health"] > 0]
    assert dead and live  # the death tint darkens the frame
    assert frames[dead].mean() < 0.7 * frames[live].mean()
    # same states and seed, same frames; another noise seed, other frames
    np.testing.assert_array_equal(render(states[:5], seed=5), frames[:5])
    assert not np.array_equal(render(states[:5], seed=6), frames[:5])
