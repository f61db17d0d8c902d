"""Spawn points for DIAMOND's `play.py`: `DEST/spawn/<i>/{low_res,full_res,act,next_act}.npy`.

DIAMOND's `WorldModelEnv.make_generator_init` loads each folder: `low_res` (T, 3, h, w) and
`full_res` (T, 3, 150, 280) uint8 RGB, scaled to [-1, 1] there; `act` (T, 51), the actions of
the T context steps; `next_act` (N, 51), the actions that follow, which its replay mode plays
and whose length bounds the horizon. T = 4: its denoiser conditions on 4 steps.
"""

from __future__ import annotations

import io

import numpy as np

from storage.dataset import open_dataset
from storage.fs import root_of
from storage.sidearrays import read_actions
from tasks.diamond_export import EpisodeJob
from training.diamond_obs import low_res

SPAWN_CONTEXT = 4  # DIAMOND's `num_steps_conditioning` (config/agent/csgo.yaml)
FILES = ("next_act", "act", "full_res", "low_res")  # low_res last: its presence means done


def write_spawns(jobs: list[EpisodeJob], count: int, context: int = SPAWN_CONTEXT) -> list[str]:
    """Spawn points from the first `count` test episodes (then train); returns their folders.

    Each starts at the episode's first frame; a folder already complete is left as it is.
    """
    chosen = [j for j in jobs if j.split == "test"] + [j for j in jobs if j.split == "train"]
    written, ds = [], None
    for i, job in enumerate(chosen[:count]):
        dest, folder = root_of(job.dest, job.options), f"spawn/{i}"
        written.append(dest.url_of(folder))
        if all(dest.exists(f"{folder}/{name}.npy") for name in FILES):
            continue
        ds = ds or open_dataset(job.out, job.options)  # every job reads the same dataset
        frames = ds.frames(job.episode, 0, context)  # BGR, as stored
        rows = read_actions(ds.layout, job.episode)[: job.length].astype(np.int64)
        arrays = {
            "next_act": rows[context:],
            "act": rows[:context],
            "full_res": np.ascontiguousarray(frames[..., ::-1].transpose(0, 3, 1, 2)),
            "low_res": low_res(frames, job.size).numpy(),
        }
        for name in FILES:
            buf = io.BytesIO()
            np.save(buf, arrays[name], allow_pickle=False)
            dest.put_bytes(f"{folder}/{name}.npy", buf.getvalue())
    return written
