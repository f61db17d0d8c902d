"""A view's pixels from stored frames: fit (stretch, crop, pad), then a named filter, to RGB.

Each filter is its reference library's own resize, so it matches it bit for bit:
- `bicubic`: torchvision's antialiased bicubic on tensors (`interpolate(..., antialias=True)`).
  `wrap` keeps DIAMOND's arithmetic and its truncating uint8 cast; `clamp` is torchvision's
  uint8 result (rounded, clamped to 0..255);
- `area`: OpenCV's `INTER_AREA`;
- `box`, `bilinear`, `nearest`: Pillow's `Image.resize` with that filter.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from storage.sidearrays import ViewSpec
from training.diamond_obs import RESIZE_FRAMES, low_res


def crop_box(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centred region of `dst`'s aspect in `src`."""
    (sh, sw), (dh, dw) = src, dst
    if sw * dh > sh * dw:  # the source is wider: keep its height
        w = max(1, min(sw, round(sh * dw / dh)))
        return 0, (sw - w) // 2, sh, w
    h = max(1, min(sh, round(sw * dh / dw)))
    return (sh - h) // 2, 0, h, sw


def pad_box(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the letterboxed picture inside `dst`."""
    (sh, sw), (dh, dw) = src, dst
    scale = min(dh / sh, dw / sw)
    h, w = max(1, min(dh, round(sh * scale))), max(1, min(dw, round(sw * scale)))
    return (dh - h) // 2, (dw - w) // 2, h, w


def make_view(frames: np.ndarray, spec: ViewSpec) -> np.ndarray:
    """(T, H, W, 3) uint8 BGR frames to the view's (T, 3, h, w) uint8 RGB.

    Every filter treats channels apart, so frames are resized as stored (BGR) and the small
    result's channels flipped: the same values, without copying the full frames first.
    """
    size = (spec.height, spec.width)
    if spec.fit == "crop":
        top, left, h, w = crop_box(frames.shape[1:3], size)
        frames = frames[:, top : top + h, left : left + w]
    if spec.fit != "pad":
        return _resize(frames, size, spec)
    top, left, h, w = pad_box(frames.shape[1:3], size)
    out = np.zeros((len(frames), 3, *size), np.uint8)  # black bars
    out[:, :, top : top + h, left : left + w] = _resize(frames, (h, w), spec)
    return out


def _resize(bgr: np.ndarray, size: tuple[int, int], spec: ViewSpec) -> np.ndarray:
    """(T, H, W, 3) BGR to (T, 3, h, w) RGB by the spec's filter."""
    if spec.filter == "bicubic":
        return _bicubic(bgr, size, spec.overshoot)
    out = np.empty((len(bgr), 3, *size), np.uint8)
    if spec.filter == "area":
        import cv2

        for i, frame in enumerate(bgr):  # OpenCV takes rows with a stride: crops need no copy
            small = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_AREA)
            out[i] = small[:, :, ::-1].transpose(2, 0, 1)
        return out
    from PIL import Image

    mode = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}.get(
        spec.filter, Image.Resampling.NEAREST
    )
    for i, frame in enumerate(bgr):
        small = np.asarray(Image.fromarray(frame).resize(size[::-1], mode))
        out[i] = small[:, :, ::-1].transpose(2, 0, 1)
    return out


def _bicubic(bgr: np.ndarray, size: tuple[int, int], overshoot: str) -> np.ndarray:
    if overshoot == "wrap":  # DIAMOND's preparation, which takes BGR
        return low_res(bgr, size).numpy()
    out = np.empty((len(bgr), 3, *size), np.uint8)
    for lo in range(0, len(bgr), RESIZE_FRAMES):
        x = torch.from_numpy(bgr[lo : lo + RESIZE_FRAMES]).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        out[lo : lo + len(y)] = y.clamp_(0, 255).round_().byte().flip(1).numpy()
    return out
