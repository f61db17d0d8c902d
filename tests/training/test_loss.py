"""Label clean-ups, reward and loss against a per-frame restatement of the seed's generator."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.training import seed_training_reference as ref
from training.loss import LossOptions, fill_click_gaps, make_targets, seed_loss
from training.model import probabilities

T = 12


def _one_hot(idx: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n)[idx]


def _window(rng: np.random.Generator, t: int = T, click_p: float = 0.5) -> dict[str, np.ndarray]:
    return {
        "keys": (rng.random((t, 11)) < 0.3).astype(np.uint8),
        "clicks": (rng.random((t, 2)) < click_p).astype(np.uint8),
        "mouse_x": rng.integers(0, 23, t),
        "mouse_y": rng.integers(0, 15, t),
        "kill": (rng.random(t) < 0.2).astype(np.uint8),
        "death": (rng.random(t) < 0.2).astype(np.uint8),
    }


def _seed_y(w: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate(
        [w["keys"], w["clicks"], _one_hot(w["mouse_x"], 23), _one_hot(w["mouse_y"], 15)], 1
    )


def _batch(windows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([w[k] for w in windows])) for k in windows[0]}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40))
def test_click_gap_fill_matches_the_seeds_loops(clicks: list[bool]) -> None:
    c = np.array(clicks, dtype=np.uint8)
    y = np.zeros((len(c), 51))
    y[:, 11] = c
    y[:, 13 + 11], y[:, 13 + 23 + 7] = 1, 1  # a valid one-hot mouse
    want = ref.generator_targets(y, np.zeros((len(c), 2)))[:, 11]
    got = fill_click_gaps(torch.from_numpy(c)[None])[0].numpy()
    np.testing.assert_array_equal(got, want)


def test_adversarial_click_patterns() -> None:
    cases = {
        "1010101": "1111111",
        "1001001": "1111111",
        "10001": "10001",
        "0110": "0110",
        "10": "10",
        "1001": "1111",
        "100101": "111111",
        "0100100": "0111100",
    }
    for raw, want in cases.items():
        c = torch.tensor([[int(x) for x in raw]])
        assert "".join(map(str, fill_click_gaps(c)[0].tolist())) == want, raw


def test_targets_match_the_seeds_generator_on_every_bin() -> None:
    rng = np.random.default_rng(0)
    windows = [_window(rng) for _ in range(6)]
    windows[0]["mouse_x"][:4] = [0, 1, 21, 22]  # every folded bin appears
    windows[0]["mouse_y"][:4] = [0, 1, 13, 14]
    t = make_targets(_batch(windows))
    for i, w in enumerate(windows):
        want = ref.generator_targets(_seed_y(w), np.stack([w["kill"], w["death"]], 1))
        np.testing.assert_array_equal(t.keys[i].numpy(), want[:, :11])
        np.testing.assert_array_equal(t.clicks[i].numpy(), want[:, 11:13])
        np.testing.assert_array_equal(t.mouse_x[i].numpy(), want[:, 13:36].argmax(1))
        np.testing.assert_array_equal(t.mouse_y[i].numpy(), want[:, 36:51].argmax(1))
        np.testing.assert_allclose(t.reward[i].numpy(), want[:, 51], atol=1e-6)
    assert set(t.mouse_x.unique().tolist()) <= set(range(2, 21))


def test_clean_ups_can_be_switched_off() -> None:
    w = _window(np.random.default_rng(1))
    w["mouse_x"][0], w["clicks"][:3, 0] = 0, [1, 0, 1]
    t = make_targets(_batch([w]), LossOptions(fold_mouse_extremes=False, fill_click_gaps=False))
    assert t.mouse_x[0, 0] == 0 and t.clicks[0, 1, 0] == 0


def test_loss_equals_the_seeds_keras_loss() -> None:
    rng = np.random.default_rng(2)
    windows = [_window(rng) for _ in range(3)]
    logits = torch.randn(3, T, 52, dtype=torch.float64)
    got = seed_loss(logits, make_targets(_batch(windows))).item()
    y_true = np.stack(
        [ref.generator_targets(_seed_y(w), np.stack([w["kill"], w["death"]], 1)) for w in windows]
    )
    want = ref.custom_loss(y_true, probabilities(logits).numpy())
    assert abs(got - want) < 1e-5 * max(1.0, abs(want))


def test_keras_clipping_matches_the_seeds_loss_at_saturation() -> None:
    rng = np.random.default_rng(4)
    windows = [_window(rng) for _ in range(3)]
    # saturated logits: probabilities of 0 and 1 in float64, where the clip decides the loss
    scale = torch.full((52,), 40.0, dtype=torch.float64)
    scale[-1] = 0.1  # the value head stays small: the cross-entropy terms decide the loss
    gen = torch.Generator().manual_seed(4)
    logits = (torch.randn(3, T, 52, dtype=torch.float64, generator=gen) * scale).float()
    logits.requires_grad_()
    y_true = np.stack(
        [ref.generator_targets(_seed_y(w), np.stack([w["kill"], w["death"]], 1)) for w in windows]
    )
    # Keras computed in float32 (its clip bound 1 - 1e-7 rounds to 1 - 1.19e-7 there)
    want = ref.custom_loss(y_true, probabilities(logits).detach().numpy())
    clipped = seed_loss(logits, make_targets(_batch(windows)), LossOptions(keras_clip=True))
    assert abs(clipped.item() - want) < 1e-5 * max(1.0, abs(want))
    exact = seed_loss(logits, make_targets(_batch(windows))).item()
    assert exact > want * 1.5  # unclipped, the wrong saturated outputs cost far more
    clipped.backward()
    g = logits.grad[..., :51]
    saturated = logits.detach()[..., :51].abs() > 20  # sigmoid within 2e-9 of 0 or 1
    keys = torch.zeros_like(saturated)
    keys[..., :13] = True  # sigmoid heads: a clipped probability passes no gradient back
    assert (g[saturated & keys] == 0).all() and (g[~saturated] != 0).any()


def test_td_target_gradient_is_an_option() -> None:
    w = _window(np.random.default_rng(3))
    grads = []
    for flow_through in (True, False):
        logits = torch.zeros(1, T, 52, requires_grad=True)
        seed_loss(
            logits, make_targets(_batch([w])), LossOptions(td_target_grad=flow_through)
        ).backward()
        grads.append(logits.grad[0, :, -1])
    # V(t+1) only receives gradient through the target when the seed's behaviour is on
    assert grads[0][-1] != 0 and grads[1][-1] == 0
