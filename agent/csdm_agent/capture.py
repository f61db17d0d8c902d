"""Frames in: the game window cut and resized as the seed's `screen_input.py`, or a replay."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

TITLES = (
    "Counter-Strike: Global Offensive - Direct3d 9",
    "Counter-Strike: Global Offensive",
    "Counter-Strike 2",
)


class FrameSource(Protocol):
    """Yields (H, W, 3) uint8 BGR frames of the model's size; None when exhausted."""

    def grab(self) -> np.ndarray | None:
        """The next frame, or None when there is none."""


class Resizer:
    """Bilinear resize with OpenCV's INTER_LINEAR sampling (half-pixel centres), tables cached."""

    def __init__(self, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> None:
        def axis(n_src: int, n_dst: int):
            x = (np.arange(n_dst) + 0.5) * n_src / n_dst - 0.5
            x = np.clip(x, 0, n_src - 1)
            lo = np.floor(x).astype(np.intp)
            hi = np.minimum(lo + 1, n_src - 1)
            return lo, hi, (x - lo).astype(np.float32)

        self.y0, self.y1, wy = axis(src_hw[0], dst_hw[0])
        self.x0, self.x1, wx = axis(src_hw[1], dst_hw[1])
        self.wy, self.wx = wy[:, None, None], wx[None, :, None]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """(h, w, 3+) uint8 -> (H, W, 3) uint8, alpha dropped."""
        img = img[..., :3]
        top, bot = img[self.y0].astype(np.float32), img[self.y1].astype(np.float32)
        rows = top + (bot - top) * self.wy
        left, right = rows[:, self.x0], rows[:, self.x1]
        return np.rint(left + (right - left) * self.wx).astype(np.uint8)


@dataclass(frozen=True)
class Crop:
    """The descriptor's crop: client size and the margins cut off each side."""

    client_width: int
    client_height: int
    sides: int
    top: int
    bottom: int

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the cut region."""
        return (self.client_height - self.top - self.bottom, self.client_width - 2 * self.sides)


class Preprocess:
    """A client-area frame (BGRA or BGR) -> the model's input, as `screen_input.py` does."""

    def __init__(self, crop: Crop, out_hw: tuple[int, int]) -> None:
        self.crop = crop
        self.resize = Resizer(crop.size, out_hw)

    def __call__(self, client: np.ndarray) -> np.ndarray:
        """Cut the margins, resize to the model's input."""
        c = self.crop
        cut = client[c.top : c.client_height - c.bottom, c.sides : c.client_width - c.sides]
        return self.resize(cut)


class ReplayError(ValueError):
    """A replay file that cannot be played: missing, not an episode, or the wrong shape."""


def _hdf5_frames(path: Path) -> np.ndarray:
    try:
        import h5py
    except ImportError as e:
        raise SystemExit("replaying HDF5 needs h5py: pip install 'csdm-agent[replay]'") from e
    try:
        with h5py.File(path, "r") as h5:
            n = sum(1 for k in h5 if k.startswith("frame_") and k.endswith("_x"))
            if n == 0:
                raise ReplayError(f"{path}: no frame_i_x datasets; not an episode file")
            return np.stack([h5[f"frame_{i}_x"][()] for i in range(n)])
    except OSError as e:
        hint = " (a tar: extract its hdf5_*.hdf5 episode first)" if path.suffix == ".tar" else ""
        raise ReplayError(f"{path}: not an HDF5 episode{hint}: {e}") from None
    except ValueError as e:  # frames of unequal shapes
        raise ReplayError(f"{path}: frames cannot be stacked ({e})") from None


class ReplayFrames:
    """Frames from an episode file: HDF5 in the public layout (`frame_i_x`) or a .npy array.

    `client=True` treats them as full client-area captures that still need cutting and
    resizing (used by the benchmark); otherwise they are model-sized frames.
    """

    def __init__(
        self,
        path: str | Path,
        preprocess: Preprocess | None = None,
        expect: tuple[int, int] | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ReplayError(f"{path}: no such file; give an hdf5_*.hdf5 episode or .npy frames")
        if path.suffix == ".npy":
            try:
                self.frames = np.load(path, allow_pickle=False, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise ReplayError(f"{path}: not a .npy array of frames ({e})") from None
        else:
            self.frames = _hdf5_frames(path)
        if expect is not None and preprocess is None:
            want = (*expect, 3)
            if self.frames.ndim != 4 or tuple(self.frames.shape[1:]) != want:
                raise ReplayError(
                    f"{path}: frames have shape {tuple(self.frames.shape[1:])}, the model takes "
                    f"{want} (uint8 BGR frames as the dataset stores them)"
                )
        self.preprocess, self.i = preprocess, 0

    def __len__(self) -> int:
        return len(self.frames)

    def grab(self) -> np.ndarray | None:
        """The next frame, or None at the end."""
        if self.i >= len(self.frames):
            return None
        f = np.asarray(self.frames[self.i])
        self.i += 1
        return self.preprocess(f) if self.preprocess else np.ascontiguousarray(f, np.uint8)


class ScreenCapture:
    """The game window's client area with mss (Windows): found by title, cut, resized."""

    def __init__(self, preprocess: Preprocess, titles: tuple[str, ...] = TITLES) -> None:
        if sys.platform != "win32":
            raise SystemExit("screen capture needs Windows; use --replay EPISODE elsewhere")
        import ctypes
        from ctypes import wintypes

        import mss

        self.sct = mss.mss()  # first: it makes the process DPI-aware, so sizes below are pixels
        user32 = ctypes.windll.user32
        hwnd = next((h for t in titles if (h := user32.FindWindowW(None, t))), 0)
        if not hwnd:
            raise SystemExit(
                f"no game window titled {' / '.join(titles)}; start the game in "
                "windowed 1024x768, or pass --window-title"
            )
        rect, origin = wintypes.RECT(), wintypes.POINT(0, 0)
        user32.GetClientRect(hwnd, ctypes.byref(rect))
        user32.ClientToScreen(hwnd, ctypes.byref(origin))
        c = preprocess.crop
        if (rect.right, rect.bottom) != (c.client_width, c.client_height):
            raise SystemExit(
                f"game client area is {rect.right}x{rect.bottom}; set the game to "
                f"{c.client_width}x{c.client_height} windowed"
            )
        self.region = {
            "left": origin.x,
            "top": origin.y,
            "width": c.client_width,
            "height": c.client_height,
        }
        self.preprocess = preprocess

    def grab(self) -> np.ndarray | None:
        """The current frame (BGRA from mss, alpha dropped by the resize)."""
        return self.preprocess(np.asarray(self.sct.grab(self.region)))
