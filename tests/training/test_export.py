"""ONNX export: parity with the torch sequence model, a self-describing, checksummed artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from storage.dataset import open_dataset
from storage.registry import RegistryError, read_verified_descriptor, sha256_file
from training.checkpoint import load_checkpoint
from training.data import SamplerConfig
from training.export import export, onnx_step_loop, policy_from_checkpoint
from training.model import probabilities, split_heads
from training.train import TrainConfig, train


@pytest.fixture(scope="module")
def trained(processed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    sampler = SamplerConfig(window=8, jitter=4, split=None, keep_only=False)
    train(processed, run, TrainConfig.preset_config("tiny", steps=3, sampler=sampler), quiet=True)
    return run


def test_onnx_step_loop_matches_the_torch_sequence_model(
    trained: Path, processed: Path, tmp_path: Path
) -> None:
    d = export(trained, tmp_path / "x")
    ds = open_dataset(processed)
    frames = ds.frames(ds.episodes[2], 10, 34)  # 24 real frames: state carried 24 times
    model = policy_from_checkpoint(load_checkpoint(trained))
    with torch.no_grad():
        want = split_heads(probabilities(model(torch.from_numpy(frames)[None])[0][0]))
    got = onnx_step_loop(tmp_path / "x", frames)
    for head, w in want.items():
        # torch and onnxruntime sum in different orders, which also vary with the CPU's SIMD
        # path: a float32 tolerance over 24 recurrent steps, not a figure of this machine
        np.testing.assert_allclose(got[head], w.numpy(), atol=2e-5, rtol=1e-4, err_msg=head)
    assert np.allclose(got["mouse_x"].sum(1), 1, atol=1e-5)
    assert d["training"]["step"] == 3


def test_descriptor_describes_the_model(trained: Path, tmp_path: Path) -> None:
    d = export(trained, tmp_path / "x")
    m = onnx.load(str(tmp_path / "x" / "policy.onnx"))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    inputs = {i.name: [x.dim_value for x in i.type.tensor_type.shape.dim] for i in m.graph.input}
    assert inputs["frame"] == [1, 150, 280, 3] and inputs["h"] == d["state"][0]["shape"]
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in m.graph.output] == [
        "keys",
        "clicks",
        "mouse_x",
        "mouse_y",
        "value",
        "h_out",
        "c_out",
    ]
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["policy.json", "policy.onnx"]
    on_disk = json.loads((tmp_path / "x" / "policy.json").read_text())
    assert on_disk["files"]["policy.onnx"]["sha256"] == sha256_file(tmp_path / "x" / "policy.onnx")
    space = on_disk["action_space"]
    assert space["keys"][:4] == ["w", "a", "s", "d"] and len(space["mouse_x_bins"]) == 23
    assert (
        space["fps"] == 16
        and space["crop"]["top"] == 135
        and on_disk["input"]["channel_order"] == "BGR"
    )
    assert [o["activation"] for o in on_disk["outputs"]] == [
        "sigmoid",
        "sigmoid",
        "softmax",
        "softmax",
        "linear",
    ]
    assert on_disk["training"]["data"]["root"] and "loss" in on_disk["training"]["metrics"]


def test_a_tampered_export_is_refused(trained: Path, tmp_path: Path) -> None:
    export(trained, tmp_path / "x")
    p = tmp_path / "x" / "policy.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=r"policy\.onnx: sha256 does not match"):
        read_verified_descriptor(tmp_path / "x")


def test_export_without_a_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train first"):
        export(tmp_path / "nothing", tmp_path / "x")


@pytest.mark.slow
def test_the_paper_network_exports_as_one_file(tmp_path: Path) -> None:
    from training.train import save_untrained

    save_untrained(tmp_path / "run", "paper")
    d = export(tmp_path / "run", tmp_path / "x")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["policy.json", "policy.onnx"]
    assert d["state"][0]["shape"] == [1, 256, 8, 16] and d["files"]["policy.onnx"]["size"] > 20e6
    frames = np.random.default_rng(0).integers(0, 256, (3, 150, 280, 3), dtype=np.uint8)
    model = policy_from_checkpoint(load_checkpoint(tmp_path / "run"))
    with torch.no_grad():
        want = probabilities(model(torch.from_numpy(frames)[None])[0][0]).numpy()
    got = onnx_step_loop(tmp_path / "x", frames)
    # as above: float32 in two runtimes, any CPU
    np.testing.assert_allclose(np.concatenate(list(got.values()), -1), want, atol=1e-4, rtol=1e-3)
