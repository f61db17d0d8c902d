"""The predictor's inverse in one compiled pass per frame (numba, GIL-free).

`PredictorCodec` keeps, per channel, `up` residuals (x - up), `left` residuals (x - left) or
`gradient` residuals (the up difference of the left differences). Undoing them is a running
sum down the rows and/or along each row, modulo 256; done row by row, the row and the one
above stay in L1, and the sum along a row runs its channels as independent chains.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint8

KINDS = {"up": (True, False), "left": (False, True), "gradient": (True, True)}


@njit(nogil=True, cache=True, boundscheck=False)
def _undo(src, dst, channels, up, left):  # pragma: no cover - compiled
    n, h, w = src.shape
    prev = np.zeros(w, np.uint8)  # the previous row, summed down (before the sum along it)
    for t in range(n):
        prev[:] = 0
        for r in range(h):
            s, row = src[t, r], dst[t, r]
            if up:  # vectorised: no chain across the row
                for j in range(w):
                    prev[j] = uint8(prev[j] + s[j])
                if not left:
                    row[:] = prev
            if left:
                d = prev if up else s
                if channels == 3:  # the frames' case: three chains held in registers
                    a0, a1, a2 = uint8(0), uint8(0), uint8(0)
                    for j in range(0, w - 2, 3):
                        a0 = uint8(a0 + d[j])
                        a1 = uint8(a1 + d[j + 1])
                        a2 = uint8(a2 + d[j + 2])
                        row[j], row[j + 1], row[j + 2] = a0, a1, a2
                else:
                    for j in range(channels):
                        row[j] = d[j]
                    for j in range(channels, w):
                        row[j] = uint8(row[j - channels] + d[j])


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
    _undo(src, out.reshape(-1, h, w * c), c, up, left)
    return out
