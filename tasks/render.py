"""Frames for simulated episodes: a view panned across a dust2 panorama, in BGR."""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np

from storage.action_space import FRAME_SHAPE

CROSSHAIR_BGR = (42, 250, 46)  # the seed's green crosshair, RGB (46, 250, 42)


@cache
def panorama() -> np.ndarray:
    """The shipped 360-degree panorama, (H, W, 3) uint8 BGR."""
    with resources.files("tasks").joinpath("assets/dust2_panorama.npz").open("rb") as f:
        return np.load(f)["bgr"]


def render(states: list[dict]) -> np.ndarray:
    """(T, 150, 280, 3) uint8 BGR frames following each state's yaw, pitch, zoom and health."""
    pano = panorama()
    ph, pw, _ = pano.shape
    h, w, _ = FRAME_SHAPE
    out = np.empty((len(states), h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for t, s in enumerate(states):
        zoom = 90 / (s["obs_fov"] or 90)
        cx = s["xy_rad"] / (2 * np.pi) * pw
        cy = ph / 2 + (s["zvert_rads"] - np.pi / 2) / np.pi * ph
        rows = np.clip((cy + (yy - h / 2) / zoom).astype(np.int64), 0, ph - 1)
        cols = (cx + (xx - w / 2) / zoom).astype(np.int64) % pw
        frame = pano[rows, cols]
        if s["obs_health"] == 0:  # death screen: dark red tint
            frame = (frame * np.array([0.3, 0.3, 0.6])).astype(np.uint8)
        else:
            bar = int(s["obs_health"] / 100 * 60)
            frame[h - 8 : h - 4, 6 : 6 + bar] = (40, 200, 40)
        frame[h // 2 - 4 : h // 2 + 5, w // 2] = CROSSHAIR_BGR
        frame[h // 2, w // 2 - 4 : w // 2 + 5] = CROSSHAIR_BGR
        out[t] = frame
    return out
