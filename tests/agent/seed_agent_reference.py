"""The seed's `dm_run_agent.py` decoding, restated per step from its source for comparison.

Flags as the seed ships them: IS_CLICKS=1, IS_RCLICK=0, IS_MOUSEMOVE=1, IS_WASD=1, IS_JUMP=1,
IS_RELOAD=1, IS_KEYS=0, IS_PROBABILISTIC_ACTIONS=True. `rng` stands in for `np.random`.
"""

from __future__ import annotations

import numpy as np

KEYS = ["w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r"]


def onehot_to_actions(y, mx_bins, my_bins):
    keys_pred = y[0:11]
    keys_pressed = [KEYS[i] for i in range(11) if np.round(keys_pred[i]) == 1]
    lclicks = int(np.round(y[11]))
    rclicks = int(np.round(y[12]))
    mouse_x = mx_bins[np.argmax(y[13:36])]
    mouse_y = my_bins[np.argmax(y[36:51])]
    return keys_pressed, mouse_x, mouse_y, lclicks, rclicks


class SeedDecoder:
    def __init__(self, rng, mx_bins, my_bins):
        self.rng, self.mx, self.my = rng, np.asarray(mx_bins), np.asarray(my_bins)
        self.count_inaction = 0

    def step(self, y: np.ndarray):
        """One 52-wide activated output -> (keys, lclick, rclick, mx, my, reset) applied."""
        keys_pressed, mouse_x, mouse_y, _, _ = onehot_to_actions(y, self.mx, self.my)
        keys_pred, clicks_pred = y[0:11], y[11:13]
        mouse_x_pred, mouse_y_pred = y[13:36], y[36:51]
        if (
            sum(x in keys_pressed for x in ["w", "s", "a", "d"]) == 0
            and mouse_x == 0
            and mouse_y == 0
        ):
            self.count_inaction += 1
        else:
            self.count_inaction = 0
        reset = False
        lclicks = 1 if self.rng.random() < clicks_pred[0] else 0
        self.rng.random()  # the right click is drawn, then not applied (IS_RCLICK=0)
        jump_prob = keys_pred[4]
        if "space" in keys_pressed:
            keys_pressed.remove("space")
        if not self.rng.random() > jump_prob:
            keys_pressed.append("space")
        reload_prob = keys_pred[10]
        if "r" in keys_pressed:
            keys_pressed.remove("r")
        if not self.rng.random() > reload_prob:
            keys_pressed.append("r")
        if self.count_inaction > 8:
            mouse_x = self.rng.choice(self.mx, p=mouse_x_pred / mouse_x_pred.sum())
            mouse_y = self.rng.choice(self.my, p=mouse_y_pred / mouse_y_pred.sum())
        if self.count_inaction > 96:
            mouse_x = self.rng.choice(self.mx)
            mouse_y = self.rng.choice(self.my)
            reset = True
        if self.rng.random() > 0.999:
            reset = True
        if self.count_inaction > 96:
            if self.rng.random() < np.maximum(keys_pred[0], 0.05):
                keys_pressed.append("w")
            elif self.rng.random() < np.maximum(keys_pred[1], 0.05):
                keys_pressed.append("a")
            elif self.rng.random() < np.maximum(keys_pred[2], 0.05):
                keys_pressed.append("s")
            elif self.rng.random() < np.maximum(keys_pred[3], 0.05):
                keys_pressed.append("d")
        mouse_x = float(np.clip(mouse_x, -300, 300))
        # what gets applied: IS_WASD, IS_JUMP, IS_RELOAD keys; IS_KEYS off; IS_RCLICK off
        applied = {k for k in keys_pressed if k in ("w", "a", "s", "d", "space", "r")}
        return applied, bool(lclicks), False, mouse_x, float(mouse_y), reset
