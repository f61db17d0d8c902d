"""Benchmark: 96-frame training windows per second, csdm's stream against the seed's reads.

Run: `.venv/bin/python -m bench.loader [--episodes 4 --frames 1000 --windows 64]`. On synthetic
episodes (realistic frames, tasks/synth/frames.py) processed into the Zarr store, it
reads the same windows (one epoch plan of the sampler) three ways, in one run:
- csdm: `WindowStream` batches of uint8 tensors with labels, in this process (one core), and
  through a DataLoader with spawned workers (pinned when CUDA is present);
- baseline: the seed's and DIAMOND's pattern, from extracted HDF5 files: open the file, read
  `frame_i_x`, `frame_i_y` and `frame_i_helperarr` per frame, convert frames to float.
Goal: csdm at least 4x the baseline, and at least 10k frames/s per core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import zarr

from bench.repack import build_source
from storage.fs import Root
from tasks.params import ProcessParams
from tasks.process_source import process_source
from training.data import SamplerConfig, WindowStream, build_index, load_labels, make_loader


def seed_window(path: Path, start: int, t: int) -> np.ndarray:
    """The seed's DataGenerator body for one window: per-frame dataset reads, float frames."""
    x = np.empty((t, 150, 280, 3))
    y = np.empty((t, 51))
    with h5py.File(path, "r") as h5:
        for j in range(t):
            x[j] = h5[f"frame_{start + j}_x"][:]
            y[j] = h5[f"frame_{start + j}_y"][:]
            h5[f"frame_{start + j}_helperarr"][:]
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=64, help="windows per measurement")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    zarr.config.set({"threading.max_workers": 1, "async.concurrency": 1})
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        sources = build_source(tmp / "source", args.episodes, args.frames)
        out = tmp / "out"
        process_source(Root(str(tmp / "source")), Root(str(out)), ProcessParams())
        loose = {}
        for s in sources:  # the extracted HDF5 files the seed trains from
            loose[s.episode.name] = tmp / s.episode.hdf5_name
            with s.ref.open() as f:
                loose[s.episode.name].write_bytes(f.read())

        cfg = SamplerConfig(keep_only=False)
        index = build_index(load_labels(out, cfg), cfg)
        stream = WindowStream(out, index, args.batch)
        n_batches = max(1, args.windows // args.batch)
        plan = [stream.windows(0, b % stream.batches_per_epoch) for b in range(n_batches)]
        frames = n_batches * args.batch * cfg.window
        print(
            f"{args.episodes} episodes x {args.frames} frames; {len(index)} windows of "
            f"{cfg.window}; measuring {n_batches} batches of {args.batch} ({frames} frames)"
        )

        def csdm() -> None:
            for wins in plan:
                stream.read(wins)

        def seed() -> None:
            for wins in plan:
                for e, s in wins:
                    seed_window(loose[index.labels.episodes[e]], s, cfg.window)

        def timed(fn) -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        rounds = [[timed(csdm), timed(seed)] for _ in range(3)]  # interleaved, best of 3
        t_csdm, t_seed = np.min(rounds, axis=0)
        print(f"\n[one core, page cache warm, {cfg.window}-frame windows]")
        print(
            f"  csdm WindowStream (uint8 + labels)   : {frames / t_csdm:8.0f} frames/s "
            f"({frames / t_csdm / cfg.window:6.1f} windows/s)"
        )
        print(f"  seed/DIAMOND HDF5 per frame -> float : {frames / t_seed:8.0f} frames/s")
        print(
            f"  ratio csdm/seed: {t_seed / t_csdm:.1f}x (goal >= 4x); "
            f"csdm per core {frames / t_csdm:.0f} frames/s (goal >= 10000)"
        )

        pin = torch.cuda.is_available()
        loader = make_loader(WindowStream(out, index, args.batch), args.workers, pin=pin)
        it = iter(loader)
        next(it)  # workers started and warm
        t = time.perf_counter()
        for _ in range(n_batches):
            b = next(it)
        t_loader = time.perf_counter() - t
        assert b["frames"].dtype == torch.uint8 and b["frames"].is_pinned() == pin
        print(
            f"\n[DataLoader, {args.workers} spawned workers, pinned={pin}, "
            f"{os.cpu_count()} cores on this machine]"
        )
        print(
            f"  {frames / t_loader:8.0f} frames/s ({frames / t_loader / args.workers:.0f} "
            f"per worker)"
        )


if __name__ == "__main__":
    main()
