"""Realistic frames for simulated episodes, rendered the way the capture makes them, in BGR.

A textured 360-degree scene larger than the view is sampled at sub-pixel yaw and pitch (plus
a zoom that follows the player's position, like walls coming closer), as the game would draw
the 824x498 crop of its 1024x768 window; that crop is then reduced to 280x150 by the seed's
plain bilinear resize (no anti-aliasing). A crosshair, a swaying weapon with muzzle flashes,
and a little rendering noise go on top. `LOOK`'s numbers are calibrated against the real
frame in `../shared/data` (tests/tasks/test_frames.py; DESIGN.md "Realistic frames").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from PIL import Image

from storage.action_space import FRAME_SHAPE

CROSSHAIR_BGR = (42, 250, 46)  # the seed's green crosshair, RGB (46, 250, 42)
SCREEN_W = 1024
CROP_TOP, CROP_SIDES, CROP_H, CROP_W = 135, 100, 498, 824  # the seed's cut of a 1024x768 frame
PX_PER_RAD = SCREEN_W / 2  # the focal length of a 90-degree view 1024 pixels wide
SCENE_H, SCENE_W = 1280, 3217  # 2*pi*512 columns; rows span +-71 degrees of pitch


@dataclass(frozen=True)
class Look:
    """What makes frames hard to compress, calibrated against the real frame."""

    detail: tuple[float, ...] = (2.0, 3.15, 2.1, 1.4)  # texture amplitude, periods 1, 2, 4, 8 px
    sky_detail: float = 0.25  # share of the texture the sky keeps
    chroma: float = 0.35  # colour share of the texture (the rest is luminance)
    noise: float = 0.3  # rendering noise, standard deviation in levels
    zoom_walk: float = 0.12  # zoom amplitude as the player moves
    sway_px: float = 1.5  # weapon sway amplitude, output pixels


LOOK = Look()


def _upsampled(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float grid stretched to `shape` with PIL's bilinear filter."""
    img = Image.fromarray(grid.astype(np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.BILINEAR), np.float32)


def scene(look: Look = LOOK) -> np.ndarray:
    """The textured 360-degree scene, (SCENE_H, SCENE_W, 3) uint8 BGR, built once per process."""
    return _scene(look)


@cache  # keyed by the look alone: scene() and scene(LOOK) share one build
def _scene(look: Look) -> np.ndarray:
    with resources.files("tasks.synth").joinpath("assets/dust2_panorama.npz").open("rb") as f:
        pano = np.load(f)["bgr"]
    ph = pano.shape[0]
    # The shipped panorama spans pi vertically; keep the rows this scene's pitch range covers.
    half = SCENE_H / 2 / PX_PER_RAD / np.pi * ph
    rows = pano[int(ph / 2 - half) : int(np.ceil(ph / 2 + half))]
    base = np.stack([_upsampled(rows[..., c], (SCENE_H, SCENE_W)) for c in range(3)], -1)
    b, r = base[..., 0], base[..., 2]
    sky = np.clip((b - r - 10) / 30, 0, 1) * np.clip((b - 120) / 60, 0, 1)
    strength = 1 - (1 - look.sky_detail) * sky
    rng = np.random.default_rng(0)
    tex = np.zeros((SCENE_H, SCENE_W, 3), np.float32)
    for k, amp in enumerate(look.detail):
        period = 2**k
        shape = (SCENE_H // period + 1, SCENE_W // period + 1)
        lum = rng.standard_normal(shape, dtype=np.float32)
        col = rng.standard_normal((*shape, 3), dtype=np.float32)
        layer = (1 - look.chroma) * lum[..., None] + look.chroma * col
        if period > 1:
            layer = np.stack([_upsampled(layer[..., c], (SCENE_H, SCENE_W)) for c in range(3)], -1)
        tex += amp * layer[:SCENE_H, :SCENE_W]
    return np.clip(base + tex * strength[..., None], 0, 255).astype(np.uint8)


def _taps(centre: float, n_out: int, n_crop: int, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """Scene positions and weights (n_out, 4) of each output pixel along one axis.

    Each output pixel is the seed's bilinear resize of two crop pixels, and each crop pixel is
    the scene sampled bilinearly at its (sub-pixel) position: four scene taps in all.
    """
    x = (np.arange(n_out) + 0.5) * n_crop / n_out - 0.5  # cv2 INTER_LINEAR, half-pixel centres
    u0 = np.floor(x)
    fu = x - u0
    pos, wts = [], []
    for u, wu in ((u0, 1 - fu), (u0 + 1, fu)):
        s = centre + (u - (n_crop - 1) / 2) / zoom
        s0 = np.floor(s)
        fs = s - s0
        pos += [s0, s0 + 1]
        wts += [wu * (1 - fs), wu * fs]
    return np.stack(pos, 1).astype(np.int64), np.stack(wts, 1).astype(np.float32)


def _view(world: np.ndarray, yaw: float, pitch_row: float, zoom: float) -> np.ndarray:
    """(150, 280, 3) float32: the crop around (yaw, pitch) reduced as the seed does."""
    h, w, _ = FRAME_SHAPE
    cols, wc = _taps(yaw / (2 * np.pi) * SCENE_W, w, CROP_W, zoom)
    rows, wr = _taps(pitch_row, h, CROP_H, zoom)
    rows = np.clip(rows, 0, SCENE_H - 1)
    lo, hi = int(cols.min()), int(cols.max()) + 1
    flat = rows.reshape(-1)
    a, b = lo % SCENE_W, (hi - 1) % SCENE_W + 1
    # whole-row slices, not a 2-D fancy index: several times faster
    slab = world[flat, a:b] if a < b else np.concatenate([world[flat, a:], world[flat, :b]], 1)
    slab = slab.reshape(h, 4, hi - lo, 3)
    tall = np.einsum("ia,iacx->icx", wr, slab, dtype=np.float32)
    return np.einsum("jb,ijbx->ijx", wc, tall[:, cols - lo])


@cache
def _weapon() -> tuple[np.ndarray, np.ndarray]:
    """A view-model sprite (alpha, colour) for the lower right, output resolution."""
    h, w, _ = FRAME_SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # a barrel and a receiver running from the corner towards the centre
    d = np.abs((yy - h) * 0.55 + (xx - w) * 0.32 + 12) / 6
    alpha = np.clip(1.5 - d, 0, 1) * (xx > w * 0.62) * (yy > h * 0.55)
    alpha = np.maximum(alpha, ((xx - w * 0.86) ** 2 / 900 + (yy - h) ** 2 / 700 < 1) * 1.0)
    rng = np.random.default_rng(7)
    shade = 40 + 30 * (yy / h) + rng.normal(0, 6, (h, w))
    colour = np.stack([shade * 0.9, shade, shade * 1.15], -1)  # BGR, a warm dark metal
    return alpha.astype(np.float32), colour.astype(np.float32)


def _shifted(a: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`a` moved by a sub-pixel (dx, dy), interpolating between whole-pixel shifts."""
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - ix, dy - iy
    h, w = a.shape
    pad = np.pad(a, 2)  # zeros around: a shifted sprite never wraps to the other edge
    out = np.zeros_like(a)
    for sx, sy, wgt in (
        (ix, iy, (1 - fx) * (1 - fy)),
        (ix + 1, iy, fx * (1 - fy)),
        (ix, iy + 1, (1 - fx) * fy),
        (ix + 1, iy + 1, fx * fy),
    ):
        sx, sy = int(np.clip(sx, -2, 2)), int(np.clip(sy, -2, 2))
        out += wgt * pad[2 - sy : 2 - sy + h, 2 - sx : 2 - sx + w]
    return out


def render(states: list[dict], seed: int = 0, look: Look = LOOK) -> np.ndarray:
    """(T, 150, 280, 3) uint8 BGR frames following each state's view, movement and firing."""
    world = scene(look)
    alpha, colour = _weapon()
    h, w, _ = FRAME_SHAPE
    rng = np.random.default_rng(seed)
    out = np.empty((len(states), h, w, 3), np.uint8)
    phase, prev_ammo = 0.0, None
    for t, s in enumerate(states):
        walk = np.sin((s["localpos1"] + s["localpos2"]) / 350.0)
        zoom = 90 / (s["obs_fov"] or 90) * (1 + look.zoom_walk * walk)
        pitch_row = SCENE_H / 2 + (s["zvert_rads"] - np.pi / 2) * PX_PER_RAD
        frame = _view(world, s["xy_rad"], pitch_row, zoom)
        alive = s["obs_health"] > 0
        if alive and s["obs_fov"] in (None, 90):
            phase += s["vel_mag"] / 250 * 0.6
            a = _shifted(
                alpha, look.sway_px * np.sin(phase), 0.5 * look.sway_px * np.sin(2 * phase)
            )
            frame = frame * (1 - a[..., None]) + colour * a[..., None]
            fired = prev_ammo is not None and s["ammo_active"] < prev_ammo
            if fired:  # muzzle flash at the barrel's end
                yy, xx = np.ogrid[0:h, 0:w]
                glow = np.exp(-((yy - h * 0.66) ** 2 + (xx - w * 0.7) ** 2) / 60.0)
                frame = frame + glow[..., None] * np.array([120.0, 220.0, 255.0])
        if not alive:  # death screen: dark red tint
            frame = frame * np.array([0.3, 0.3, 0.6], np.float32)
        prev_ammo = s["ammo_active"]
        frame += rng.normal(0, look.noise, frame.shape).astype(np.float32)
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        frame[h // 2 - 4 : h // 2 + 5, w // 2] = CROSSHAIR_BGR
        frame[h // 2, w // 2 - 4 : w // 2 + 5] = CROSSHAIR_BGR
        out[t] = frame
    return out
