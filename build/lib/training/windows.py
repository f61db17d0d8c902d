"""The candidate windows: the seed's segment grid and its subselection, drawn per round."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from training.actions import DEFAULT
from training.labels import Labels
from training.sampler import SamplerConfig


@dataclass
class WindowIndex:
    """The candidate windows: episode index and segment start, before per-epoch jitter."""

    labels: Labels
    episode: np.ndarray  # int64 index into labels.episodes
    start: np.ndarray  # int64 frame
    cfg: SamplerConfig
    # the seed's independent subselections, epoch e training on rounds[e % len]; empty: one,
    # (episode, start) above, every epoch
    rounds: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def __len__(self) -> int:
        return len(self.start)

    def round(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode, start) of the windows epoch `epoch` draws from."""
        if not self.rounds:
            return self.episode, self.start
        return self.rounds[epoch % len(self.rounds)]

    @property
    def n_rounds(self) -> int:
        """How many subselections the epochs cycle through."""
        return max(1, len(self.rounds))


def build_index(labels: Labels, cfg: SamplerConfig, seed: int = 0) -> WindowIndex:
    """Segments every `window` frames (the seed's grid), subselected as configured."""
    t, n = cfg.window, labels.lengths()
    seg_ep, seg_start = [], []
    for i, length in enumerate(n):
        if length >= t:  # the seed's grid: starts below n - window - jitter, at least one
            s = np.arange(0, max(length - t - cfg.jitter, 1), t)
            seg_ep.append(np.full(len(s), i))
            seg_start.append(s)
    if not seg_ep:
        return WindowIndex(labels, np.zeros(0, np.int64), np.zeros(0, np.int64), cfg)
    ep, start = np.concatenate(seg_ep).astype(np.int64), np.concatenate(seg_start).astype(np.int64)
    rounds = []
    for r in range(cfg.draws if _subselects(cfg) else 1):
        key = [seed, 0x5E1EC7] if r == 0 else [seed, 0x5E1EC7, r]
        keep = subselect(labels, ep, start, cfg, np.random.default_rng(key).random(len(start)))
        rounds.append((ep[keep], start[keep]))
    lean = replace(labels, weapon=np.empty(0, object))  # loader processes need no strings
    return WindowIndex(lean, *rounds[0], cfg, tuple(rounds) if len(rounds) > 1 else ())


def _subselects(cfg: SamplerConfig) -> bool:
    """Whether the subselection draws at random (otherwise every draw is the same)."""
    return cfg.keep_prob < 1.0


def subselect(
    labels: Labels, ep: np.ndarray, start: np.ndarray, cfg: SamplerConfig, draws: np.ndarray
) -> np.ndarray:
    """The seed's `fn_subselect`, vectorised over segments; `draws` are uniform in [0, 1).

    A segment runs to the next start, the last one to its episode's second-last frame (the
    seed's hard-coded 999).
    """
    plain = cfg.weapon is None and not cfg.drop_motionless and cfg.keep_prob >= 1.0
    if plain and not cfg.kill_segments:
        return np.ones(len(start), bool)
    first = labels.offsets[ep] + start
    last_of_ep = np.r_[ep[1:] != ep[:-1], True]
    end = np.where(last_of_ep, labels.offsets[ep + 1] - 1, np.r_[first[1:], 0])

    def seg_sum(x: np.ndarray) -> np.ndarray:
        cs = np.r_[0, np.cumsum(x, dtype=np.int64)]
        return cs[end] - cs[first]

    length = (end - first).astype(np.float64)
    moving = labels.keys[:, :4].any(1)
    mouse = (labels.mouse_x != _zero(DEFAULT.mouse_x_bins)) | (
        labels.mouse_y != _zero(DEFAULT.mouse_y_bins)
    )
    kills = seg_sum(labels.kill.astype(bool))
    holding = (
        seg_sum(np.char.find(labels.weapon.astype(str), cfg.weapon) >= 0)
        if cfg.weapon is not None
        else length
    )
    prob = np.full(len(start), cfg.keep_prob)
    if cfg.drop_motionless:
        still = (seg_sum(~moving) / cfg.window > cfg.motionless_fraction) & (
            seg_sum(~mouse) / cfg.window > cfg.motionless_fraction
        )
        prob[still] = 0.0
    armed = holding / cfg.window >= cfg.weapon_fraction
    prob[~armed] = 0.0
    keep = ~(draws > prob)
    if cfg.kill_segments:
        hot = (kills > 0) & armed
        keep |= hot
        prev = np.flatnonzero(hot[1:] & (ep[1:] == ep[:-1]))  # and the segment before it
        keep[prev] = True
    return keep


def _zero(bins: tuple[float, ...]) -> int:
    return int(np.argmin(np.abs(np.asarray(bins))))
