"""Benchmark: the agent's per-step latency on the CPU against the 62.5 ms budget of 16 fps.

Run: `.venv/bin/python -m bench.agent [--preset paper --steps 300 --threads 2]`. A `paper`
policy (random weights; latency does not depend on them) is exported to ONNX; the agent then
replays full 1024x768 BGRA client-area frames panned over the realistic frames' scene, so
each step is the real path minus the screen grab: cut and resize as `screen_input.py`,
onnxruntime step with the recurrent state, decode, act into a recording sink. Steps run back
to back (no pacing) to measure latency; goal: p99 under 40 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from csdm_agent.artifact import Artifact
from csdm_agent.capture import Crop, Preprocess
from csdm_agent.control import Controller, RecordingSink
from csdm_agent.decode import Decoder
from csdm_agent.loop import run
from csdm_agent.policy import Policy

from tasks.synth.frames import scene
from training.export import export
from training.train import save_untrained


def client_frames(n: int) -> np.ndarray:
    """Frames (n, 768, 1024, 4) BGRA: the window moving across the realistic frames' scene."""
    world = scene()  # at screen resolution already
    top = (world.shape[0] - 768) // 2
    out = np.empty((n, 768, 1024, 4), np.uint8)
    for i in range(n):
        x = (i * 37) % (world.shape[1] - 1024)
        out[i, ..., :3] = world[top : top + 768, x : x + 1024]
        out[i, ..., 3] = 255
    return out


class CycledFrames:
    """A replay held in memory (no disk reads in the timing), cut and resized per step."""

    def __init__(self, frames: np.ndarray, pre: Preprocess) -> None:
        self.frames, self.pre, self.i = frames, pre, 0

    def grab(self) -> np.ndarray:
        """The next client-area frame, preprocessed."""
        f = self.frames[self.i % len(self.frames)]
        self.i += 1
        return self.pre(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=48, help="distinct replay frames (cycled)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        save_untrained(tmp / "run", args.preset)
        export(tmp / "run", tmp / "export")
        art = Artifact.open(tmp / "export")
        frames = client_frames(args.frames)
        d = art.descriptor
        pre = Preprocess(Crop(**d["action_space"]["crop"]), (150, 280))
        policy = Policy(art, threads=args.threads)
        replay = CycledFrames(frames, pre)
        for _ in range(10):  # warm-up: onnxruntime's first runs allocate
            policy.step(pre(frames[0]))
        policy.reset()
        t = time.perf_counter()
        s = run(
            policy,
            Decoder.from_descriptor(d, seed=0),
            replay,
            Controller(RecordingSink()),
            fps=16,
            max_frames=args.steps,
            pace=False,
        )
        wall = time.perf_counter() - t
        p = s.percentiles()
        budget = 1000 / d["fps"]
        size = d["files"][d["model"]]["size"] / 1e6
        print(
            f"{args.preset} policy ({size:.1f} MB ONNX), {args.steps} steps, onnxruntime "
            f"{s.provider}, {args.threads} intra-op threads, {os.cpu_count()} cores"
        )
        for part in ("capture", "inference", "act", "step"):
            print(
                f"  {part:9s} p50 {p[f'{part}_p50_ms']:6.1f} ms   p99 {p[f'{part}_p99_ms']:6.1f} ms"
            )
        print(
            f"  step p99 = {p['step_p99_ms'] / budget:.2f} of the {budget:.1f} ms budget "
            f"(goal p99 < 40 ms: {'met' if p['step_p99_ms'] < 40 else 'not met'}); "
            f"{args.steps / wall:.1f} steps/s back to back"
        )


if __name__ == "__main__":
    main()
