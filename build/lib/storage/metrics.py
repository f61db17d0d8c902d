"""Names of the seed's metrics, as `eval.json`, reports and a run's metrics store them."""

from __future__ import annotations

# The seed's seven accuracies (dm_train_model.py); `seed_mean` is their mean.
SEED_ACCURACIES = (
    "wasd_acc",
    "jump_acc",
    "other_keys_acc",
    "lclick_acc",
    "rclick_acc",
    "mouse_x_acc",
    "mouse_y_acc",
)
