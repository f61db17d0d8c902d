"""Export a trained run as a single-step ONNX policy plus the JSON descriptor the agent reads."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from storage.fs import Root, is_url, root_of
from storage.policy import DESCRIPTOR, DescriptorError, PolicyDescriptor, graph_mismatch
from storage.registry import read_verified_descriptor
from training.actions import ActionSpace
from training.checkpoint import Checkpoint, load_checkpoint
from training.model import Policy, probabilities, split_heads
from training.train import TrainConfig

OPSET = 17  # the newest opset DirectML's execution provider fully supports
MODEL_FILE = "policy.onnx"
INPUT = "frame"
STATE_IN, STATE_OUT = ("h", "c"), ("h_out", "c_out")
ACTIVATIONS = {
    "keys": "sigmoid",
    "clicks": "sigmoid",
    "mouse_x": "softmax",
    "mouse_y": "softmax",
    "value": "linear",
}


class StepPolicy(nn.Module):
    """One frame (1, H, W, 3) uint8 BGR and the ConvLSTM state in; head probabilities out."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy.eval()

    def forward(self, frame: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """Probabilities of each head, then the new (h, c)."""
        seq, (h2, c2) = self.policy.lstm(self.policy.features(frame.unsqueeze(1)), (h, c))
        probs = probabilities(self.policy.head(seq[:, 0].flatten(1)), self.policy.space)
        return (*split_heads(probs, self.policy.space).values(), h2, c2)


def policy_from_checkpoint(ckpt: Checkpoint) -> Policy:
    """Rebuild the trained network from a checkpoint, in eval mode."""
    cfg = TrainConfig.from_dict(ckpt.config)
    model = Policy(cfg.model, ActionSpace.from_dict(ckpt.action_space))
    model.load_state_dict(ckpt.model)
    return model.eval()


def _onnx_bytes(step: StepPolicy, space: ActionSpace, state: torch.Tensor) -> bytes:
    """The single-step graph, checked by onnx, as bytes."""
    frame = torch.zeros(1, space.height, space.width, 3, dtype=torch.uint8)
    heads = list(space.heads)
    with tempfile.TemporaryDirectory(prefix="csdm-export-") as folder:
        tmp = os.path.join(folder, MODEL_FILE)
        _write_onnx(step, frame, state, heads, tmp)
        with open(tmp, "rb") as f:
            return f.read()


def _write_onnx(step, frame, state, heads, tmp: str) -> None:
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of the dynamo one, which would add
        # onnxscript to our dependencies; it still produces a plain opset-17 graph
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step,
            (frame, state, state.clone()),
            str(tmp),
            opset_version=OPSET,
            input_names=[INPUT, *STATE_IN],
            output_names=[*heads, *STATE_OUT],
            dynamo=False,
            do_constant_folding=True,
        )
    import onnx

    onnx.checker.check_model(str(tmp), full_check=True)


def export(run: str | Path | Root, out: str | Path | Root) -> dict:
    """Write `OUT/policy.onnx` and `OUT/policy.json` (last, whole); returns the descriptor.

    RUN and OUT are folders or bucket URLs.
    """
    ckpt = load_checkpoint(run)
    model = policy_from_checkpoint(ckpt)
    space, state = model.space, torch.zeros(model.state_shape(1))
    onnx_bytes = _onnx_bytes(StepPolicy(model), space, state)
    out = root_of(out)
    out.delete(DESCRIPTOR)  # the folder is incomplete until it is rewritten
    out.put_bytes(MODEL_FILE, onnx_bytes)
    cfg = TrainConfig.from_dict(ckpt.config)
    run_name = str(run) if is_url(str(run)) else str(Path(str(run)).resolve())
    descriptor = PolicyDescriptor(
        model=MODEL_FILE,
        opset=OPSET,
        action_space=space.to_dict(),
        fps=space.fps,
        input={
            "name": INPUT,
            "shape": [1, space.height, space.width, 3],
            "dtype": "uint8",
            "layout": "NHWC",
            "channel_order": space.channel_order,
        },
        state=[
            {
                "input": i,
                "output": o,
                "shape": list(state.shape),
                "dtype": "float32",
                "initial": "zeros",
            }
            for i, o in zip(STATE_IN, STATE_OUT, strict=True)
        ],
        outputs=[
            {"name": h, "width": w, "activation": ACTIVATIONS[h]} for h, w in space.heads.items()
        ],
        training={
            "run": run_name,
            "step": ckpt.step,
            "preset": cfg.preset,
            "model": cfg.model.to_dict(),
            "loss": cfg.loss.to_dict(),
            "sampler": cfg.sampler.to_dict(),
            "data": ckpt.data,
            "metrics": ckpt.metrics,
            "source": ckpt.source,
        },
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        files={
            MODEL_FILE: {"sha256": hashlib.sha256(onnx_bytes).hexdigest(), "size": len(onnx_bytes)}
        },
    ).to_dict()
    out.put_bytes(DESCRIPTOR, json.dumps(descriptor, indent=2).encode())
    return descriptor


class OnnxSteps:
    """An exported policy run frame by frame with onnxruntime, from a zero state each call."""

    def __init__(self, folder: str | Path, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.descriptor = d = read_verified_descriptor(folder)
        providers = providers or ["CPUExecutionProvider"]
        model = Path(folder) / d["model"]
        self.session = ort.InferenceSession(str(model), providers=providers)
        graph = [
            [(x.name, x.shape, x.type) for x in xs]
            for xs in (self.session.get_inputs(), self.session.get_outputs())
        ]
        if problem := graph_mismatch(d, *graph):
            raise DescriptorError(
                f"{model}: {problem}; its {DESCRIPTOR} does not describe it, so it is not run"
            )
        self.names = [o["name"] for o in d["outputs"]]

    def run(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Each head's outputs for every frame, the recurrent state carried between them."""
        d, n = self.descriptor, len(self.names)
        state = {s["input"]: np.zeros(s["shape"], np.float32) for s in d["state"]}
        out: dict[str, list] = {name: [] for name in self.names}
        for f in frames:
            res = self.session.run(None, {d["input"]["name"]: f[None], **state})
            for name, v in zip(self.names, res, strict=False):
                out[name].append(v[0])
            state = {s["input"]: res[n + i] for i, s in enumerate(d["state"])}
        return {name: np.stack(v) for name, v in out.items()}


def onnx_step_loop(
    folder: str | Path, frames: np.ndarray, providers: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Run an exported policy frame by frame with onnxruntime, carrying the state (for checks)."""
    return OnnxSteps(folder, providers).run(frames)
