"""Per-frame restatements of the seed's `dm_train_model.py` label clean-ups, loss and augmentation.

Written from the seed's loops and Keras' definitions, independently of `training/`.
"""

from __future__ import annotations

import numpy as np

N_KEYS, N_CLICKS, N_MX, N_MY = 11, 2, 23, 15
GAMMA = 0.995
EPS = 1e-7  # Keras' backend epsilon


def generator_targets(y: np.ndarray, helper: np.ndarray) -> np.ndarray:
    """The seed's DataGenerator on one window: y (T, 51) one-hot labels, helper (T, 2) kill/death.

    Returns (T, 53): cleaned labels, reward, advantage placeholder.
    """
    t = len(y)
    out = np.zeros((t, 53))
    for j in range(t):
        out[j, :-2] = y[j]
        kill_i, dead_i = helper[j, 0], helper[j, 1]
        shoot_i = out[j, N_KEYS]
        out[j, -2:] = (kill_i - 0.5 * dead_i - 0.01 * shoot_i, 0.0)
        mx = N_KEYS + N_CLICKS
        if out[j, mx] == 1:
            out[j, mx], out[j, mx + 2] = 0, 1
        elif out[j, mx + 1] == 1:
            out[j, mx + 1], out[j, mx + 2] = 0, 1
        elif out[j, mx + N_MX - 1] == 1:
            out[j, mx + N_MX - 1], out[j, mx + N_MX - 3] = 0, 1
        elif out[j, mx + N_MX - 2] == 1:
            out[j, mx + N_MX - 2], out[j, mx + N_MX - 3] = 0, 1
        my = mx + N_MX
        if out[j, my] == 1:
            out[j, my], out[j, my + 2] = 0, 1
        elif out[j, my + 1] == 1:
            out[j, my + 1], out[j, my + 2] = 0, 1
        elif out[j, my + N_MY - 1] == 1:
            out[j, my + N_MY - 1], out[j, my + N_MY - 3] = 0, 1
        elif out[j, my + N_MY - 2] == 1:
            out[j, my + N_MY - 2], out[j, my + N_MY - 3] = 0, 1
    for j in range(1, t - 1):
        if out[j - 1, N_KEYS] == 1 and out[j + 1, N_KEYS] == 1:
            out[j, N_KEYS] = 1
    for j in range(1, t - 2):
        if out[j - 1, N_KEYS] == 1 and out[j + 2, N_KEYS] == 1:
            out[j, N_KEYS] = 1
            out[j + 1, N_KEYS] = 1
    return out


def _bce(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Keras 2's `backend.binary_crossentropy` on probabilities (clip, then eps inside the logs)."""
    p = np.clip(p, EPS, 1 - EPS)
    return -(y * np.log(p + EPS) + (1 - y) * np.log(1 - p + EPS)).mean(-1)


def _cce(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    return -(y * np.log(p)).sum(-1)


def custom_loss(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The seed's `custom_loss` on (B, T, 53) targets and (B, T, 52) activated outputs."""
    k, c = N_KEYS, N_CLICKS
    v = k + c + N_MX + N_MY
    parts = [
        _bce(y_true[:, :, 0:4], y_pred[:, :, 0:4]),
        _bce(y_true[:, :, 4:5], y_pred[:, :, 4:5]),
        _bce(y_true[:, :, k - 1 : k], y_pred[:, :, k - 1 : k]),
        _bce(y_true[:, :, k : k + 1], y_pred[:, :, k : k + 1]),
        _cce(y_true[:, :, k + c : k + c + N_MX], y_pred[:, :, k + c : k + c + N_MX]),
        _cce(y_true[:, :, k + c + N_MX : v], y_pred[:, :, k + c + N_MX : v]),
        10 * ((y_true[:, :-1, v] + GAMMA * y_pred[:, 1:, v]) - y_pred[:, :-1, v]) ** 2,
    ]
    return float(np.concatenate(parts, axis=-1).mean())


def augment(
    x: np.ndarray, bright_on: bool, bright: float, contrast_on: bool, contrast: float
) -> np.ndarray:
    """The seed's brightness then contrast jitter on one window, given the random draws."""
    x = x.astype(np.float64)
    if bright_on:
        x *= bright
        x = np.clip(x, 0, 255).astype(int)
    if contrast_on:
        x = np.clip(128 + contrast * x - contrast * 128, 0, 255).astype(int)
    return x


def subselect(segments: list[dict], other_prob: float, draws: np.ndarray) -> list[int]:
    """The seed's `fn_subselect` decision per segment (IS_ADD_PREV on), given uniform draws.

    Each segment: {"kills", "ak_frames", "still_wasd", "still_mouse", "first"} counts over
    its frames, and whether it is its episode's first segment. Returns kept segment indices.
    """
    n_t = 96
    keep = set(range(len(segments)))
    added = set()
    for i, s in enumerate(segments):
        prob = other_prob
        if s["still_wasd"] / n_t > 0.8 and s["still_mouse"] / n_t > 0.8:
            prob = 0.0
        if s["ak_frames"] / n_t < 0.7:
            prob = 0.0
        if s["kills"] > 0 and s["ak_frames"] / n_t >= 0.7:
            prob = 1.0
            if not s["first"]:
                added.add(i - 1)
        if draws[i] > prob:
            keep.discard(i)
    return sorted(keep | added)
