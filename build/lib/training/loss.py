"""The seed's loss as `dm_train_model.py` actually compiles it, its label clean-ups and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from storage.metrics import SEED_ACCURACIES
from training.actions import DEFAULT, ActionSpace
from training.model import probabilities, split_heads


@dataclass(frozen=True)
class LossOptions:
    """Each clean-up and loss detail of the seed, switchable."""

    fold_mouse_extremes: bool = True  # the two outermost mouse bins each side -> the third
    fill_click_gaps: bool = True  # left-click patterns 101 and 1001 filled to 111 and 1111
    gamma: float = 0.995  # TD discount of the value head
    value_weight: float = 10.0  # the seed's `10*MSE` on the TD error
    kill_reward: float = 1.0
    death_reward: float = -0.5
    shoot_reward: float = -0.01
    # Keras lets gradients flow through `r + gamma * V(t+1)` as well: the seed's loss as used.
    td_target_grad: bool = True
    # Keras' cross-entropy on probabilities clipped to [1e-7, 1 - 1e-7], as the seed's loss got
    # it (it slices the output, so Keras could not use the logits): bounded, no gradient at
    # saturation. Off: exact cross-entropy on logits.
    keras_clip: bool = False

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class Targets:
    """Training targets of a batch of windows, on the device."""

    keys: torch.Tensor  # (B, T, n_keys) float 0/1
    clicks: torch.Tensor  # (B, T, 2) float 0/1
    mouse_x: torch.Tensor  # (B, T) bin index
    mouse_y: torch.Tensor
    reward: torch.Tensor  # (B, T)


def fill_click_gaps(click: torch.Tensor) -> torch.Tensor:
    """The seed's two passes over time: `1 0 1` -> `1 1 1`, then `1 0 0 1` -> `1 1 1 1`.

    Filling only ever sets frames already bounded by presses, so the seed's in-place loops
    equal these two vectorised passes (tests compare against a per-frame restatement).
    """
    c = click.bool().clone()
    c[..., 1:-1] |= c[..., :-2] & c[..., 2:]
    both = c[..., :-3] & c[..., 3:]
    fill = torch.zeros_like(c)
    fill[..., 1:-2] |= both
    fill[..., 2:-1] |= both
    return (c | fill).to(click.dtype)


def make_targets(
    batch: dict[str, torch.Tensor], opts: LossOptions = LossOptions(), space: ActionSpace = DEFAULT
) -> Targets:
    """Targets and reward from a loader batch, clean-ups applied as the seed's generator does."""
    clicks = batch["clicks"].float()
    shoot = clicks[..., 0]  # reward sees the raw click, before any gap filling
    reward = (
        opts.kill_reward * batch["kill"].float()
        + opts.death_reward * batch["death"].float()
        + opts.shoot_reward * shoot
    )
    mx, my = batch["mouse_x"].long(), batch["mouse_y"].long()
    if opts.fold_mouse_extremes:
        mx = mx.clamp(2, space.n_mouse_x - 3)
        my = my.clamp(2, space.n_mouse_y - 3)
    if opts.fill_click_gaps:
        clicks = torch.stack([fill_click_gaps(clicks[..., 0]), clicks[..., 1]], -1)
    return Targets(batch["keys"].float(), clicks, mx, my, reward)


KERAS_EPSILON = 1e-7


def _bce(logits: torch.Tensor, target: torch.Tensor, clip: bool) -> torch.Tensor:
    """Per-step BCE averaged over the head's width, as Keras' `binary_crossentropy`."""
    if not clip:
        return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").mean(-1)
    # Keras 2's backend: clip, then log(p + eps) and log(1 - p + eps), in float32
    p = torch.sigmoid(logits.float()).clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)
    e = KERAS_EPSILON
    return -(target * torch.log(p + e) + (1 - target) * torch.log(1 - p + e)).mean(-1)


def _ce(logits: torch.Tensor, target: torch.Tensor, clip: bool) -> torch.Tensor:
    """Per-step categorical cross-entropy against class indices, optionally Keras-clipped."""
    if not clip:
        return F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    p = torch.softmax(logits.float(), -1).clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)
    return -torch.log(p.gather(-1, target.unsqueeze(-1))).squeeze(-1)


def td_error(value: torch.Tensor, reward: torch.Tensor, opts: LossOptions) -> torch.Tensor:
    """(B, T-1) squared TD error: (r_t + gamma V_{t+1}) - V_t."""
    nxt = value[:, 1:] if opts.td_target_grad else value[:, 1:].detach()
    return (reward[:, :-1] + opts.gamma * nxt - value[:, :-1]) ** 2


def seed_loss(
    logits: torch.Tensor,
    t: Targets,
    opts: LossOptions = LossOptions(),
    space: ActionSpace = DEFAULT,
) -> torch.Tensor:
    """The seven terms the seed concatenates then averages (loss1a-c, 2a, 3, 4, critic).

    Keys 1/2/3, ctrl, shift and the right click are predicted but, as in the seed, not trained.
    """
    h = split_heads(logits, space)
    k, r, c = h["keys"], space.keys.index("r"), opts.keras_clip
    terms = [
        _bce(k[..., 0:4], t.keys[..., 0:4], c),  # w a s d
        _bce(k[..., 4:5], t.keys[..., 4:5], c),  # space
        _bce(k[..., r : r + 1], t.keys[..., r : r + 1], c),  # reload
        _bce(h["clicks"][..., 0:1], t.clicks[..., 0:1], c),  # left click
        _ce(h["mouse_x"], t.mouse_x, c),
        _ce(h["mouse_y"], t.mouse_y, c),
        opts.value_weight * td_error(h["value"][..., 0].float(), t.reward, opts),
    ]
    return torch.cat([x.flatten(1) for x in terms], 1).mean()


@torch.no_grad()
def seed_metrics(
    probs: torch.Tensor,
    t: Targets,
    opts: LossOptions = LossOptions(),
    space: ActionSpace = DEFAULT,
) -> dict[str, float]:
    """The seed's metrics on probabilities, and `seed_mean` (the mean of the 7 accuracies).

    Accuracy at 0.5 (the most likely bin for the mouse); value_mse is 100x the TD error's MSE.
    """
    h = split_heads(probs.float(), space)

    def acc(p: torch.Tensor, y: torch.Tensor) -> float:
        return ((p > 0.5).float() == y).float().mean().item()

    out = {
        "wasd_acc": acc(h["keys"][..., 0:4], t.keys[..., 0:4]),
        "jump_acc": acc(h["keys"][..., 4:5], t.keys[..., 4:5]),
        "other_keys_acc": acc(h["keys"][..., 5:], t.keys[..., 5:]),
        "lclick_acc": acc(h["clicks"][..., 0:1], t.clicks[..., 0:1]),
        "rclick_acc": acc(h["clicks"][..., 1:2], t.clicks[..., 1:2]),
        "mouse_x_acc": (h["mouse_x"].argmax(-1) == t.mouse_x).float().mean().item(),
        "mouse_y_acc": (h["mouse_y"].argmax(-1) == t.mouse_y).float().mean().item(),
        "value_mse": 100 * td_error(h["value"][..., 0], t.reward, opts).mean().item(),
    }
    out["seed_mean"] = sum(out[k] for k in SEED_ACCURACIES) / len(SEED_ACCURACIES)
    return out


@torch.no_grad()
def metrics(
    logits: torch.Tensor,
    t: Targets,
    opts: LossOptions = LossOptions(),
    space: ActionSpace = DEFAULT,
) -> dict[str, float]:
    """`seed_metrics` of a training batch's logits (a logit above 0 is a probability above 0.5)."""
    return seed_metrics(probabilities(logits.float(), space), t, opts, space)
