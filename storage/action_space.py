"""The seed's action space: key order, mouse bins and the 51-wide target layout."""

from __future__ import annotations

import numpy as np
from csdm_agent import contract

# Order of the 11 key slots in `frame_i_y` (the seed's `actions_to_onehot`), and the mouse
# bins: the module csdm and its agent share holds them.
KEYS: tuple[str, ...] = contract.KEYS
KEY_INDEX: dict[str, int] = {k: i for i, k in enumerate(KEYS)}
MOUSE_X_BINS = np.array(contract.MOUSE_X_BINS, dtype=np.float64)
MOUSE_Y_BINS = np.array(contract.MOUSE_Y_BINS, dtype=np.float64)

N_KEYS = len(KEYS)
N_CLICKS = 2
N_MOUSE_X = len(MOUSE_X_BINS)
N_MOUSE_Y = len(MOUSE_Y_BINS)
Y_WIDTH = N_KEYS + N_CLICKS + N_MOUSE_X + N_MOUSE_Y  # 51

# Aux vector: 3 previous steps x (keys+clicks, 2 normalised mouse, health, ammo, team).
AUX_STEPS = 3
AUX_STEP_WIDTH = N_KEYS + N_CLICKS + 2 + 3  # 18
AUX_WIDTH = AUX_STEPS * AUX_STEP_WIDTH  # 54

FPS = 16
FRAME_SHAPE = (150, 280, 3)  # height, width, channels (BGR)


class Y:
    """Where each action group lives inside the 51-wide target vector."""

    keys = slice(0, N_KEYS)
    lclick = N_KEYS
    rclick = N_KEYS + 1
    mouse_x = slice(N_KEYS + N_CLICKS, N_KEYS + N_CLICKS + N_MOUSE_X)
    mouse_y = slice(N_KEYS + N_CLICKS + N_MOUSE_X, Y_WIDTH)
