"""The seed's action space: key order, mouse bins and the 51-wide target layout."""

from __future__ import annotations

import numpy as np

# Order of the 11 key slots in `frame_i_y` (the seed's `actions_to_onehot`, config.py:126-145)
# and the mouse bins (config.py:25-26). The agent keeps the same in `csdm_agent.contract`,
# which a reader cannot depend on; tests/agent/test_descriptor_contract.py holds them equal.
KEYS: tuple[str, ...] = ("w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r")
KEY_INDEX: dict[str, int] = {k: i for i, k in enumerate(KEYS)}
# the seed's tables, one line each (`ruff format` would give each number a line)
# fmt: off
MOUSE_X_BINS = np.array([-1000, -500, -300, -200, -100, -60, -30, -20, -10, -4, -2, -0.0, 2, 4, 10, 20, 30, 60, 100, 200, 300, 500, 1000], dtype=np.float64)  # noqa: E501
MOUSE_Y_BINS = np.array([-200, -100, -50, -20, -10, -4, -2, -0.0, 2, 4, 10, 20, 50, 100, 200], dtype=np.float64)  # noqa: E501
# fmt: on

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


def quantise(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Index of the nearest bin after clipping to the outer bins; ties go to the lower bin."""
    clipped = np.clip(np.asarray(values, np.float64), bins[0], bins[-1])
    return np.abs(bins[None, :] - clipped[:, None]).argmin(axis=1)
