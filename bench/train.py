"""Benchmark: training throughput, loader-fed, against the same steps on a resident batch.

Run: `.venv/bin/python -m bench.train [--preset tiny --steps 10]`; on a CUDA machine
`--preset paper` (AMP on) reports the GPU model and its utilisation sampled by nvidia-smi.
The baseline is the compute-only rate: the same model and step on one batch kept on the device,
so the ratio shows how much of the GPU or CPU the loader leaves idle (1.0: none).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.repack import build_source
from storage.fs import Root
from tasks.params import ProcessParams
from tasks.process_source import process_source
from training.data import WindowStream, augment, build_index, load_labels
from training.loss import make_targets, seed_loss
from training.model import Policy
from training.train import TrainConfig, train


class GpuSampler(threading.Thread):
    """nvidia-smi utilisation samples every 0.5 s while training runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            query = [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "-i",
                "0",
                "--format=csv,noheader,nounits",
            ]
            r = subprocess.run(query, capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip().isdigit():
                self.samples.append(int(r.stdout.strip()))
            self.stop.wait(0.5)


def compute_only(cfg: TrainConfig, batch: dict, steps: int, device: torch.device) -> float:
    """Frames/s of forward + backward + Adam on one resident batch."""
    model = Policy(cfg.model).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    gen = torch.Generator(device=device).manual_seed(0)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    for i in range(steps + 1):
        if i == 1:  # the first step warms kernels and allocator
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=cuda and cfg.amp):
            logits, _ = model(augment(batch["frames"], gen))
        loss = seed_loss(logits, make_targets(batch, cfg.loss), cfg.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch["frames"].shape[0] * batch["frames"].shape[1] / (time.perf_counter() - t)


def fed_against_compute(out: Path, run: Path, cfg: TrainConfig, steps: int, device) -> dict:
    """`csdm train`'s loader-fed rate against compute alone on a resident batch, GPU use sampled."""
    index = build_index(load_labels(out, cfg.sampler), cfg.sampler)
    stream = WindowStream(out, index, cfg.batch_size)
    batch = stream.read(stream.windows(0, 0))
    base = compute_only(cfg, batch, steps, device)
    sampler = GpuSampler() if shutil.which("nvidia-smi") and device.type == "cuda" else None
    if sampler:
        sampler.start()
    train(out, run, cfg, quiet=True)
    if sampler:
        sampler.stop.set()
        sampler.join()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # from the first logged step on: start-up and warm-up are not timed
    fed = (rows[-1]["frames"] - rows[0]["frames"]) / (rows[-1]["seconds"] - rows[0]["seconds"])
    util = sorted(sampler.samples) if sampler and sampler.samples else []
    return {
        "compute_only_frames_per_s": round(base, 1),
        "loader_fed_frames_per_s": round(fed, 1),
        "fed_over_compute": round(fed / base, 3),
        "gpu_util_mean": round(sum(util) / len(util), 1) if util else None,
        "gpu_util_median": util[len(util) // 2] if util else None,
        "gpu_util_samples": len(util),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=4)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TrainConfig.preset_config(args.preset)
    cfg = replace(
        cfg,
        steps=args.steps + 1,
        batch_size=args.batch or cfg.batch_size,
        workers=args.workers,
        log_every=1,
        ckpt_every=10**9,
        sampler=replace(cfg.sampler, keep_only=False),
    )
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(
        f"preset {args.preset}, batch {cfg.batch_size} x {cfg.sampler.window} frames, "
        f"{args.steps} timed steps, device {name}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        build_source(tmp / "source", args.episodes, 1000)
        out = tmp / "out"
        process_source(Root(str(tmp / "source")), Root(str(out)), ProcessParams())
        got = fed_against_compute(out, tmp / "run", cfg, args.steps, device)
        base, fed = got["compute_only_frames_per_s"], got["loader_fed_frames_per_s"]
        print(f"\n  compute only (resident batch)  : {base:9.1f} frames/s")
        print(
            f"  loader-fed training (csdm train): {fed:9.1f} frames/s  "
            f"({got['fed_over_compute']:.2f} of compute-only)"
        )
        if got["gpu_util_samples"]:
            print(
                f"  GPU utilisation while training : mean {got['gpu_util_mean']:.0f}%, "
                f"median {got['gpu_util_median']}% ({got['gpu_util_samples']} samples)"
            )


if __name__ == "__main__":
    main()
