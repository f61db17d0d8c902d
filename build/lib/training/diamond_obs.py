"""DIAMOND's observation arithmetic: stored BGR frames to its float and uint8 forms."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_FRAMES = 100  # frames resized at once: 100 float frames at 150x280 are 50 MB


def to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 BGR to DIAMOND's (T, 3, H, W) float32 RGB in [-1, 1].

    The same float32 operations in the same order as DIAMOND's reader, so values are equal
    bit for bit: divide by 255, times 2, minus 1.
    """
    x = torch.as_tensor(frames)
    return x.flip(-1).permute(0, 3, 1, 2).div(255).mul(2).sub(1)


def to_uint8(obs: torch.Tensor) -> torch.Tensor:
    """DIAMOND's saved form of float observations: ((x + 1) / 2 * 255), truncated to uint8.

    Values outside [-1, 1] (bicubic overshoot) are not clipped: torch's cast truncates toward
    zero and keeps the low 8 bits, so -1.05 becomes 250. DIAMOND's files hold exactly that.
    """
    return obs.add(1).div(2).mul(255).byte()


def low_res(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(T, 3, h, w) uint8 as DIAMOND's preparation writes it: an antialiased bicubic resize.

    torchvision's tensor `resize` is `interpolate(bicubic, align_corners=False,
    antialias=True)` on float32; frames are independent, so resizing in slices is exact.
    """
    out = torch.empty((len(frames), 3, *size), dtype=torch.uint8)
    for lo in range(0, len(frames), RESIZE_FRAMES):
        obs = to_float(frames[lo : lo + RESIZE_FRAMES])
        small = F.interpolate(obs, size=size, mode="bicubic", align_corners=False, antialias=True)
        out[lo : lo + len(small)] = to_uint8(small)
    return out


# What one resize step may hold: RESIZE_FRAMES float32 frames at the target size, in and out
# and one temporary. Views and exports work a step at a time, whatever the episode's length.
STEP_MEMORY = 2 << 30


def step_bytes(size: tuple[int, int]) -> int:
    """Memory of one resize step at `size` (the bound `parse_size` checks)."""
    return RESIZE_FRAMES * 3 * size[0] * size[1] * 4 * 3


def parse_size(text: str) -> tuple[int, int]:
    """`"30x56"` to (30, 56): height by width, each 1..4096, within the step's memory bound."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is not HEIGHTxWIDTH, e.g. 30x56") from None
    if not (0 < h <= 4096 and 0 < w <= 4096):
        raise ValueError(f"size {text!r}: height and width must be 1..4096")
    if step_bytes((h, w)) > STEP_MEMORY:
        most = STEP_MEMORY // step_bytes((1, 1))
        raise ValueError(
            f"size {text!r}: resizing {RESIZE_FRAMES} frames at a time would need "
            f"{step_bytes((h, w)) / 2**30:.1f} GiB, more than the {STEP_MEMORY >> 30} GiB bound; "
            f"choose at most {most:,} pixels (e.g. 480x832)"
        )
    return h, w
