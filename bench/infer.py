"""Benchmark: vectorised action inference and `csdm infer` end to end.

Run: `make bench` (or `.venv/bin/python -m bench.infer --episodes 100`). Builds one metadata
file of N 1000-frame simulated episodes, then measures in the same run:
- the per-frame reference (tasks/synth/reference.py) vs the vectorised `infer_actions`;
- plain unpickling (`np.load(allow_pickle=True)`) vs `csdm infer` end to end (load with the
  data-only unpickler, columnarise, infer, judge, write Parquet), in process and as a CLI.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from storage.layout import metadata_name
from storage.metadata import load_metadata
from storage.safepickle import load_npy
from tasks.actions.infer import infer_actions
from tasks.actions.labels import label_metadata_file, write_labels
from tasks.actions.quality import QualityThresholds
from tasks.synth.players import EPISODE_KINDS, simulate
from tasks.synth.reference import infer_episode
from tasks.synth.tree import save_legacy_npy


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def build(path: Path, episodes: int, frames: int) -> list[list[dict]]:
    eps = [simulate(frames, seed, kind=EPISODE_KINDS[seed % 4]) for seed in range(episodes)]
    mapping = {}
    for n, states in enumerate(eps, start=1):
        for i, s in enumerate(states):
            mapping[f"file_num{n}_frame_{i}"] = [s, [[], 0.0, 0.0, 0, 0], np.zeros(2)]
    save_legacy_npy(path, mapping)
    return eps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.episodes * args.frames
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / metadata_name("dm_july2021", 1, 100)
        eps = build(path, args.episodes, args.frames)
        print(
            f"metadata file: {args.episodes} episodes x {args.frames} frames = {n} frames, "
            f"{path.stat().st_size / 1e6:.1f} MB"
        )

        batch = load_metadata(path)
        t_ref = best_of(lambda: [infer_episode(e) for e in eps], 1)
        t_vec = best_of(lambda: infer_actions(batch.state, batch.lengths), args.repeat)
        print("\n[inference only, one process, numpy single-threaded]")
        print(f"  per-frame reference : {n / t_ref / 1e6:8.3f} M frames/s  ({t_ref:.3f} s)")
        print(f"  vectorised          : {n / t_vec / 1e6:8.3f} M frames/s  ({t_vec:.3f} s)")
        print(f"  speed-up            : {t_ref / t_vec:8.1f}x   (goal >= 10x and >= 2 M frames/s)")

        t_pickle = best_of(lambda: np.load(path, allow_pickle=True), args.repeat)

        def load_no_gc() -> None:
            gc.disable()
            try:
                np.load(path, allow_pickle=True)
            finally:
                gc.enable()

        t_pickle_nogc = best_of(load_no_gc, args.repeat)
        t_safe = best_of(lambda: load_npy(path), args.repeat)
        t_cols = best_of(lambda: load_metadata(path), args.repeat)
        out = Path(tmp) / "labels"
        thr = QualityThresholds()
        t_e2e = best_of(lambda: write_labels([label_metadata_file(path, thr)], out), args.repeat)
        env = {**os.environ, "COLUMNS": "200"}
        cli = [str(Path(sys.executable).with_name("csdm")), "infer", str(path), "--out", str(out)]

        def run_cli() -> None:
            subprocess.run(cli, check=True, capture_output=True, env=env)

        t_cli = best_of(run_cli, args.repeat)
        print("\n[end to end against merely unpickling the same file]")
        print("  ratios: x plain np.load (default GC) | x np.load with the GC paused as csdm does")
        rows = [
            ("np.load(allow_pickle=True)", t_pickle),
            ("np.load, GC paused", t_pickle_nogc),
            ("data-only unpickler", t_safe),
            ("+ columnar game state", t_cols),
            ("+ infer, judge, write Parquet", t_e2e),
            ("`csdm infer` CLI, with start-up", t_cli),
        ]
        for name, t in rows:
            print(
                f"  {name:32s}: {t:6.3f} s  {t / t_pickle:5.2f}x | {t / t_pickle_nogc:5.2f}x"
                f"  ({n / t / 1e3:5.0f} k frames/s)"
            )
        print("  goal: end to end within 2x of unpickling")


if __name__ == "__main__":
    main()
