"""The ONNX policy, one frame per call, its recurrent state carried between calls."""

from __future__ import annotations

import logging

import numpy as np

from csdm_agent.artifact import Artifact, VerificationError, graph_mismatch

log = logging.getLogger("csdm_agent")
PREFERRED = ("DmlExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Policy:
    """`step(frame)` -> {head: probabilities}; `reset()` zeroes the state as at the start."""

    def __init__(
        self, artifact: Artifact, providers: list[str] | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        d = artifact.descriptor
        available = ort.get_available_providers()
        chosen = [p for p in (providers or PREFERRED) if p in available] or ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(artifact.model), opts, providers=chosen)
        graph = [
            [(x.name, x.shape, x.type) for x in xs]
            for xs in (self.session.get_inputs(), self.session.get_outputs())
        ]
        if problem := graph_mismatch(d, *graph):
            raise VerificationError(
                f"{artifact.model}: {problem}; its policy.json does not "
                "describe it, so it is not run"
            )
        self.provider = self.session.get_providers()[0]
        log.info("onnxruntime provider: %s (available: %s)", self.provider, ", ".join(available))
        self.input = d["input"]["name"]
        self.shape = tuple(d["input"]["shape"])
        self.heads = [o["name"] for o in d["outputs"]]
        self.state_spec = d["state"]
        self.reset()

    def reset(self) -> None:
        """Zero recurrent state, as the seed's `reset_states()`."""
        self.state = {s["input"]: np.zeros(s["shape"], np.float32) for s in self.state_spec}

    def step(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """One (H, W, 3) uint8 BGR frame in; each head's probabilities (batch dim dropped) out."""
        if frame.shape != self.shape[1:] or frame.dtype != np.uint8:
            raise ValueError(
                f"frame {frame.shape} {frame.dtype}, the model takes {self.shape[1:]} uint8"
            )
        outs = self.session.run(None, {self.input: frame[None], **self.state})
        n = len(self.heads)
        self.state = {s["input"]: outs[n + i] for i, s in enumerate(self.state_spec)}
        return {h: o[0] for h, o in zip(self.heads, outs[:n], strict=True)}
