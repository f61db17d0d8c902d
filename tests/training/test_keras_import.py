"""`csdm import-keras` against real Keras: the seed's network built with tf_keras, random weights.

tf_keras runs in its own venv (tests/keras/env.py), never in csdm's. Keras' outputs on 16
realistic frames are the reference; csdm must match them within 1e-4 on all 52 outputs, in
torch sequence mode and in the exported ONNX step loop.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from training.checkpoint import load_checkpoint
from training.export import export, onnx_step_loop, policy_from_checkpoint
from training.keras_import import KerasImportError, import_keras
from training.model import Policy, probabilities

pytestmark = pytest.mark.slow
CSDM = str(Path(sys.executable).with_name("csdm"))
TOL = 1e-4


def _frames(keras_model: Path) -> np.ndarray:
    return np.load(keras_model / "frames.npy")


def _sequence(model: Policy, frames: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(frames)[None])
    return probabilities(logits)[0].numpy()


@pytest.fixture(scope="module")
def imported(keras_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("imported") / "run"
    r = subprocess.run(
        [CSDM, "import-keras", str(keras_model / "seed_model"), "--run", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "csdm export" in r.stdout and "--init-from" in r.stdout
    return run


def test_sequence_mode_matches_keras(keras_model: Path, imported: Path) -> None:
    want = np.load(keras_model / "keras_outputs.npz")["sequence"]
    model = policy_from_checkpoint(load_checkpoint(imported))
    got = _sequence(model, _frames(keras_model))
    assert got.shape == want.shape == (16, 52)
    assert np.abs(got - want).max() < TOL
    # the test can fail: the same weights with torch's padding and normalisation are far off
    torch_mode = Policy(replace(model.cfg, padding="torch"), model.space).eval()
    torch_mode.load_state_dict(model.state_dict())
    assert np.abs(_sequence(torch_mode, _frames(keras_model)) - want).max() > 100 * TOL


def test_onnx_step_loop_matches_keras(keras_model: Path, imported: Path, tmp_path: Path) -> None:
    want = np.load(keras_model / "keras_outputs.npz")["sequence"]
    d = export(imported, tmp_path / "export")
    assert d["training"]["source"]["format"] == "keras-h5"
    out = onnx_step_loop(tmp_path / "export", _frames(keras_model))
    got = np.concatenate([out[o["name"]] for o in d["outputs"]], -1)
    assert np.abs(got - want).max() < TOL


def test_the_stateful_twin_imports_to_the_same_network(
    keras_model: Path, imported: Path, tmp_path: Path
) -> None:
    twin = import_keras(keras_model / "seed_model_stateful", tmp_path / "twin")
    assert twin.source["stateful"] is True
    main = load_checkpoint(imported)
    assert twin.model.keys() == main.model.keys()
    assert all(torch.equal(twin.model[k], main.model[k]) for k in main.model)
    want = np.load(keras_model / "keras_outputs.npz")["stateful"]  # Keras, frame by frame
    got = _sequence(policy_from_checkpoint(twin), _frames(keras_model))
    assert np.abs(got - want).max() < TOL


def test_normalisation_comes_from_the_file(imported: Path) -> None:
    state = load_checkpoint(imported).model
    # TF 2.3 stored the ImageNet std as "variance": the layer divides by its square root
    assert torch.allclose(state["std"].flatten(), 255 * torch.tensor([0.229, 0.224, 0.225]) ** 0.5)
    assert torch.allclose(state["mean"].flatten(), 255 * torch.tensor([0.485, 0.456, 0.406]))


def _copy(keras_model: Path, tmp_path: Path) -> Path:
    for suffix in (".json", ".h5"):
        shutil.copy(keras_model / f"seed_model{suffix}", tmp_path / f"m{suffix}")
    return tmp_path / "m"


def test_a_missing_layer_is_named(keras_model: Path, tmp_path: Path) -> None:
    prefix = _copy(keras_model, tmp_path)
    with h5py.File(f"{prefix}.h5", "r+") as f:
        g = f["time_distributed"]
        names = [n for n in g.attrs["weight_names"] if not str(n).startswith("block3b_se_reduce/")]
        g.attrs["weight_names"] = np.array([str(n).encode() for n in names])
    with pytest.raises(KerasImportError, match=r"m\.h5: layer 'block3b_se_reduce' is missing"):
        import_keras(prefix, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_unknown_layer_is_named(keras_model: Path, tmp_path: Path) -> None:
    prefix = _copy(keras_model, tmp_path)
    with h5py.File(f"{prefix}.h5", "r+") as f:
        names = [n if isinstance(n, bytes) else n.encode() for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = np.array([*names, b"aux_dense"])
        g = f.create_group("aux_dense")
        g.create_dataset("aux_dense/kernel:0", data=np.zeros((4, 4), np.float32))
        g.attrs["weight_names"] = [b"aux_dense/kernel:0"]
    with pytest.raises(KerasImportError, match=r"layer 'aux_dense' \(kernel\) has no place"):
        import_keras(prefix, tmp_path / "run")


def test_the_cut_is_read_from_the_json(keras_model: Path, tmp_path: Path) -> None:
    prefix = _copy(keras_model, tmp_path)
    arch = json.loads(Path(f"{prefix}.json").read_text())
    trunk = next(x for x in arch["config"]["layers"] if x["class_name"] == "TimeDistributed")
    for cut in ("block5b_add", "block5c_project_bn"):  # inside stage 5, or before its add
        trunk["config"]["layer"]["config"]["output_layers"] = [[cut, 0, 0]]
        Path(f"{prefix}.json").write_text(json.dumps(arch))
        with pytest.raises(KerasImportError, match=f"ends at layer '{cut}'"):
            import_keras(prefix, tmp_path / "run")
    trunk["config"]["layer"]["config"]["output_layers"] = [["block4c_add", 0, 0]]
    Path(f"{prefix}.json").write_text(json.dumps(arch))
    # a cut one stage earlier is representable, but this file's trunk goes on past it
    with pytest.raises(
        KerasImportError,
        match=r"'block5a_expand_conv' \(Conv2D\) follows "
        "'block4c_add', where the seed's trunk ends",
    ):
        import_keras(prefix, tmp_path / "run")


def test_cli_errors_name_the_file(tmp_path: Path) -> None:
    r = subprocess.run(
        [CSDM, "import-keras", str(tmp_path / "nope"), "--run", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "nope.json: missing" in r.stderr and "Traceback" not in r.stderr


def test_fine_tuning_starts_from_the_import(
    imported: Path, processed: Path, tmp_path: Path
) -> None:
    from training.train import TrainConfig, train

    init = load_checkpoint(imported)
    cfg = TrainConfig.preset_config("paper", steps=1, workers=0, init_from=str(imported))
    cfg = replace(
        cfg,
        model=TrainConfig.from_dict(init.config).model,
        sampler=replace(cfg.sampler, window=8, jitter=2, split=None),
    )
    train(processed, tmp_path / "ft", cfg, quiet=True)
    tuned = load_checkpoint(tmp_path / "ft")
    assert tuned.source["init_from"] == str(imported)
    assert tuned.source["source"]["format"] == "keras-h5"
    # one Adam step at lr 1e-4 moves each weight by about 1e-4, not a fresh initialisation
    moved = (tuned.model["lstm.w_x"] - init.model["lstm.w_x"]).abs().max().item()
    assert 0 < moved < 1e-3
