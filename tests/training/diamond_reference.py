"""DIAMOND's CS:GO data preparation and reader, restated for tests from its documented behaviour.

Written from a reading of DIAMOND's `csgo` branch (`src/process_csgo_tar_files.py`,
`src/data/dataset.py`, `episode.py`, `utils.py`, `batch_sampler.py`), independently of csdm:
it untars and reads HDF5 frame by frame, as DIAMOND does, and uses numpy for the arithmetic
except the resize, which is torchvision's tensor `resize`: torch's antialiased bicubic
`interpolate` (pinned against a numpy filter in the tests).
"""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

PREFIX = "hdf5_dm_july2021_"


def untar(tars: list[Path], full_res: Path) -> None:
    """Each tar into its own folder: the name after the prefix, `_to_` turned into `-`."""
    for t in tars:
        d = full_res / "-".join(t.stem[len(PREFIX) :].split("_to_"))
        d.mkdir(parents=True)
        with tarfile.open(t) as tf:
            tf.extractall(d, filter="data")


def files(full_res: Path) -> dict[str, Path]:
    """Every .hdf5 below, ordered by the number after the last `_`, by `<folder>/<name>`."""
    found = sorted(full_res.rglob("*.hdf5"), key=lambda p: int(p.stem.split("_")[-1]))
    return {f"{p.parent.name}/{p.name}": p for p in found}


def scaled(frame_bgr: np.ndarray) -> np.ndarray:
    """One frame to (3, H, W) float32 RGB in [-1, 1]: / 255, * 2, - 1, each in float32."""
    x = frame_bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    return (x / np.float32(255)) * np.float32(2) - np.float32(1)


def to_bytes(x: np.ndarray) -> np.ndarray:
    """DIAMOND's save: (x + 1) / 2 * 255 in float32, truncated toward zero, low 8 bits kept."""
    v = (x.astype(np.float32) + np.float32(1)) / np.float32(2) * np.float32(255)
    return (np.trunc(v).astype(np.int64) & 255).astype(np.uint8)


def segment(path: Path, start: int, stop: int, length: int) -> dict:
    """`CSGOHdf5Dataset[SegmentId(_, start, stop)]`, read frame by frame."""
    assert start < length and stop > 0 and start < stop
    lo, hi = max(0, start), min(length, stop)
    with h5py.File(path, "r") as f:
        obs = np.stack([scaled(f[f"frame_{i}_x"][:]) for i in range(lo, hi)])
        act = np.array([f[f"frame_{i}_y"][:] for i in range(lo, hi)])
    t = stop - start
    full_obs = np.zeros((t, *obs.shape[1:]), np.float32)
    full_act = np.zeros((t, *act.shape[1:]), act.dtype)
    left = lo - start
    full_obs[left : left + hi - lo] = obs
    full_act[left : left + hi - lo] = act
    mask = np.zeros(t, bool)
    mask[left : left + hi - lo] = True
    return {
        "obs": full_obs,
        "act": full_act,
        "rew": np.zeros(t, np.float32),
        "end": np.zeros(t, np.uint8),
        "trunc": np.zeros(t, np.uint8),
        "mask": mask,
        "id": (lo, hi),
    }


def prepare(full_res: Path, test_names: list[str], size: tuple[int, int], length: int) -> dict:
    """The low_res train and test datasets: per split, a list of episode dicts, and info."""
    out = {"train": [], "test": []}
    for fid, path in files(full_res).items():
        s = segment(path, 0, length, length)
        small = F.interpolate(
            torch.from_numpy(s["obs"]),
            size=size,
            mode="bicubic",
            align_corners=False,
            antialias=True,
        ).numpy()
        ep = {
            "obs": to_bytes(small),
            "act": s["act"],
            "rew": s["rew"],
            "end": s["end"],
            "trunc": s["trunc"],
            "info": {"original_file_id": fid},
            "float_obs": small,
        }
        out["test" if path.name in test_names else "train"].append(ep)
    info = {}
    for split, eps in out.items():
        n = len(eps)
        info[split] = {
            "is_static": False,
            "num_episodes": n,
            "num_steps": n * length,
            "start_idx": np.arange(n, dtype=np.int64) * length,
            "lengths": np.full(n, length, np.int64),
            "counter_rew": Counter(float(np.sign(r)) for e in eps for r in e["rew"]),
            "counter_end": Counter(int(v) for e in eps for v in e["end"]),
        }
    return {"episodes": out, "info": info}


def episode_file(split_dir: Path, episode_id: int) -> Path:
    """Where DIAMOND's `Dataset` keeps an episode: three folders from its last three digits."""
    digits = [(episode_id % 10 ** (k + 1)) // 10**k * 10**k for k in range(3)][::-1]
    parts = [str(d).zfill(3 - i) for i, d in enumerate(digits)]
    return split_dir.joinpath(*parts, f"{episode_id}.pt")


def sample(rng: np.random.Generator, lengths: np.ndarray, batch: int, seq: int):
    """DIAMOND's BatchSampler without sampling beyond the end: (episode, start, stop) rows."""
    ep = rng.choice(len(lengths), size=batch, p=lengths / lengths.sum())
    t = rng.integers(0, lengths[ep])
    stop = np.minimum(lengths[ep], t + 1 + rng.integers(0, seq, batch))
    return ep, stop - seq, stop


def rgb_frames(path: Path, lo: int, hi: int) -> np.ndarray:
    """Frames `[lo, hi)` as stored, turned to (t, 3, H, W) RGB uint8."""
    with h5py.File(path, "r") as f:
        return np.stack(
            [f[f"frame_{i}_x"][:][:, :, ::-1].transpose(2, 0, 1) for i in range(lo, hi)]
        )
