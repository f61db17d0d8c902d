"""The paper's policy: a truncated EfficientNet-B0 trunk, a ConvLSTM and five action heads.

The trunk is written out here because torchvision has no CPU build matching our torch pin. Its
module names follow torchvision's `efficientnet_b0`, so an ImageNet state dict saved from
torchvision loads with `load_trunk_weights` (padding mode `torch`); the seed's Keras weights
load with `training.keras_import` (mode `keras`). The seed cuts Keras' EfficientNetB0 at
`layers[161]`, the output of block 5c: stages 1-5 of 7 (112 channels at stride 16, a 10x18 map
for a 150x280 frame). With a 256-filter ConvLSTM and the heads that is 6.0M parameters, the
paper's figure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.actions import DEFAULT, ActionSpace

# torchvision's EfficientNet-B0 stages: (expand ratio, kernel, stride, in, out, blocks).
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
PADDINGS = ("keras", "torch")


@dataclass(frozen=True)
class ModelConfig:
    """Network shape; `paper` is the published one, `tiny` trains in seconds on a CPU."""

    stages: int = 5  # EfficientNet-B0 stages kept (the seed's layers[161] cut)
    width: float = 1.0  # channel multiplier on B0's widths
    lstm_filters: int = 256
    dropout: float = 0.5  # ConvLSTM input dropout, as the seed's `drop` models
    recurrent_dropout: float = 0.5
    drop_connect: float = 0.2  # stochastic depth, Keras' drop_connect_rate
    # "keras": stride-2 convolutions padded as Keras pads them, channels as captured (BGR),
    # as the seed's model ran; "torch": symmetric padding and RGB, as torchvision's weights want
    padding: str = "keras"

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise ValueError(f"padding {self.padding!r}: use one of {', '.join(PADDINGS)}")

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of `to_dict`; runs from before the padding mode were trained with `torch`."""
        return cls(**{"padding": "torch", **d})


PRESETS = {
    "paper": ModelConfig(),
    "tiny": ModelConfig(stages=4, width=0.25, lstm_filters=8),
}


def _width(c: int, width: float) -> int:
    """Channels scaled and rounded to a multiple of 8, as EfficientNet does."""
    if width == 1.0:
        return c
    return max(8, int(c * width + 4) // 8 * 8)


class StridedConv(nn.Conv2d):
    """A bias-free convolution; at stride 2 in `keras` mode padded as Keras' `correct_pad` does.

    Keras pads (k//2 - 1, k//2) on an even side and (k//2, k//2) on an odd one, then convolves
    without padding; torch pads k//2 on both sides. Same weights, other outputs.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int, keras: bool):
        asym = keras and stride == 2
        super().__init__(
            cin, cout, k, stride, 0 if asym else (k - 1) // 2, groups=groups, bias=False
        )
        self.asym = asym

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad as configured, then convolve."""
        if self.asym:
            k, (h, w) = self.kernel_size[0] // 2, x.shape[-2:]
            x = F.pad(x, (k - 1 + w % 2, k, k - 1 + h % 2, k))
        return super().forward(x)


def _conv_bn(
    cin: int,
    cout: int,
    k: int,
    stride: int = 1,
    groups: int = 1,
    act: bool = True,
    keras: bool = False,
):
    layers: list[nn.Module] = [
        StridedConv(cin, cout, k, stride, groups, keras),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),  # Keras' BN momentum 0.99
    ]
    if act:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention, torchvision's layout (fc1, fc2)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale channels by a gate computed from their global average."""
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(s))))


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation and stochastic depth."""

    def __init__(
        self, expand: int, k: int, stride: int, cin: int, cout: int, sd: float, keras: bool
    ) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, mid, 1)]
        layers += [
            _conv_bn(mid, mid, k, stride, groups=mid, keras=keras),
            SqueezeExcitation(mid, max(1, cin // 4)),
            _conv_bn(mid, cout, 1, act=False),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.sd = sd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output, plus the input where shapes allow."""
        y = self.block(x)
        if not self.residual:
            return y
        if self.training and self.sd > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.sd
            y = y * keep.to(y.dtype) / (1.0 - self.sd)
        return x + y


class Trunk(nn.Module):
    """EfficientNet-B0 cut after `stages` stages; `features` indices match torchvision."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.width
        stages = B0_STAGES[: cfg.stages]
        total = sum(s[5] for s in B0_STAGES)  # drop rates ramp over the full network, as Keras
        keras = cfg.padding == "keras"
        feats: list[nn.Module] = [_conv_bn(3, _width(32, w), 3, 2, keras=keras)]
        b = 0
        for expand, k, stride, cin, cout, n in stages:
            blocks = []
            for i in range(n):
                c_in = _width(cin if i == 0 else cout, w)
                blocks.append(
                    MBConv(
                        expand,
                        k,
                        stride if i == 0 else 1,
                        c_in,
                        _width(cout, w),
                        cfg.drop_connect * b / total,
                        keras,
                    )
                )
                b += 1
            feats.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*feats)
        self.out_channels = _width(stages[-1][4], w)
        self.stride = 2 * math.prod(s[2] for s in stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, H, W) normalised -> feature map (N, C, H/16, W/16)."""
        return self.features(x)


def _hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 2's hard sigmoid (slope 0.2), ConvLSTM2D's default recurrent activation."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class ConvLSTM(nn.Module):
    """Keras ConvLSTM2D semantics: valid 3x3 input conv, same recurrent conv, gates i f c o.

    Dropout masks are drawn once per sequence and per gate, as Keras does, which a grouped
    convolution over the four masked copies computes at the cost of one convolution.
    """

    def __init__(self, cin: int, filters: int, dropout: float, recurrent_dropout: float) -> None:
        super().__init__()
        self.filters = filters
        self.dropout, self.recurrent_dropout = dropout, recurrent_dropout
        self.w_x = nn.Parameter(torch.empty(4 * filters, cin, 3, 3))
        self.w_h = nn.Parameter(torch.empty(4 * filters, filters, 3, 3))
        self.bias = nn.Parameter(torch.zeros(4 * filters))
        nn.init.xavier_uniform_(self.w_x)
        for g in range(4):  # Keras: orthogonal recurrent kernel, unit forget bias
            nn.init.orthogonal_(self.w_h.data[g * filters : (g + 1) * filters].view(filters, -1))
        self.bias.data[filters : 2 * filters] = 1.0

    def _masks(self, x: torch.Tensor, p: float) -> torch.Tensor | None:
        if not self.training or p == 0:
            return None
        keep = torch.rand(4, *x.shape, device=x.device) >= p
        return keep.to(x.dtype) / (1.0 - p)

    @staticmethod
    def _conv(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, pad: int):
        if mask is None:
            return F.conv2d(x, w, padding=pad)
        stacked = (mask * x.unsqueeze(0)).permute(1, 0, 2, 3, 4).flatten(1, 2)
        return F.conv2d(stacked, w, padding=pad, groups=4)

    def initial_state(self, batch: int, h: int, w: int, device=None, dtype=None):
        """Zero (h, c) for a `(batch, C, h, w)` input map."""
        shape = (batch, self.filters, h - 2, w - 2)
        z = torch.zeros(shape, device=device, dtype=dtype)
        return z, z.clone()

    def forward(self, x: torch.Tensor, state=None):
        """x: (B, T, C, H, W) -> (B, T, F, H-2, W-2), final (h, c)."""
        b, t, _, hh, ww = x.shape
        # the state stays float32 under autocast (96 steps of bf16 accumulation drift)
        h, cell = state if state is not None else self.initial_state(b, hh, ww, x.device)
        mx = self._masks(x[:, 0], self.dropout)
        if mx is None:  # one convolution over every time step at once
            gx = F.conv2d(x.flatten(0, 1), self.w_x, self.bias).unflatten(0, (b, t))
        else:
            gx = torch.stack([self._conv(x[:, i], self.w_x, mx, 0) for i in range(t)], 1)
            gx = gx + self.bias.view(1, 1, -1, 1, 1)
        mh = self._masks(h, self.recurrent_dropout)
        out = []
        for i in range(t):
            g = (gx[:, i] + self._conv(h, self.w_h, mh, 1)).float()
            gi, gf, gc, go = g.chunk(4, 1)
            cell = _hard_sigmoid(gf) * cell + _hard_sigmoid(gi) * torch.tanh(gc)
            h = _hard_sigmoid(go) * torch.tanh(cell)
            out.append(h)
        return torch.stack(out, 1), (h, cell)


class Policy(nn.Module):
    """Frames (B, T, H, W, 3) BGR 0-255 -> logits (B, T, n_outputs), recurrent state."""

    def __init__(self, cfg: ModelConfig = PRESETS["paper"], space: ActionSpace = DEFAULT) -> None:
        super().__init__()
        self.cfg, self.space = cfg, space
        self.trunk = Trunk(cfg)
        self.lstm = ConvLSTM(
            self.trunk.out_channels, cfg.lstm_filters, cfg.dropout, cfg.recurrent_dropout
        )
        fh, fw = self.feature_hw
        self.head = nn.Linear(cfg.lstm_filters * (fh - 2) * (fw - 2), space.n_outputs)
        # per input channel (BGR, as captured) on the 0-255 scale; `csdm import-keras` sets
        # them from the file, whose TF 2.3 Normalization layer held other values
        self.register_buffer("mean", 255 * torch.tensor(IMAGENET_MEAN[::-1]).view(1, 3, 1, 1))
        self.register_buffer("std", 255 * torch.tensor(IMAGENET_STD[::-1]).view(1, 3, 1, 1))

    @property
    def feature_hw(self) -> tuple[int, int]:
        """Height and width of the trunk's output map."""
        h, w = self.space.height, self.space.width
        for _ in range(int(math.log2(self.trunk.stride))):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def state_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape of each of the ConvLSTM's h and c."""
        fh, fw = self.feature_hw
        return (batch, self.cfg.lstm_filters, fh - 2, fw - 2)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalise on the device and run the trunk (on RGB in `torch` mode, as captured else)."""
        b, t = frames.shape[:2]
        x = frames.flatten(0, 1).permute(0, 3, 1, 2).to(self.mean.dtype)
        x = (x - self.mean) / self.std
        if self.cfg.padding == "torch":
            x = x.flip(1)  # BGR -> RGB for torchvision's ImageNet weights
        return self.trunk(x.contiguous()).unflatten(0, (b, t))

    def forward(self, frames: torch.Tensor, state=None):
        """Logits for every frame, and the state after the last one."""
        seq, state = self.lstm(self.features(frames), state)
        return self.head(seq.flatten(2)), state


def split_heads(out: torch.Tensor, space: ActionSpace = DEFAULT) -> dict[str, torch.Tensor]:
    """Slice the last axis of logits or probabilities into named heads."""
    return dict(zip(space.heads, out.split(list(space.heads.values()), -1), strict=True))


def probabilities(logits: torch.Tensor, space: ActionSpace = DEFAULT) -> torch.Tensor:
    """The seed's output activations: sigmoid keys and clicks, softmax mouse, linear value."""
    h = split_heads(logits, space)
    return torch.cat(
        [
            torch.sigmoid(h["keys"]),
            torch.sigmoid(h["clicks"]),
            torch.softmax(h["mouse_x"], -1),
            torch.softmax(h["mouse_y"], -1),
            h["value"],
        ],
        -1,
    )


def count_parameters(model: nn.Module) -> int:
    """Trainable and frozen parameters together."""
    return sum(p.numel() for p in model.parameters())


def load_trunk_weights(model: Policy, path: str | Path) -> list[str]:
    """Load a torchvision `efficientnet_b0` state dict file into the trunk; returns unused keys."""
    if model.cfg.padding != "torch":
        raise ValueError(
            f"{path}: torchvision weights expect symmetric padding and RGB input; "
            "train with --padding torch to use them"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    mine = model.trunk.state_dict()
    used = {k: v for k, v in state.items() if k in mine and v.shape == mine[k].shape}
    missing = [k for k in mine if k not in used]
    if missing:
        raise ValueError(
            f"{path}: not an EfficientNet-B0 state dict for this trunk, missing {missing[:3]}..."
        )
    model.trunk.load_state_dict(used)
    return sorted(set(state) - set(used))
