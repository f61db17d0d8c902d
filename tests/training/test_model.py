"""The network's shape, its torchvision-compatible trunk and its recurrent semantics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from training.model import (
    PRESETS,
    ConvLSTM,
    ModelConfig,
    Policy,
    count_parameters,
    load_trunk_weights,
)


def test_paper_network_matches_the_published_size_and_cut() -> None:
    m = Policy(PRESETS["paper"])
    assert 5.9e6 < count_parameters(m) < 6.1e6  # the paper's 6.0M
    x = torch.zeros(2, 150, 280, 3, dtype=torch.uint8)
    feats = m.eval().features(x[None])
    assert feats.shape == (1, 2, 112, 10, 18)  # block 5c of EfficientNet-B0, stride 16
    assert m.state_shape() == (1, 256, 8, 16)
    # torchvision's names, so its ImageNet weights load
    names = set(m.trunk.state_dict())
    for k in (
        "features.0.0.weight",
        "features.0.1.running_var",
        "features.1.0.block.1.fc1.weight",
        "features.5.2.block.3.1.weight",
        "features.2.0.block.0.0.weight",
    ):
        assert k in names, k
    assert not any(k.startswith("features.6") for k in names)


def test_trunk_weights_load_from_a_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = replace(PRESETS["tiny"], padding="torch")
    a, b = Policy(cfg).eval(), Policy(cfg).eval()
    extra = {"classifier.1.weight": torch.zeros(3)}  # a full-network file has more: ignored
    torch.save({**a.trunk.state_dict(), **extra}, tmp_path / "w.pth")
    assert load_trunk_weights(b, tmp_path / "w.pth") == ["classifier.1.weight"]
    x = torch.randint(0, 255, (1, 150, 280, 3), dtype=torch.uint8)[None]
    torch.testing.assert_close(a.features(x), b.features(x))
    with pytest.raises(ValueError, match="--padding torch"):
        load_trunk_weights(Policy(PRESETS["tiny"]), tmp_path / "w.pth")
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth: not an EfficientNet-B0"):
        load_trunk_weights(b, tmp_path / "bad.pth")


def test_keras_padding_is_correct_pad_then_valid() -> None:
    """Keras' ZeroPadding2D(correct_pad) amounts on the seed's sizes, written out by hand."""
    torch.manual_seed(0)
    model = Policy(PRESETS["paper"]).eval()
    stem = model.trunk.features[0][0]
    b2a = model.trunk.features[2][0].block[1][0]  # block2a's depthwise conv
    b3a = model.trunk.features[3][0].block[1][0]
    # (top, bottom), (left, right) as Keras pads: stem 150x280, block2a 75x140, block3a 38x70
    for conv, (h, w), (tb, lr) in (
        (stem, (150, 280), ((0, 1), (0, 1))),
        (b2a, (75, 140), ((1, 1), (0, 1))),
        (b3a, (38, 70), ((1, 2), (1, 2))),
    ):
        x = torch.randn(1, conv.in_channels, h, w)
        want = F.conv2d(F.pad(x, (*lr, *tb)), conv.weight, stride=2, groups=conv.groups)
        torch.testing.assert_close(conv(x), want)
        assert not torch.allclose(
            conv(x),
            F.conv2d(
                x, conv.weight, stride=2, groups=conv.groups, padding=conv.kernel_size[0] // 2
            ),
        )
    assert ModelConfig.from_dict({"stages": 5}).padding == "torch"  # runs from before the mode


def test_configs_from_before_this_version_keep_their_meaning() -> None:
    from training.train import TrainConfig

    old = TrainConfig.preset_config("paper").to_dict()
    del old["model"]["padding"], old["sampler"]["draws"], old["loss"]["keras_clip"]
    del old["init_from"]
    cfg = TrainConfig.from_dict(old)
    assert cfg.model.padding == "torch" and cfg.sampler.draws == 1
    assert cfg.loss.keras_clip is False and cfg.init_from is None


def _keras_convlstm_step(x, h, c, wx, wh, b):
    """Keras ConvLSTM2D, one step, written from its documented equations (gates i, f, c, o)."""
    f = wx.shape[0] // 4
    hs = lambda v: torch.clamp(0.2 * v + 0.5, 0, 1)  # noqa: E731  Keras 2 hard_sigmoid
    out = []
    for g in range(4):
        sl = slice(g * f, (g + 1) * f)
        out.append(F.conv2d(x, wx[sl], b[sl]) + F.conv2d(h, wh[sl], padding=1))
    i, fg, cc, o = out
    c2 = hs(fg) * c + hs(i) * torch.tanh(cc)
    return hs(o) * torch.tanh(c2), c2


def test_convlstm_follows_keras_equations() -> None:
    torch.manual_seed(1)
    m = ConvLSTM(5, 4, dropout=0.5, recurrent_dropout=0.5).eval()
    m.bias.data.normal_()
    x = torch.randn(2, 6, 5, 7, 9)
    seq, (_, c) = m(x)
    rh, rc = torch.zeros(2, 4, 5, 7), torch.zeros(2, 4, 5, 7)
    for t in range(6):
        rh, rc = _keras_convlstm_step(x[:, t], rh, rc, m.w_x, m.w_h, m.bias)
        torch.testing.assert_close(seq[:, t], rh)
    torch.testing.assert_close(c, rc)


def test_convlstm_dropout_masks_are_fixed_across_time() -> None:
    torch.manual_seed(2)
    m = ConvLSTM(3, 2, dropout=0.5, recurrent_dropout=0.0).train()
    x = torch.ones(1, 4, 3, 5, 5)
    gx = []
    orig = m._conv
    m._conv = lambda inp, w, mask, pad: gx.append(mask) or orig(inp, w, mask, pad)  # type: ignore
    m(x)
    masks = [g for g in gx if g is not None and g.shape[-3] == 3]
    assert len(masks) == 4 and all(torch.equal(masks[0], k) for k in masks)  # one draw per sequence
    assert 0.2 < (masks[0] == 0).float().mean() < 0.8  # and it drops about half


def test_sequence_and_step_by_step_agree() -> None:
    torch.manual_seed(3)
    m = Policy(PRESETS["tiny"]).eval()
    x = torch.randint(0, 255, (1, 5, 150, 280, 3), dtype=torch.uint8)
    with torch.no_grad():
        seq, _ = m(x)
        state, steps = None, []
        for t in range(5):
            out, state = m(x[:, t : t + 1], state)
            steps.append(out)
    # one step at a time takes other kernels than the sequence (summation order): float32 noise
    torch.testing.assert_close(seq, torch.cat(steps, 1), atol=1e-5, rtol=1e-5)
