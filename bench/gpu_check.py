"""`make gpu-check`: the paper network on a GPU, in one prepared run of a few minutes.

1. A realistic dataset is made and processed on the spot (no network there, little to carry).
2. Training steps of the `paper` preset with AMP: compute-only (a resident batch) against
   loader-fed `csdm train`, frames/s each, GPU utilisation sampled by nvidia-smi.
GPU decoding has its own check (`make gpu-check-decode`, bench/gpu_decode.py): nvCOMP's
wheel does not fit in the 64 MiB carry beside this one's.
3. ONNX parity: the trained run exported; its step loop (onnxruntime, CUDA provider when the
   installed onnxruntime has one) against the torch model on the GPU.
4. Eval throughput: `csdm eval`'s torch path on the GPU, and the ONNX path.

    python -m bench.gpu_check [--out DIR]     # on the device, through `make gpu-check`
    python -m bench.gpu_check --dry-run       # the same steps, small, on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.device_steps import Steps
from bench.repack import build_source
from bench.train import fed_against_compute
from storage.dataset import open_dataset
from storage.fs import Root
from tasks.params import ProcessParams
from tasks.process_source import process_source
from training.checkpoint import load_checkpoint
from training.evaluate import evaluate, resolve_model
from training.export import export, onnx_step_loop, policy_from_checkpoint
from training.model import probabilities
from training.train import TrainConfig


def _onnx_parity(run: Path, exported: Path, frames: np.ndarray, device) -> dict:
    import onnxruntime as ort

    model = policy_from_checkpoint(load_checkpoint(run)).to(device).eval()
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(frames)[None].to(device))
        want = probabilities(logits[0]).float().cpu().numpy()
    providers = ort.get_available_providers()
    provider = (
        "CUDAExecutionProvider"
        if "CUDAExecutionProvider" in providers
        else ("CPUExecutionProvider")
    )
    t = time.perf_counter()
    out = onnx_step_loop(exported, frames, providers=[provider])
    secs = time.perf_counter() - t
    got = np.concatenate(list(out.values()), -1)
    return {
        "onnx_provider": provider,
        "onnx_providers_available": providers,
        "frames": len(frames),
        "max_abs_diff_vs_torch": float(np.abs(got - want).max()),
        "onnx_step_frames_per_s": round(len(frames) / secs, 1),
    }


def _eval_figures(out: Path, run: Path, exported: Path, device, onnx_frames: int) -> dict:
    torch_model = resolve_model(str(run), device=str(device))
    t = time.perf_counter()
    report = evaluate([torch_model], out, split=None, all_episodes=True)
    torch_rate = report.frames / (time.perf_counter() - t)
    onnx_model = resolve_model(str(exported))
    ds = open_dataset(out)
    frames = ds.frames(ds.episodes[0], 0, onnx_frames)
    t = time.perf_counter()
    onnx_model.play(frames)
    return {
        "eval_frames": report.frames,
        "eval_torch_frames_per_s": round(torch_rate, 1),
        "eval_onnx_cpu_frames_per_s": round(len(frames) / (time.perf_counter() - t), 1),
        "seed_mean_after_training": round(report.models[0].metrics["seed_mean"], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="small sizes, CPU: checks the script")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    a = ap.parse_args()
    if a.dry_run:
        a.steps, a.batch, a.episodes, a.frames, a.workers = 2, 1, 2, 120, 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "CPU"
    cfg = TrainConfig.preset_config("paper")
    window = 16 if a.dry_run else cfg.sampler.window
    cfg = replace(
        cfg,
        steps=a.steps + 1,
        batch_size=a.batch,
        workers=a.workers,
        log_every=1,
        ckpt_every=10**9,
        sampler=replace(cfg.sampler, window=window, jitter=4, split=None, keep_only=False),
    )
    result = {
        "device": card,
        "torch": torch.__version__,
        "amp": cfg.amp and device.type == "cuda",
        "preset": "paper",
        "batch": a.batch,
        "window": window,
        "timed_steps": a.steps,
        "episodes": a.episodes,
        "frames_per_episode": a.frames,
        "dry_run": a.dry_run,
    }
    steps = Steps(Path(a.out), "gpu_check.json", result)  # written now, and after each step
    print(json.dumps(result), flush=True)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)

        def dataset() -> dict:
            t = time.perf_counter()
            build_source(tmp / "source", a.episodes, a.frames)
            process_source(Root(str(tmp / "source")), Root(str(tmp / "data")), ProcessParams())
            return {"dataset_seconds": round(time.perf_counter() - t, 1)}

        def onnx() -> dict:
            ds = open_dataset(tmp / "data")
            frames = ds.frames(ds.episodes[0], 0, min(32, a.frames))
            return _onnx_parity(tmp / "run", tmp / "export", frames, device)

        plan = [
            ("dataset", 150, dataset),
            (
                "train",
                200,
                lambda: fed_against_compute(tmp / "data", tmp / "run", cfg, a.steps, device),
            ),
            (
                "export",
                80,
                lambda: {"export_seconds": _timed(export, tmp / "run", tmp / "export")},
            ),
            ("onnx", 80, onnx),
            (
                "eval",
                80,
                lambda: _eval_figures(
                    tmp / "data", tmp / "run", tmp / "export", device, min(64, a.frames)
                ),
            ),
        ]
        for name, budget, fn in plan:  # each step reports even if another fails
            figures = steps.run(name, budget, fn)
            if figures is not None:  # the figures stay flat beside the steps, as before
                steps.result |= figures
                steps.write()
            elif name == "dataset":
                break
    print(json.dumps(steps.result, indent=1))


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return round(time.perf_counter() - t, 1)


if __name__ == "__main__":
    main()
