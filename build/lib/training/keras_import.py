"""Import the seed's Keras models (`NAME.json` + `NAME.h5`, as `tp_save_model` wrote them).

Only json and h5py are used: no TensorFlow, and no pickle (`NAME_opt.pkl` is never read).
The architecture JSON says where the trunk was cut, how wide the ConvLSTM is and the order of
the heads; every weight in the h5 is then mapped by layer name onto csdm's `Policy` in its
`keras` padding mode, and a weight left over or missing is an error naming the layer.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from storage.checksums import sha256_file
from training.actions import DEFAULT, ActionSpace
from training.checkpoint import Checkpoint, checkpoint_path, has_checkpoint, write_checkpoint
from training.keras_spec import (
    KerasImportError,
    LayerSpec,
    check,
    dense_spec,
    lstm_spec,
    outer_input,
    trunk_layers,
)
from training.model import B0_STAGES, ModelConfig, Policy
from training.train import TrainConfig

MAX_JSON_BYTES = 4 << 20
HEAD_ACTIVATIONS = {
    "keys": "sigmoid",
    "clicks": "sigmoid",
    "mouse_x": "softmax",
    "mouse_y": "softmax",
    "value": "linear",
}


@dataclass(frozen=True)
class KerasArchitecture:
    """What the architecture JSON says about the network."""

    normalization: str  # the trunk's Normalization layer (its name varies by session)
    scale: float  # the Rescaling before it
    stages: int
    lstm_layer: str
    lstm_filters: int
    dropout: float
    recurrent_dropout: float
    drop_connect: float
    heads: tuple[str, ...]  # Dense layer names in the order the output concatenates them
    stateful: bool


def _cut_stages(cut: object, where: Path) -> int:
    """The number of B0 stages kept when the trunk's output is layer `cut`."""
    for s, (_, _, stride, cin, cout, n) in enumerate(B0_STAGES, 1):
        last = f"block{s}{string.ascii_lowercase[n - 1]}_"
        # a stage ends at its last block's residual add, or at its projection where that
        # block has no residual (csdm's blocks always add it where shapes allow)
        residual = n > 1 or (stride == 1 and cin == cout)
        if cut == last + ("add" if residual else "project_bn"):
            return s
    raise KerasImportError(
        f"{where}: the trunk ends at layer {str(cut)[:80]!r}, not at the end of an "
        "EfficientNet-B0 stage (the seed cuts at block5c_add); csdm cannot represent that cut"
    )


def read_architecture(path: Path, space: ActionSpace = DEFAULT) -> KerasArchitecture:
    """Parse `NAME.json` (the training model or its stateful twin) and check csdm can run it."""
    try:
        if (size := path.stat().st_size) > MAX_JSON_BYTES:
            raise KerasImportError(
                f"{path}: {size} bytes, more than the {MAX_JSON_BYTES} any "
                "Keras architecture of the seed's network needs (~120 KB)"
            )
        arch = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        if isinstance(e, KerasImportError):
            raise
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise KerasImportError(f"{path}: not a Keras architecture JSON ({why})") from None
    try:
        return _architecture(arch, str(path), space)
    except KerasImportError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
        raise KerasImportError(
            f"{path}: not the seed's Keras architecture (no {str(e)[:80]} "
            "where the seed's model has one)"
        ) from None


def _model_config(model: object, what: str, where: str) -> dict:
    if not isinstance(model, dict) or model.get("class_name") not in ("Functional", "Model"):
        raise KerasImportError(f"{where}: {what} is not a Keras functional model")
    cfg = model["config"]
    if not isinstance(cfg.get("layers"), list) or not cfg["layers"]:
        raise KerasImportError(f"{where}: {what} lists no layers")
    return cfg


def _ends(cfg: dict, key: str, name: str, what: str, where: str) -> None:
    if cfg.get(key) != [[name, 0, 0]]:
        raise KerasImportError(
            f"{where}: {what}'s {key} are {str(cfg.get(key))[:80]}; the "
            f"seed's network has only {name!r}"
        )


def _in_order(layers: list, specs: list[LayerSpec], what: str, where: str) -> list[str]:
    """Check `layers` against `specs` one by one; returns their names."""
    names = []
    for i, spec in enumerate(specs):
        if i == len(layers):
            raise KerasImportError(
                f"{where}: {what} ends after layer {names[-1]!r}; the seed's "
                f"network goes on to {spec.name or spec.classes[0]}"
            )
        names.append(check(layers[i], spec, where))
    if len(layers) > len(specs):
        extra = layers[len(specs)]
        name = extra.get("config", {}).get("name") if isinstance(extra, dict) else None
        cls = extra.get("class_name") if isinstance(extra, dict) else type(extra).__name__
        raise KerasImportError(
            f"{where}: layer {name!r} ({cls}) follows {names[-1]!r}, where the seed's {what} ends"
        )
    return names


def _trunk(model: dict, source: str, where: str, space: ActionSpace) -> tuple[int, float, list]:
    """Check the nested EfficientNet; returns its stages, drop-connect rate and layers."""
    cfg = _model_config(model, "the TimeDistributed trunk", where)
    layers = cfg["layers"]
    out = cfg.get("output_layers")
    stages = _cut_stages(out[0][0] if isinstance(out, list) and out and out[0] else out, where)
    drop = next(
        (x["config"].get("rate") for x in layers if x["config"].get("name") == "block2b_drop"), 0.0
    )
    # Keras ramps drop_connect_rate * b / 16 over the blocks; block2b is b = 2
    blocks = sum(s[5] for s in B0_STAGES)
    drop_connect = drop * blocks / 2 if type(drop) is float and 0 <= drop < 1 else 0.0
    names = tuple(x["config"].get("name") for x in layers[:3])
    specs = trunk_layers(stages, space.height, space.width, drop_connect, names)
    got = _in_order(layers, specs, "trunk", where)
    _ends(cfg, "input_layers", got[0], "the trunk", where)
    _ends(cfg, "output_layers", got[-1], "the trunk", where)
    return stages, drop_connect, layers


def _wrapped(layer: dict, src: str, inner: LayerSpec, where: str, bare: bool = True) -> str:
    """Check a TimeDistributed(inner) fed by `src` (or a bare `inner` where `bare`)."""
    if layer.get("class_name") == "TimeDistributed" or not bare:
        name = check(layer, LayerSpec(None, ("TimeDistributed",), (src,)), where)
        wrapped = layer["config"]["layer"]
        check(wrapped, inner, where, config=wrapped.get("config"))
        return name
    return check(layer, replace(inner, inbound=(src,)), where)


def _architecture(arch: object, where: str, space: ActionSpace) -> KerasArchitecture:
    cfg = _model_config(arch, "the file", where)
    layers = cfg["layers"]
    heads = list(space.heads.items())
    if len(layers) < 4:
        raise KerasImportError(
            f"{where}: {len(layers)} layers; the seed's network has {5 + len(heads)}"
        )
    inp = check(layers[0], outer_input(space.height, space.width), where)
    td = check(layers[1], LayerSpec(None, ("TimeDistributed",), (inp,)), where)
    stages, drop_connect, trunk = _trunk(layers[1]["config"]["layer"], td, where, space)
    lstm = check(layers[2], lstm_spec(td), where)
    flatten = LayerSpec(None, ("Flatten",), (), {"data_format": "channels_last"})
    flat = _wrapped(layers[3], lstm, flatten, where, bare=False)
    names = []
    for i, (head, width) in enumerate(heads, 4):
        if i == len(layers):
            raise KerasImportError(f"{where}: the network ends before head {head}")
        dense = dense_spec(width, HEAD_ACTIVATIONS[head])
        if layers[i].get("class_name") not in ("TimeDistributed", "Dense"):
            check(layers[i], replace(dense, classes=("TimeDistributed", "Dense")), where)
        names.append(_wrapped(layers[i], flat, dense, where))
    concat = LayerSpec(None, ("Concatenate",), tuple(names), {"axis": _concat_axis})
    last = check(layers[4 + len(heads)], concat, where) if len(layers) > 4 + len(heads) else None
    if last is None:
        raise KerasImportError(
            f"{where}: the network ends at head {names[-1]!r}; the seed's concatenates its heads"
        )
    if len(layers) > 5 + len(heads):
        extra = layers[5 + len(heads)]
        raise KerasImportError(
            f"{where}: layer {extra.get('config', {}).get('name')!r} "
            f"({extra.get('class_name')}) follows the output {last!r}, where "
            "the seed's network ends"
        )
    _ends(cfg, "input_layers", inp, "the network", where)
    _ends(cfg, "output_layers", last, "the network", where)
    c = layers[2]["config"]
    return KerasArchitecture(
        normalization=trunk[2]["config"]["name"],
        scale=float(trunk[1]["config"]["scale"]),
        stages=stages,
        lstm_layer=lstm,
        lstm_filters=c["filters"],
        dropout=float(c.get("dropout", 0.0)),
        recurrent_dropout=float(c.get("recurrent_dropout", 0.0)),
        drop_connect=round(drop_connect, 6),
        heads=tuple(names),
        stateful=bool(c.get("stateful", False)),
    )


def _concat_axis(value: object) -> bool:
    return value in (-1, 2)  # the last of (batch, time, features)


CONV = (3, 2, 0, 1)  # Keras (kh, kw, in, out) -> torch (out, in, kh, kw)
DEPTHWISE = (2, 3, 0, 1)  # Keras (kh, kw, C, 1) -> torch (C, 1, kh, kw)
MAX_NAMES = 10_000  # layer and weight names per file; the seed's has about 600


def _bn(prefix: str, layer: str) -> list[tuple[str, str, str, tuple | None]]:
    return [
        (f"{prefix}.weight", layer, "gamma", None),
        (f"{prefix}.bias", layer, "beta", None),
        (f"{prefix}.running_mean", layer, "moving_mean", None),
        (f"{prefix}.running_var", layer, "moving_variance", None),
    ]


def _trunk_plan(stages: int) -> list[tuple[str, str, str, tuple | None]]:
    """(csdm state key, Keras layer, Keras weight, axes to transpose) for every trunk tensor."""
    plan = [
        ("trunk.features.0.0.weight", "stem_conv", "kernel", CONV),
        *_bn("trunk.features.0.1", "stem_bn"),
    ]
    for s, (expand, *_, n) in enumerate(B0_STAGES[:stages], 1):
        for j in range(n):
            k = f"block{s}{string.ascii_lowercase[j]}_"
            p = f"trunk.features.{s}.{j}.block"
            i = 0
            if expand != 1:
                plan += [
                    (f"{p}.0.0.weight", k + "expand_conv", "kernel", CONV),
                    *_bn(f"{p}.0.1", k + "expand_bn"),
                ]
                i = 1
            plan += [
                (f"{p}.{i}.0.weight", k + "dwconv", "depthwise_kernel", DEPTHWISE),
                *_bn(f"{p}.{i}.1", k + "bn"),
                (f"{p}.{i + 1}.fc1.weight", k + "se_reduce", "kernel", CONV),
                (f"{p}.{i + 1}.fc1.bias", k + "se_reduce", "bias", None),
                (f"{p}.{i + 1}.fc2.weight", k + "se_expand", "kernel", CONV),
                (f"{p}.{i + 1}.fc2.bias", k + "se_expand", "bias", None),
                (f"{p}.{i + 2}.0.weight", k + "project_conv", "kernel", CONV),
                *_bn(f"{p}.{i + 2}.1", k + "project_bn"),
            ]
    return plan


def _names(attrs: h5py.AttributeManager, key: str, where: Path) -> list[str]:
    """A names attribute, its size checked before it is read."""
    if key not in attrs:
        return []
    if attrs.get_id(key).shape is None or np.prod(attrs.get_id(key).shape) > MAX_NAMES:
        raise KerasImportError(f"{where}: attribute {key} holds more than {MAX_NAMES} names")
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.ravel(attrs[key])]


def read_weights(f: h5py.File, path: Path) -> dict[str, dict[str, h5py.Dataset]]:
    """{layer name: {weight name: dataset}} of an open `save_weights` (or `save`) file; unread.

    Nested models store their layers' weights under the wrapper's group; each weight is keyed
    by its own layer (the second-last part of its name), so the trunk's layers come out flat.
    """
    out: dict[str, dict[str, h5py.Dataset]] = {}
    try:
        root = f.get("model_weights", f)
        if "layer_names" not in root.attrs:
            raise KerasImportError(f"{path}: no layer_names; not a Keras weights file")
        for group in _names(root.attrs, "layer_names", path):
            g = root[group]
            for wn in _names(g.attrs, "weight_names", path):
                parts = wn.split("/")
                layer = parts[-2] if len(parts) > 1 else group
                if layer == group or layer.startswith(f"{group}_"):
                    layer = group  # a wrapper naming its wrapped layer's weights
                if not isinstance(g.get(wn), h5py.Dataset):
                    raise KerasImportError(
                        f"{path}: layer {group!r} lists weight {wn!r} but does not hold it"
                    )
                out.setdefault(layer, {})[parts[-1].split(":")[0]] = g[wn]
    except (OSError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, KerasImportError):
            raise
        raise KerasImportError(f"{path}: unreadable as Keras weights ({e})") from None
    return out


def _take(weights: dict, layer: str, name: str, where: Path, shape: tuple) -> np.ndarray:
    """Read one weight, after checking it has `shape` (None: any) and a float dtype."""
    if layer not in weights:
        raise KerasImportError(f"{where}: layer {layer!r} is missing from the weights file")
    if name not in weights[layer]:
        raise KerasImportError(
            f"{where}: layer {layer!r} has no weight {name!r} (it has {sorted(weights[layer])})"
        )
    ds = weights[layer].pop(name)
    if ds.dtype.kind != "f" or ds.dtype.itemsize > 8:
        raise KerasImportError(f"{where}: layer {layer!r} holds {name} as {ds.dtype}, not floats")
    if tuple(ds.shape) != tuple(shape):
        raise KerasImportError(
            f"{where}: layer {layer!r} holds {name} of shape "
            f"{tuple(ds.shape)}, csdm expects {tuple(shape)}"
        )
    try:
        return np.asarray(ds[()], dtype=np.float32)
    except OSError as e:
        raise KerasImportError(f"{where}: layer {layer!r}: {name} unreadable ({e})") from None


def _keras_shape(shape: torch.Size, axes: tuple | None) -> tuple[int, ...]:
    """The Keras shape that transposes by `axes` to csdm's `shape`."""
    if axes is None:
        return tuple(shape)
    out = [0] * len(axes)
    for j, a in enumerate(axes):
        out[a] = shape[j]
    return tuple(out)


def convert(arch: KerasArchitecture, weights: dict, where: Path, space: ActionSpace = DEFAULT):
    """The csdm state dict and config for `arch`, every Keras weight used exactly once."""
    weights = {k: dict(v) for k, v in weights.items()}
    cfg = ModelConfig(
        stages=arch.stages,
        width=1.0,
        lstm_filters=arch.lstm_filters,
        dropout=arch.dropout,
        recurrent_dropout=arch.recurrent_dropout,
        drop_connect=arch.drop_connect,
        padding="keras",
    )
    model = Policy(cfg, space)
    state = model.state_dict()

    def put(key: str, layer: str, name: str, axes: tuple | None = None) -> None:
        w = _take(weights, layer, name, where, _keras_shape(state[key].shape, axes))
        state[key] = torch.from_numpy(np.ascontiguousarray(w.transpose(axes) if axes else w))

    for key, layer, name, axes in _trunk_plan(arch.stages):
        put(key, layer, name, axes)
    norm = arch.normalization
    mean, var = (
        _take(weights, norm, w, where, (3,)).reshape(1, 3, 1, 1) for w in ("mean", "variance")
    )
    weights[norm].pop("count", None)
    # Rescaling(scale) then (x - mean) / sqrt(variance), on the channels as fed (BGR)
    state["mean"] = torch.from_numpy(mean / arch.scale)
    state["std"] = torch.from_numpy(np.maximum(np.sqrt(var), 1e-7) / arch.scale)
    lstm = arch.lstm_layer
    put("lstm.w_x", lstm, "kernel", CONV)
    put("lstm.w_h", lstm, "recurrent_kernel", CONV)
    put("lstm.bias", lstm, "bias")
    fh, fw = model.feature_hw
    hh, ww, f = fh - 2, fw - 2, arch.lstm_filters
    kernels, biases = [], []
    for name, width in zip(arch.heads, space.heads.values(), strict=True):
        k = _take(weights, name, "kernel", where, (hh * ww * f, width))
        # Keras flattens (h, w, filters); csdm flattens (filters, h, w)
        kernels.append(k.reshape(hh, ww, f, -1).transpose(2, 0, 1, 3).reshape(hh * ww * f, -1))
        biases.append(_take(weights, name, "bias", where, (width,)))
    state["head.weight"] = torch.from_numpy(np.ascontiguousarray(np.concatenate(kernels, 1).T))
    state["head.bias"] = torch.from_numpy(np.concatenate(biases))
    left = {layer: sorted(w) for layer, w in weights.items() if w}
    if left:
        layer, names = next(iter(left.items()))
        raise KerasImportError(
            f"{where}: layer {layer!r} ({', '.join(names)}) has no place in csdm's network"
            + (f", nor do {len(left) - 1} other layers" if len(left) > 1 else "")
        )
    model.load_state_dict(state)
    return model, cfg


def import_keras(prefix: str | Path, run: str | Path, space: ActionSpace = DEFAULT) -> Checkpoint:
    """Write RUN/ckpt.pt from PREFIX.json and PREFIX.h5; returns the checkpoint written."""
    prefix = Path(prefix)
    json_path, h5_path = Path(f"{prefix}.json"), Path(f"{prefix}.h5")
    for p in (json_path, h5_path):
        if not p.is_file():
            raise KerasImportError(
                f"{p}: missing; `tp_save_model` writes PREFIX.json and PREFIX.h5 side by side"
            )
    if has_checkpoint(run):
        raise FileExistsError(f"{run}: already holds a checkpoint; import into a new --run")
    arch = read_architecture(json_path, space)
    try:
        with h5py.File(h5_path, "r") as f:
            model, mcfg = convert(arch, read_weights(f, h5_path), h5_path, space)
    except OSError as e:
        raise KerasImportError(f"{h5_path}: unreadable as Keras weights ({e})") from None
    cfg = replace(TrainConfig.preset_config("paper"), model=mcfg)
    source = {
        "format": "keras-h5",
        "name": prefix.name,
        "stateful": arch.stateful,
        "files": {
            p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in (json_path, h5_path)
        },
    }
    ckpt = Checkpoint(
        model.state_dict(),
        cfg.to_dict(),
        space.to_dict(),
        data={"root": None, "revision": None},
        source=source,
    )
    write_checkpoint(checkpoint_path(run), ckpt)
    return ckpt
