"""Benchmark: views and latents from the store against the peers' way, in one run, one core.

Run: `.venv/bin/python -m bench.views [--episodes 2 --frames 1000]`.
Realistic simulated episodes (tasks/synth/frames.py) are processed into the store. Then:
- views per second (frames resized and stored) by `csdm views`' task, against the peers' way
  from extracted HDF5: a dataset read per frame, BGR to RGB, then OpenCV's or Pillow's
  resize per frame, or for bicubic DIAMOND's (torch's antialiased bicubic over the episode),
  kept in memory (nothing stored, so the peers' figure is a ceiling);
- stored bytes per frame of each view, against its raw uint8 size;
- latents per second on the CPU with the tests' tiny encoder (tests/encoders.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.repack import build_source
from storage import sidearrays
from storage.dataset import open_dataset
from storage.fs import Root
from storage.sidearrays import ViewSpec
from tasks.encode import encode_episode, plan_encode
from tasks.params import ProcessParams
from tasks.process_source import process_source
from tasks.views import ViewJob, finish_views, make_view


def diamond_bicubic(frames: np.ndarray) -> np.ndarray:
    """DIAMOND's way: the episode's frames at once, torch's antialiased bicubic, uint8."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    out = []
    for lo in range(0, len(x), 100):
        y = F.interpolate(x[lo : lo + 100], size=(30, 56), mode="bicubic", antialias=True)
        out.append(y.clamp(0, 255).round().byte().numpy())
    return np.concatenate(out)


RECIPES = [  # (spec, the peers' resize, whether it takes the whole episode or one frame)
    (
        ViewSpec("64x112-area", 64, 112, filter="area", overshoot="clamp"),
        lambda f: cv2.resize(f, (112, 64), interpolation=cv2.INTER_AREA),
        False,
    ),
    (
        ViewSpec("88x160-box", 88, 160, filter="box", overshoot="clamp"),
        lambda f: np.asarray(Image.fromarray(f).resize((160, 88), Image.Resampling.BOX)),
        False,
    ),
    (ViewSpec("30x56", 30, 56, overshoot="clamp"), diamond_bicubic, True),
]


def peers(path: Path, n: int, resize, whole: bool) -> list | np.ndarray:
    """The peers' reading: a dataset per frame, BGR to RGB, each frame resized as it is read.

    DIAMOND's bicubic (`whole`) reads the episode's frames first and resizes them at once.
    """
    with h5py.File(path, "r") as h5:
        frames = (np.ascontiguousarray(h5[f"frame_{i}_x"][()][..., ::-1]) for i in range(n))
        return resize(np.stack(list(frames))) if whole else [resize(f) for f in frames]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--level", type=int, default=sidearrays.VIEW_LEVEL, help="views' zstd level")
    args = ap.parse_args()
    sidearrays.VIEW_LEVEL = args.level  # what the choice of level 1 was measured with
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        sources = build_source(tmp / "source", args.episodes, args.frames)
        out = tmp / "out"
        process_source(Root(str(tmp / "source")), Root(str(out)), ProcessParams())
        loose = {}
        for s in sources:
            loose[s.episode.name] = tmp / s.episode.hdf5_name
            with s.ref.open() as f:
                loose[s.episode.name].write_bytes(f.read())
        ds = open_dataset(out)
        n = sum(ds.n_frames(e) for e in ds.episodes)
        for e in ds.episodes:  # warm: shard indexes read, the compiled predictor loaded
            ds.frames(e, 0, ds.n_frames(e))
        warm = ViewSpec("warm", 8, 8, filter="area", overshoot="clamp")
        make_view(ViewJob(str(out), ds.episodes[0], warm))
        print(
            f"{args.episodes} episodes x {args.frames} realistic frames; one core "
            f"({os.cpu_count()} on this machine), page cache warm; views at zstd level {args.level}"
        )
        for spec, resize, whole in RECIPES:
            t = time.perf_counter()
            results = [make_view(ViewJob(str(out), e, spec)) for e in ds.episodes]
            finish_views(str(out), spec, results)
            ours = n / (time.perf_counter() - t)
            t = time.perf_counter()
            for e in ds.episodes:
                peers(loose[e], ds.n_frames(e), resize, whole)
            theirs = n / (time.perf_counter() - t)
            stored = sum(r.stored_bytes for r in results) / n
            raw = 3 * spec.height * spec.width
            print(
                f"  view {spec.name:12s}: csdm {ours:7.0f} frames/s stored, peers from HDF5 "
                f"{theirs:7.0f} (in memory): {ours / theirs:.2f}x; {stored:7.0f} bytes/frame "
                f"stored, {raw / stored:.2f}x smaller than raw"
            )
        jobs = plan_encode(str(out), "tests.encoders:tiny", "64x112-area", "tiny", batch=64)
        t = time.perf_counter()
        for j in jobs:
            encode_episode(j)
        print(
            f"  encode (tests' tiny encoder, CPU, 64x112 view): "
            f"{n / (time.perf_counter() - t):.0f} frames/s"
        )


if __name__ == "__main__":
    main()
