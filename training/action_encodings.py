"""World-model actions at any stride, in the encoding a model wants (`SegmentStream(actions=)`).

Step j of a stride-k sequence shows frame f = j * k. Its action combines the k source rows
f - k + 1 .. f, the rows that led from the previous step's frame to this one (for k = 1, row
f itself, as the source pairs them; docs/format.md, "What the data is"). Rows before the
episode's first count as nothing pressed and no mouse move. The rule:
- a key or click is held if it is pressed in any of the k rows;
- the mouse moves are summed, in the seed's units (each row's bin value).

Encodings, column by column (docs/world-models.md):
- `raw`: the source's 51 columns: 11 keys (w a s d space ctrl shift 1 2 3 r), left and right
  click, 23 mouse-x bins, 15 mouse-y bins, one-hot; at stride 1 the stored rows exactly,
  otherwise the summed moves re-binned to the nearest bin (clipped; ties to the lower);
- `decoded`: 15 float32: the 11 keys and 2 clicks as 0/1, mouse x and y as continuous moves;
- `indices`: 15 int64: the 11 keys and 2 clicks as 0/1, then the mouse-x bin (0..22) and the
  mouse-y bin (0..14) of the summed moves.
"""

from __future__ import annotations

import numpy as np

from storage.action_space import MOUSE_X_BINS, MOUSE_Y_BINS, N_CLICKS, N_KEYS, Y_WIDTH, quantise

ENCODINGS = ("raw", "decoded", "indices")
BUTTONS = N_KEYS + N_CLICKS  # 13


def decode_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 51) rows to buttons (n, 13) bool and mouse x, y moves (n,) in the seed's units.

    A row with no mouse bin set (a padded or absent row) moves the mouse by 0.
    """
    rows = np.asarray(rows)
    buttons = rows[:, :BUTTONS] > 0.5
    mx_part = rows[:, BUTTONS : BUTTONS + len(MOUSE_X_BINS)]
    my_part = rows[:, BUTTONS + len(MOUSE_X_BINS) : Y_WIDTH]
    mx = np.where(mx_part.max(1) > 0.5, MOUSE_X_BINS[mx_part.argmax(1)], 0.0)
    my = np.where(my_part.max(1) > 0.5, MOUSE_Y_BINS[my_part.argmax(1)], 0.0)
    return buttons, mx, my


def strided_actions(rows: np.ndarray, lo: int, hi: int, stride: int, encoding: str) -> np.ndarray:
    """The actions of steps `[lo, hi)` of an episode whose raw rows are `rows`, encoded."""
    if encoding not in ENCODINGS:
        raise ValueError(f"actions must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    if stride == 1 and encoding == "raw":
        return np.asarray(rows[lo:hi])
    n, steps = len(rows), hi - lo
    first = lo * stride - stride + 1  # source row of the first step's first combined row
    take = np.arange(first, first + steps * stride)
    valid = (take >= 0) & (take < n)
    picked = np.zeros((len(take), Y_WIDTH), np.asarray(rows).dtype)
    picked[valid] = rows[take[valid]]
    buttons, mx, my = decode_rows(picked)
    held = buttons.reshape(steps, stride, BUTTONS).any(1)
    dx = mx.reshape(steps, stride).sum(1)
    dy = my.reshape(steps, stride).sum(1)
    if encoding == "decoded":
        return np.concatenate([held, dx[:, None], dy[:, None]], 1).astype(np.float32)
    ix, iy = quantise(dx, MOUSE_X_BINS), quantise(dy, MOUSE_Y_BINS)
    if encoding == "indices":
        return np.concatenate([held, ix[:, None], iy[:, None]], 1).astype(np.int64)
    out = np.zeros((steps, Y_WIDTH), np.asarray(rows).dtype)
    out[:, :BUTTONS] = held
    out[np.arange(steps), BUTTONS + ix] = 1
    out[np.arange(steps), BUTTONS + len(MOUSE_X_BINS) + iy] = 1
    return out
