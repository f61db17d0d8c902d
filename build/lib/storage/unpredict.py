"""The predictor's inverse in one compiled pass per frame (numba, GIL-free).

`PredictorCodec` keeps, per channel, `up` residuals (x - up), `left` residuals (x - left) or
`gradient` residuals (the up difference of the left differences). Undoing them is a running
sum down the rows and/or along each row, modulo 256; done row by row, the row and the one
above stay in L1, and the sum along a row runs its channels as independent chains.
"""

from __future__ import annotations

import logging

import imagecodecs
import numpy as np

log = logging.getLogger("csdm")
uint8 = np.uint8  # in the kernels, numba's cast to a byte (its wrap-around is the modulus)
KINDS = {"up": (True, False), "left": (False, True), "gradient": (True, True)}
_compiled: dict | None = None  # kernel name -> compiled function; {} without numba


def _kernels() -> dict:
    """The kernels compiled (from numba's cache after the first time), on first use only."""
    global _compiled
    if _compiled is None:
        try:
            import numba
        except ImportError:  # only the GPU check's carry (64 MiB) leaves out llvmlite's 60 MB
            _compiled = {}
            return _compiled
        jit = numba.njit(nogil=True, cache=True, boundscheck=False)
        _compiled = {f.__name__: jit(f) for f in (_down, _along3, _along)}
    return _compiled


def _down(x):  # pragma: no cover - compiled
    """Running sum down the rows of each frame, in place (vectorised across the row)."""
    n, h, w = x.shape
    for t in range(n):
        for r in range(1, h):
            above, row = x[t, r - 1], x[t, r]
            for j in range(w):
                row[j] = uint8(row[j] + above[j])


def _along3(x):  # pragma: no cover - compiled
    """Running sum along each row of 3-channel pixels, in place: three chains in registers."""
    n, h, w = x.shape
    for t in range(n):
        for r in range(h):
            row = x[t, r]
            a0, a1, a2 = uint8(0), uint8(0), uint8(0)
            for j in range(0, w - 2, 3):
                a0 = uint8(a0 + row[j])
                a1 = uint8(a1 + row[j + 1])
                a2 = uint8(a2 + row[j + 2])
                row[j], row[j + 1], row[j + 2] = a0, a1, a2


def _along(x, c):  # pragma: no cover - compiled
    """Running sum along each row with `c` interleaved channels, in place."""
    n, h, w = x.shape
    for t in range(n):
        for r in range(h):
            row = x[t, r]
            for j in range(c, w):
                row[j] = uint8(row[j] + row[j - c])


def undo_predictor(residuals: np.ndarray, kind: str, out: np.ndarray | None = None) -> np.ndarray:
    """Frames (..., H, W, C) uint8 from their `kind` residuals; `out` may be `residuals`."""
    if kind not in KINDS:
        raise ValueError(f"unknown predictor {kind!r}; expected one of {tuple(KINDS)}")
    if residuals.dtype != np.uint8 or residuals.ndim < 3:
        raise ValueError(f"residuals must be uint8 (..., H, W, C), got {residuals.dtype}")
    h, w, c = residuals.shape[-3:]
    src = np.ascontiguousarray(residuals).reshape(-1, h, w * c)
    if out is None:
        out = np.empty(residuals.shape, np.uint8)
    if not out.flags.c_contiguous or out.shape != residuals.shape or out.dtype != np.uint8:
        raise ValueError("out must be a C-contiguous uint8 array of the residuals' shape")
    up, left = KINDS[kind]
    dst = out.reshape(-1, h, w * c)
    if not np.shares_memory(dst, src):
        np.copyto(dst, src)
    kernels = _kernels()
    if not kernels:
        _without_numba(dst, c, up, left)
    else:
        if up:
            kernels["_down"](dst)
        if left:
            kernels["_along3"](dst) if c == 3 else kernels["_along"](dst, c)
    return out


def _without_numba(dst: np.ndarray, c: int, up: bool, left: bool) -> None:
    """The same sums with numpy and imagecodecs, slower; said once, never silently."""
    if not getattr(_without_numba, "said", False):
        log.warning("numba is not installed: the predictor is undone with numpy, slower")
        _without_numba.said = True
    if up:
        for r in range(1, dst.shape[1]):
            np.add(dst[:, r], dst[:, r - 1], out=dst[:, r])
    if left:
        frames = dst.reshape(*dst.shape[:2], -1, c)
        imagecodecs.delta_decode(frames, axis=-2, out=frames)
