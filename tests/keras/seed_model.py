"""The seed's Keras model, built with tf_keras in the test-only venv (never imported by csdm).

Builds `dm_train_model.py`'s network and `tools_create_stateful.py`'s stateful twin, fills every
weight with seeded random values (BatchNorm statistics included; the Normalization layer gets
TF 2.3's stored ImageNet values, std as "variance"), saves both as `tp_save_model` does
(PREFIX.json + PREFIX.h5) and records Keras' outputs on the given frames.

    python seed_model.py FRAMES.npy OUT_DIR [--seed N]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import tf_keras as keras
from tf_keras import layers

N_KEYS, N_CLICKS, N_MOUSE_X, N_MOUSE_Y = 11, 2, 23, 15
IMAGE = (150, 280, 3)
TF23_MEAN, TF23_VARIANCE = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def trunk():
    """`base_model.layers[161]` of EfficientNetB0, as the seed cuts it (block5c_add)."""
    base = keras.applications.EfficientNetB0(
        weights=None, input_shape=IMAGE, include_top=False, drop_connect_rate=0.2
    )
    assert base.layers[161].name == "block5c_add", base.layers[161].name
    return keras.Model(inputs=base.input, outputs=base.layers[161].output)


def heads(x, dense):
    outs = [
        dense(layers.Dense(N_KEYS, activation="sigmoid"))(x),
        dense(layers.Dense(N_CLICKS, activation="sigmoid"))(x),
        dense(layers.Dense(N_MOUSE_X, activation="softmax"))(x),
        dense(layers.Dense(N_MOUSE_Y, activation="softmax"))(x),
        dense(layers.Dense(1, activation="linear"))(x),
    ]
    return layers.concatenate(outs, axis=-1)


def _network(inp, stateful: bool, dense):
    x = layers.TimeDistributed(trunk())(inp)
    x = layers.ConvLSTM2D(
        filters=256,
        kernel_size=(3, 3),
        stateful=stateful,
        return_sequences=True,
        dropout=0.5,
        recurrent_dropout=0.5,
    )(x)
    x = layers.TimeDistributed(layers.Flatten())(x)
    return keras.Model(inp, heads(x, dense))


def training_model(timesteps: int):
    """dm_train_model.py: TimeDistributed trunk, ConvLSTM2D(256), TimeDistributed heads."""
    return _network(
        layers.Input(shape=(timesteps, *IMAGE), name="main_in"), False, layers.TimeDistributed
    )


def stateful_twin():
    """tools_create_stateful.py: batch (1, 1), stateful ConvLSTM2D, plain Dense heads."""
    return _network(layers.Input(batch_shape=(1, 1, *IMAGE), name="main_in"), True, lambda d: d)


def randomise(model, rng):
    """Random values for every weight; statistics and scales kept in sane ranges."""
    values = []
    for w in model.weights:
        name, shape = w.name, tuple(w.shape)
        if name.endswith("normalization/mean:0"):
            v = np.array(TF23_MEAN)
        elif name.endswith("normalization/variance:0"):
            v = np.array(TF23_VARIANCE)
        elif name.endswith("count:0"):
            v = np.array(0)
        elif name.endswith("moving_variance:0"):
            v = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("moving_mean:0"):
            v = rng.normal(0, 0.3, shape)
        elif name.endswith("gamma:0"):
            v = rng.uniform(0.6, 1.4, shape)
        elif name.endswith(("beta:0", "bias:0")):
            v = rng.normal(0, 0.2, shape)
        else:  # kernels: fan-in scaled so activations neither vanish nor blow up
            fan_in = np.prod(shape[:-1]) if "depthwise" not in name else np.prod(shape[:2])
            scale = 0.5 if len(shape) == 2 else 1.5  # heads: unsaturated softmax outputs
            v = rng.normal(0, scale / np.sqrt(fan_in), shape)
        values.append(v.astype(w.dtype.as_numpy_dtype))
    model.set_weights(values)


def tp_save_model(model, prefix: Path) -> None:
    """config.py's tp_save_model, without the optimiser pickle and hyper-parameters."""
    prefix.with_suffix(".json").write_text(model.to_json())
    model.save_weights(str(prefix) + ".h5")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("frames")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    frames = np.load(a.frames).astype(np.float32)  # (T, 150, 280, 3) BGR 0-255, as the seed fed
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = training_model(len(frames))
    randomise(model, np.random.default_rng(a.seed))
    twin = stateful_twin()
    # by index, as tools_create_stateful.py
    for src, dst in zip(model.layers, twin.layers, strict=True):
        dst.set_weights(src.get_weights())
    tp_save_model(model, out / "seed_model")
    tp_save_model(twin, out / "seed_model_stateful")
    seq = model.predict(frames[None], verbose=0)[0]
    step = np.stack([twin.predict(f[None, None], verbose=0)[0, 0] for f in frames])
    np.savez(out / "keras_outputs.npz", sequence=seq, stateful=step)
    (out / "versions.json").write_text(json.dumps({"tf_keras": keras.__version__}))


if __name__ == "__main__":
    main()
