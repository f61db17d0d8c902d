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
from training.checkpoint import CKPT, Checkpoint, write_checkpoint
from training.model import B0_STAGES, ModelConfig, Policy
from training.train import TrainConfig

HEAD_ACTIVATIONS = {"keys": "sigmoid", "clicks": "sigmoid", "mouse_x": "softmax",
                    "mouse_y": "softmax", "value": "linear"}  # fmt: skip


class KerasImportError(ValueError):
    """A Keras model csdm cannot represent exactly, or a weights file that does not match it."""


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


def _layers(cfg: dict) -> list[dict]:
    return cfg.get("config", {}).get("layers", [])


def _class(layer: dict) -> str:
    return layer.get("class_name", "")


def _inbound(layer: dict) -> list[str]:
    """Names of the layers feeding `layer`, in order (Keras 2 JSON: [[[name, 0, 0, {}], ...]])."""
    nodes = layer.get("inbound_nodes") or []
    if not nodes:
        return []
    return [x[0] for x in nodes[0]]


def _dense_of(layer: dict) -> dict | None:
    """The Dense config of a Dense layer or of a TimeDistributed(Dense)."""
    if _class(layer) == "Dense":
        return layer["config"]
    inner = layer.get("config", {}).get("layer", {})
    if _class(layer) == "TimeDistributed" and _class(inner) == "Dense":
        return inner["config"]
    return None


def _cut_stages(cut: str, where: Path) -> int:
    """The number of B0 stages kept when the trunk's output is layer `cut`."""
    for s, (_, _, stride, cin, cout, n) in enumerate(B0_STAGES, 1):
        last = f"block{s}{string.ascii_lowercase[n - 1]}_"
        # a stage ends at its last block's residual add, or at its projection where that
        # block has no residual (csdm's blocks always add it where shapes allow)
        residual = n > 1 or (stride == 1 and cin == cout)
        if cut == last + ("add" if residual else "project_bn"):
            return s
    raise KerasImportError(
        f"{where}: the trunk ends at layer {cut!r}, not at the end of an EfficientNet-B0 stage "
        "(the seed cuts at block5c_add); csdm cannot represent that cut"
    )


def read_architecture(path: Path, space: ActionSpace = DEFAULT) -> KerasArchitecture:
    """Parse `NAME.json` (the training model or its stateful twin) and check csdm can run it."""
    try:
        arch = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise KerasImportError(f"{path}: not a Keras architecture JSON ({e})") from None
    try:
        return _architecture(arch, path, space)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise KerasImportError(f"{path}: not the seed's Keras architecture (no {e} where the "
                               "seed's model has one)") from None  # fmt: skip


def _architecture(arch: dict, path: Path, space: ActionSpace) -> KerasArchitecture:
    layers = _layers(arch)
    by_name = {x.get("config", {}).get("name", x.get("name")): x for x in layers}
    trunk = [x for x in layers if _class(x) == "TimeDistributed"
             and _class(x["config"]["layer"]) in ("Functional", "Model")]  # fmt: skip
    lstm = [x for x in layers if _class(x) == "ConvLSTM2D"]
    if len(trunk) != 1 or len(lstm) != 1:
        raise KerasImportError(
            f"{path}: expected one TimeDistributed EfficientNet and one ConvLSTM2D, found "
            f"{len(trunk)} and {len(lstm)}; not the seed's architecture"
        )
    inner = trunk[0]["config"]["layer"]
    inner_layers = _layers(inner)
    outputs = inner["config"]["output_layers"]
    if len(outputs) != 1:
        raise KerasImportError(f"{path}: the trunk has {len(outputs)} outputs, expected one")
    cut = outputs[0][0]
    stages = _cut_stages(cut, path)
    shape = next((x["config"].get("batch_input_shape", x["config"].get("batch_shape"))
                  for x in inner_layers if _class(x) == "InputLayer"), None)  # fmt: skip
    if shape is None or tuple(shape[1:]) != (space.height, space.width, 3):
        raise KerasImportError(
            f"{path}: the trunk takes frames of shape {shape}, csdm's action space "
            f"(None, {space.height}, {space.width}, 3)"
        )
    norm = [x["config"]["name"] for x in inner_layers if _class(x) == "Normalization"]
    rescale = [x["config"] for x in inner_layers if _class(x) == "Rescaling"]
    if len(norm) != 1 or len(rescale) != 1 or rescale[0].get("offset", 0.0) != 0.0:
        raise KerasImportError(f"{path}: the trunk should start with one Rescaling (no offset) "
                               "and one Normalization layer, as EfficientNetB0 does")  # fmt: skip
    stem = next((x for x in inner_layers if x["config"]["name"] == "stem_conv"), None)
    if stem is None or stem["config"]["filters"] != B0_STAGES[0][3]:
        raise KerasImportError(f"{path}: the trunk's stem_conv is not EfficientNet-B0's (32 "
                               "filters); only B0 at width 1.0 is supported")  # fmt: skip
    drops = [x["config"] for x in inner_layers
             if x["config"]["name"] == "block2b_drop"]  # fmt: skip
    # Keras ramps drop_connect_rate * b / 16 over the blocks; block2b is b = 2
    blocks = sum(s[5] for s in B0_STAGES)
    drop_connect = drops[0]["rate"] * blocks / 2 if drops else 0.0
    c = lstm[0]["config"]
    wanted = {"kernel_size": [3, 3], "strides": [1, 1], "padding": "valid",
              "activation": "tanh", "recurrent_activation": "hard_sigmoid",
              "data_format": "channels_last", "use_bias": True}  # fmt: skip
    for k, v in wanted.items():
        got = list(c[k]) if isinstance(c.get(k), list | tuple) else c.get(k)
        if k in c and got != v:
            raise KerasImportError(f"{path}: layer {c['name']!r} has {k}={got!r}; csdm's "
                                   f"ConvLSTM needs {v!r}")  # fmt: skip
    concat = [x for x in layers if _class(x) == "Concatenate"]
    if len(concat) != 1:
        raise KerasImportError(f"{path}: expected one Concatenate of the heads, found "
                               f"{len(concat)}")  # fmt: skip
    heads = tuple(_inbound(concat[0]))
    for (head, width), name in zip(space.heads.items(), heads, strict=False):
        dense = _dense_of(by_name.get(name, {}))
        if dense is None:
            raise KerasImportError(f"{path}: head {head} should be a Dense layer, "
                                   f"layer {name!r} is not")  # fmt: skip
        if dense["units"] != width or dense["activation"] != HEAD_ACTIVATIONS[head]:
            raise KerasImportError(
                f"{path}: layer {name!r} has {dense['units']} {dense['activation']} units; "
                f"head {head} needs {width} {HEAD_ACTIVATIONS[head]}"
            )
    if len(heads) != len(space.heads):
        raise KerasImportError(f"{path}: the output concatenates {len(heads)} layers, csdm's "
                               f"action space has {len(space.heads)} heads")  # fmt: skip
    return KerasArchitecture(
        normalization=norm[0],
        scale=float(rescale[0]["scale"]),
        stages=stages,
        lstm_layer=c["name"],
        lstm_filters=c["filters"],
        dropout=float(c.get("dropout", 0.0)),
        recurrent_dropout=float(c.get("recurrent_dropout", 0.0)),
        drop_connect=round(drop_connect, 6),
        heads=heads,
        stateful=bool(c.get("stateful", False)),
    )


def read_weights(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name: array}} from a Keras `save_weights` (or `save`) h5 file.

    Nested models store their layers' weights under the wrapper's group; each weight is keyed
    by its own layer (the second-last part of its name), so the trunk's layers come out flat.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f.get("model_weights", f)
            if "layer_names" not in root.attrs:
                raise KerasImportError(f"{path}: no layer_names; not a Keras weights file")
            for group in root.attrs["layer_names"]:
                group = group.decode() if isinstance(group, bytes) else str(group)
                g = root[group]
                for wn in g.attrs.get("weight_names", []):
                    wn = wn.decode() if isinstance(wn, bytes) else str(wn)
                    parts = wn.split("/")
                    layer = parts[-2] if len(parts) > 1 else group
                    if layer == group or layer.startswith(f"{group}_"):
                        layer = group  # a wrapper naming its wrapped layer's weights
                    if wn not in g:
                        raise KerasImportError(f"{path}: layer {group!r} lists weight {wn!r} "
                                               "but does not hold it")  # fmt: skip
                    out.setdefault(layer, {})[parts[-1].split(":")[0]] = np.asarray(g[wn])
    except (OSError, KeyError, TypeError) as e:
        raise KerasImportError(f"{path}: unreadable as Keras weights ({e})") from None
    return out


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)


def _depthwise(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (kh, kw, C, 1) -> (C, 1, kh, kw)


def _bn(prefix: str, layer: str) -> list[tuple[str, str, str, object]]:
    return [(f"{prefix}.weight", layer, "gamma", None), (f"{prefix}.bias", layer, "beta", None),
            (f"{prefix}.running_mean", layer, "moving_mean", None),
            (f"{prefix}.running_var", layer, "moving_variance", None)]  # fmt: skip


def _trunk_plan(stages: int) -> list[tuple[str, str, str, object]]:
    """(csdm state key, Keras layer, Keras weight, transform) for every trunk tensor."""
    plan = [("trunk.features.0.0.weight", "stem_conv", "kernel", _conv),
            *_bn("trunk.features.0.1", "stem_bn")]  # fmt: skip
    for s, (expand, *_, n) in enumerate(B0_STAGES[:stages], 1):
        for j in range(n):
            k = f"block{s}{string.ascii_lowercase[j]}_"
            p = f"trunk.features.{s}.{j}.block"
            i = 0
            if expand != 1:
                plan += [(f"{p}.0.0.weight", k + "expand_conv", "kernel", _conv),
                         *_bn(f"{p}.0.1", k + "expand_bn")]  # fmt: skip
                i = 1
            plan += [
                (f"{p}.{i}.0.weight", k + "dwconv", "depthwise_kernel", _depthwise),
                *_bn(f"{p}.{i}.1", k + "bn"),
                (f"{p}.{i + 1}.fc1.weight", k + "se_reduce", "kernel", _conv),
                (f"{p}.{i + 1}.fc1.bias", k + "se_reduce", "bias", None),
                (f"{p}.{i + 1}.fc2.weight", k + "se_expand", "kernel", _conv),
                (f"{p}.{i + 1}.fc2.bias", k + "se_expand", "bias", None),
                (f"{p}.{i + 2}.0.weight", k + "project_conv", "kernel", _conv),
                *_bn(f"{p}.{i + 2}.1", k + "project_bn"),
            ]
    return plan


def _take(weights: dict, layer: str, name: str, where: Path) -> np.ndarray:
    if layer not in weights:
        raise KerasImportError(f"{where}: layer {layer!r} is missing from the weights file")
    if name not in weights[layer]:
        raise KerasImportError(f"{where}: layer {layer!r} has no weight {name!r} "
                               f"(it has {sorted(weights[layer])})")  # fmt: skip
    return weights[layer].pop(name)


def convert(arch: KerasArchitecture, weights: dict, where: Path, space: ActionSpace = DEFAULT):
    """The csdm state dict and config for `arch`, every Keras weight used exactly once."""
    weights = {k: dict(v) for k, v in weights.items()}
    cfg = ModelConfig(stages=arch.stages, width=1.0, lstm_filters=arch.lstm_filters,
                      dropout=arch.dropout, recurrent_dropout=arch.recurrent_dropout,
                      drop_connect=arch.drop_connect, padding="keras")  # fmt: skip
    model = Policy(cfg, space)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def put(key: str, value: np.ndarray, layer: str) -> None:
        t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if t.shape != state[key].shape:
            raise KerasImportError(f"{where}: layer {layer!r} holds {tuple(t.shape)} for "
                                   f"{key}, csdm expects {tuple(state[key].shape)}")  # fmt: skip
        state[key] = t

    for key, layer, name, fn in _trunk_plan(arch.stages):
        w = _take(weights, layer, name, where)
        put(key, fn(w) if fn else w, layer)
    norm = arch.normalization
    mean = _take(weights, norm, "mean", where).reshape(1, 3, 1, 1)
    var = _take(weights, norm, "variance", where).reshape(1, 3, 1, 1)
    weights[norm].pop("count", None)
    # Rescaling(scale) then (x - mean) / sqrt(variance), on the channels as fed (BGR)
    put("mean", mean / arch.scale, norm)
    put("std", np.maximum(np.sqrt(var), 1e-7) / arch.scale, norm)
    lstm = arch.lstm_layer
    put("lstm.w_x", _conv(_take(weights, lstm, "kernel", where)), lstm)
    put("lstm.w_h", _conv(_take(weights, lstm, "recurrent_kernel", where)), lstm)
    put("lstm.bias", _take(weights, lstm, "bias", where), lstm)
    fh, fw = model.feature_hw
    hh, ww, f = fh - 2, fw - 2, arch.lstm_filters
    kernels, biases = [], []
    for name in arch.heads:
        k = _take(weights, name, "kernel", where)
        if k.shape[0] != hh * ww * f:
            raise KerasImportError(f"{where}: layer {name!r} takes {k.shape[0]} inputs, the "
                                   f"ConvLSTM gives {hh}x{ww}x{f}")  # fmt: skip
        # Keras flattens (h, w, filters); csdm flattens (filters, h, w)
        kernels.append(k.reshape(hh, ww, f, -1).transpose(2, 0, 1, 3).reshape(hh * ww * f, -1))
        biases.append(_take(weights, name, "bias", where))
    put("head.weight", np.concatenate(kernels, 1).T, arch.heads[0])
    put("head.bias", np.concatenate(biases), arch.heads[0])
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
            raise KerasImportError(f"{p}: missing; `tp_save_model` writes PREFIX.json and "
                                   "PREFIX.h5 side by side")  # fmt: skip
    if (Path(run) / CKPT).exists():
        raise FileExistsError(f"{run}: already holds a checkpoint; import into a new --run")
    arch = read_architecture(json_path, space)
    model, mcfg = convert(arch, read_weights(h5_path), h5_path, space)
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
    ckpt = Checkpoint(model.state_dict(), cfg.to_dict(), space.to_dict(),
                      data={"root": None, "revision": None}, source=source)  # fmt: skip
    write_checkpoint(Path(run) / CKPT, ckpt)
    return ckpt
