"""The seed's Keras network as a specification: every layer, setting and connection accepted.

`dm_train_model.py` builds Input -> TimeDistributed(EfficientNetB0 cut at a stage end) ->
ConvLSTM2D -> TimeDistributed(Flatten) -> five Dense heads -> Concatenate; its stateful twin
differs only in batch shape, `stateful` and plain Dense heads. Anything else, including a
setting csdm would silently ignore, is refused in one line naming the layer and the setting.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field

from training.model import B0_STAGES

MAX_LSTM_FILTERS = 1024  # the seed uses 256; bounds what an import may allocate
# settings that only shape training (initialisers, penalties, constraints) or name things
IGNORED = frozenset(
    {
        "name",
        "trainable",
        "dtype",
        "kernel_initializer",
        "bias_initializer",
        "recurrent_initializer",
        "depthwise_initializer",
        "beta_initializer",
        "gamma_initializer",
        "moving_mean_initializer",
        "moving_variance_initializer",
        "kernel_regularizer",
        "bias_regularizer",
        "recurrent_regularizer",
        "depthwise_regularizer",
        "activity_regularizer",
        "beta_regularizer",
        "gamma_regularizer",
        "kernel_constraint",
        "bias_constraint",
        "recurrent_constraint",
        "depthwise_constraint",
        "beta_constraint",
        "gamma_constraint",
        "unit_forget_bias",
        "momentum",
        "seed",
        "noise_shape",
        "unroll",
    }
)


class KerasImportError(ValueError):
    """A Keras model csdm cannot represent exactly, or a weights file that does not match it."""


def _any(_value: object) -> bool:
    return True


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _last_axis(value: object) -> bool:
    return value in (3, -1, [3], [-1])


def _rate(value: object) -> bool:
    return type(value) in (int, float) and 0.0 <= value < 1.0


def _positive(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def _filters(value: object) -> bool:
    return type(value) is int and 1 <= value <= MAX_LSTM_FILTERS


_WANTED = {
    _any: "any value",
    _is_bool: "true or false",
    _last_axis: "the channel axis (-1)",
    _rate: "a rate in [0, 1)",
    _positive: "a positive number",
    _filters: f"an integer from 1 to {MAX_LSTM_FILTERS}",
}


@dataclass(frozen=True)
class LayerSpec:
    """One layer as the seed's network has it; `name` None accepts any name."""

    name: str | None
    classes: tuple[str, ...]
    inbound: tuple[str, ...]
    settings: dict[str, object] = field(default_factory=dict)  # value, or a predicate


def _same(got: object, want: object) -> bool:
    if callable(want):
        return bool(want(got))
    if isinstance(want, list | tuple):
        return (
            isinstance(got, list | tuple)
            and len(got) == len(want)
            and all(_same(g, w) for g, w in zip(got, want, strict=True))
        )
    return type(got) is type(want) and got == want


def _describe(want: object) -> str:
    return _WANTED.get(want, repr(want)) if callable(want) else repr(want)


class _Near:
    """A float within 1e-6 of `value` (Keras writes the drop-connect ramp's products)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, got: object) -> bool:
        return type(got) is float and abs(got - self.value) < 1e-6

    def __repr__(self) -> str:
        return f"{self.value:g}, the drop-connect ramp of the block before"


class _InputShape:
    """(batch, time, height, width, 3), batch and time free or positive."""

    def __init__(self, height: int, width: int) -> None:
        self.hw = [height, width, 3]

    def __call__(self, v: object) -> bool:
        return (
            isinstance(v, list)
            and len(v) == 5
            and v[2:] == self.hw
            and all(d is None or (type(d) is int and 0 < d <= 1 << 16) for d in v[:2])
        )

    def __repr__(self) -> str:
        return f"[batch, time, {', '.join(map(str, self.hw))}]"


def inbound(layer: dict, where: str) -> tuple[str, ...]:
    """The layers feeding `layer` (Keras 2 JSON: one node of [name, 0, 0, {}] entries)."""
    nodes = layer.get("inbound_nodes")
    name = layer.get("config", {}).get("name")
    if nodes == []:
        return ()
    if not isinstance(nodes, list) or len(nodes) != 1 or not isinstance(nodes[0], list):
        raise KerasImportError(
            f"{where}: layer {name!r} is called {len(nodes or ())} times or in an "
            "unknown form; the seed's network calls each layer once"
        )
    names = []
    for entry in nodes[0]:
        if not (
            isinstance(entry, list)
            and len(entry) == 4
            and isinstance(entry[0], str)
            and entry[1:] == [0, 0, {}]
        ):
            raise KerasImportError(
                f"{where}: layer {name!r} takes input {str(entry)[:80]}; the seed's "
                "network feeds each layer a whole output, with no call arguments"
            )
        names.append(entry[0])
    return tuple(names)


def check(layer: dict, spec: LayerSpec, where: str, config: dict | None = None) -> str:
    """Refuse `layer` unless it is `spec`: class, inputs and every setting; returns its name."""
    cls = layer.get("class_name")
    cfg = layer.get("config") if config is None else config
    if not isinstance(cfg, dict):
        raise KerasImportError(f"{where}: a {cls!r} layer has no config")
    name = cfg.get("name")
    if cls not in spec.classes or (spec.name is not None and name != spec.name):
        raise KerasImportError(
            f"{where}: layer {name!r} is a {cls}; the seed's network has "
            f"{spec.name or 'a'} {'/'.join(spec.classes)} there"
        )
    if config is None and (got := inbound(layer, where)) != spec.inbound:
        raise KerasImportError(
            f"{where}: layer {name!r} takes {list(got)}; the seed's network feeds "
            f"it {list(spec.inbound)}"
        )
    for key, value in cfg.items():
        if key in IGNORED or key in ("layer", "layers", "input_layers", "output_layers"):
            continue
        if key not in spec.settings:
            raise KerasImportError(
                f"{where}: layer {name!r} ({cls}) sets {key}={str(value)[:80]}, "
                "which the seed's network does not have"
            )
        if not _same(value, spec.settings[key]):
            raise KerasImportError(
                f"{where}: layer {name!r} ({cls}) has {key}={str(value)[:80]}; csdm "
                f"represents only {_describe(spec.settings[key])}"
            )
    return name


def _conv(
    name: str,
    src: str,
    filters: int,
    k: int = 1,
    stride: int = 1,
    padding: str = "same",
    activation: str = "linear",
    bias: bool = False,
) -> LayerSpec:
    return LayerSpec(
        name,
        ("Conv2D",),
        (src,),
        {
            "filters": filters,
            "kernel_size": [k, k],
            "strides": [stride, stride],
            "padding": padding,
            "data_format": "channels_last",
            "dilation_rate": [1, 1],
            "groups": 1,
            "activation": activation,
            "use_bias": bias,
        },
    )


def _bn(name: str, src: str) -> LayerSpec:
    return LayerSpec(
        name,
        ("BatchNormalization",),
        (src,),
        {"axis": _last_axis, "epsilon": 0.001, "center": True, "scale": True},
    )


def _swish(name: str, src: str) -> LayerSpec:
    return LayerSpec(name, ("Activation",), (src,), {"activation": "swish"})


def _pad(size: tuple[int, int], k: int) -> list[list[int]]:
    """Keras' `correct_pad`: one less in front on an even side."""
    return [[k // 2 - (1 - n % 2), k // 2] for n in size]


def trunk_layers(
    stages: int, height: int, width: int, drop_connect: float, names: tuple[str, str, str]
) -> list[LayerSpec]:
    """EfficientNet-B0's layers up to the end of `stages`, for frames of height x width.

    `names` are the input, Rescaling and Normalization layers' names, which vary by session.
    """
    inp, rescale, norm = names
    size = (height, width)
    pads = _pad(size, 3)
    size = tuple((n + sum(p) - 3) // 2 + 1 for n, p in zip(size, pads, strict=True))
    out = [
        LayerSpec(
            inp,
            ("InputLayer",),
            (),
            {
                "batch_input_shape": [None, height, width, 3],
                "batch_shape": [None, height, width, 3],
                "sparse": False,
                "ragged": False,
                "optional": False,
            },
        ),
        LayerSpec(rescale, ("Rescaling",), (inp,), {"scale": _positive, "offset": 0.0}),
        LayerSpec(
            norm,
            ("Normalization",),
            (rescale,),
            {"axis": _last_axis, "invert": False, "mean": None, "variance": None},
        ),
        LayerSpec(
            "stem_conv_pad",
            ("ZeroPadding2D",),
            (norm,),
            {"padding": pads, "data_format": "channels_last"},
        ),
        _conv("stem_conv", "stem_conv_pad", B0_STAGES[0][3], 3, 2, "valid"),
        _bn("stem_bn", "stem_conv"),
        _swish("stem_activation", "stem_bn"),
    ]
    prev, b, blocks = "stem_activation", 0, sum(s[5] for s in B0_STAGES)
    for s, (expand, k, stride, cin, cout, n) in enumerate(B0_STAGES[:stages], 1):
        for j in range(n):
            p = f"block{s}{string.ascii_lowercase[j]}_"
            fin, st = (cin, stride) if j == 0 else (cout, 1)
            mid, x = fin * expand, prev
            if expand != 1:
                out += [
                    _conv(p + "expand_conv", x, mid),
                    _bn(p + "expand_bn", p + "expand_conv"),
                    _swish(p + "expand_activation", p + "expand_bn"),
                ]
                x = p + "expand_activation"
            dw = {
                "kernel_size": [k, k],
                "strides": [st, st],
                "padding": "same",
                "data_format": "channels_last",
                "dilation_rate": [1, 1],
                "groups": 1,
                "activation": "linear",
                "use_bias": False,
                "depth_multiplier": 1,
            }
            if st == 2:
                pads = _pad(size, k)
                out.append(
                    LayerSpec(
                        p + "dwconv_pad",
                        ("ZeroPadding2D",),
                        (x,),
                        {"padding": pads, "data_format": "channels_last"},
                    )
                )
                size = tuple((m + sum(q) - k) // 2 + 1 for m, q in zip(size, pads, strict=True))
                x, dw["padding"] = p + "dwconv_pad", "valid"
            out += [
                LayerSpec(p + "dwconv", ("DepthwiseConv2D",), (x,), dw),
                _bn(p + "bn", p + "dwconv"),
                _swish(p + "activation", p + "bn"),
                LayerSpec(
                    p + "se_squeeze",
                    ("GlobalAveragePooling2D",),
                    (p + "activation",),
                    {"data_format": "channels_last", "keepdims": False},
                ),
                LayerSpec(
                    p + "se_reshape",
                    ("Reshape",),
                    (p + "se_squeeze",),
                    {"target_shape": [1, 1, mid]},
                ),
                _conv(
                    p + "se_reduce",
                    p + "se_reshape",
                    max(1, fin // 4),
                    activation="swish",
                    bias=True,
                ),
                _conv(p + "se_expand", p + "se_reduce", mid, activation="sigmoid", bias=True),
                LayerSpec(p + "se_excite", ("Multiply",), (p + "activation", p + "se_expand")),
                _conv(p + "project_conv", p + "se_excite", cout),
                _bn(p + "project_bn", p + "project_conv"),
            ]
            x = p + "project_bn"
            if st == 1 and fin == cout:
                rate = drop_connect * b / blocks
                if rate > 0:
                    out.append(LayerSpec(p + "drop", ("Dropout",), (x,), {"rate": _Near(rate)}))
                    x = p + "drop"
                out.append(LayerSpec(p + "add", ("Add",), (x, prev)))
                x = p + "add"
            prev, b = x, b + 1
    return out


def lstm_spec(src: str) -> LayerSpec:
    """The ConvLSTM2D: 3x3 valid, full sequences forwards; width and dropouts may vary."""
    return LayerSpec(
        None,
        ("ConvLSTM2D",),
        (src,),
        {
            "return_sequences": True,
            "return_state": False,
            "go_backwards": False,
            "stateful": _is_bool,
            "time_major": False,
            "filters": _filters,
            "kernel_size": [3, 3],
            "strides": [1, 1],
            "padding": "valid",
            "data_format": "channels_last",
            "dilation_rate": [1, 1],
            "activation": "tanh",
            "recurrent_activation": "hard_sigmoid",
            "use_bias": True,
            "dropout": _rate,
            "recurrent_dropout": _rate,
        },
    )


def dense_spec(units: int, activation: str) -> LayerSpec:
    """A head's Dense layer (inside a TimeDistributed, or bare in the stateful twin)."""
    return LayerSpec(
        None, ("Dense",), (), {"units": units, "activation": activation, "use_bias": True}
    )


def outer_input(height: int, width: int) -> LayerSpec:
    """The model input: (batch, time, height, width, 3)."""
    shape = _InputShape(height, width)
    return LayerSpec(
        None,
        ("InputLayer",),
        (),
        {
            "batch_input_shape": shape,
            "batch_shape": shape,
            "sparse": False,
            "ragged": False,
            "optional": False,
        },
    )
