"""Benchmark: publishing a processed dataset to the Hub, and reading it in place from there.

Run: `.venv/bin/python -m bench.hub [--episodes 8 --frames 1000 --windows 200]`.
Realistic simulated episodes (tasks/synth/frames.py) are processed into a store, then, in one
run against the local Hub stand-in (tests/hub_server.py, the real huggingface_hub client,
Git LFS uploads, loopback so no network time):
- `csdm publish` against `HfApi.upload_folder` of the same files (less `.cache/`): commits,
  requests and time;
- a republish of the unchanged dataset: requests and time;
- random 96-frame windows read from `hf://` against the local folder: windows/s and HTTP
  requests per window (goal <= 1.2);
- opening the published dataset plus a query over its whole catalog: requests and time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

# the stand-in speaks Git LFS, not Xet; huggingface_hub reads this at import
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import numpy as np

from bench.repack import build_source
from storage.dataset import connect_catalog, open_dataset
from storage.framestore import SHARD_FRAMES
from storage.fs import Root
from storage.hub_repo import parse_target
from tasks.params import ProcessParams
from tasks.process_source import process_source
from tasks.publish import publish, reader_keys
from tests.hub_server import FakeHub, HubServer

WINDOW = 96


class Counted:
    """Requests and commits the stand-in saw during a block, and its time."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub

    def __enter__(self) -> Counted:
        self.requests, self.commits = len(self.hub.requests), len(self.hub.commits)
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t
        self.requests = len(self.hub.requests) - self.requests
        self.commits = len(self.hub.commits) - self.commits


def windows(ds, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """The same random 96-frame windows for every reader."""
    rng = np.random.default_rng(seed)
    eps = [e for e in ds.episodes if ds.n_frames(e) >= WINDOW]
    picks = []
    for _ in range(n):
        e = eps[rng.integers(len(eps))]
        picks.append((e, int(rng.integers(0, ds.n_frames(e) - WINDOW + 1))))
    return picks


def read_all(ds, picks) -> None:
    """Read every window into one reused array."""
    out = np.empty((WINDOW, 150, 280, 3), np.uint8)
    for e, start in picks:
        ds.frames(e, start, start + WINDOW, out=out)


def main() -> None:
    """Build, publish both ways, republish, read; print the figures and ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="csdm-bench-hub-") as tmp:
        tmp = Path(tmp)
        build_source(tmp / "source", args.episodes, args.frames)
        out = tmp / "out"
        process_source(Root(str(tmp / "source")), Root(str(out)), ProcessParams(test_fraction=0.25))
        keys = reader_keys(Root(str(out)))
        size = sum(keys.values())
        print(
            f"dataset: {args.episodes} episodes x {args.frames} frames, {len(keys)} files, "
            f"{size / 1e6:.1f} MB to publish"
        )
        hub = FakeHub()
        with HubServer(hub) as server:
            os.environ.update(
                HF_ENDPOINT=server.endpoint, HF_TOKEN="hf_test_token", HF_HOME=str(tmp / "hf-home")
            )
            from huggingface_hub import HfApi
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
            target, _ = parse_target("hf://datasets/team/csdm-bench")
            with Counted(hub) as ours:
                s = publish(out, target)
            for data in hub.repos["team/csdm-bench"][s.commit].values():
                hub.ids(data)  # the stand-in's own hashing of new objects: not csdm's time
            with Counted(hub) as again:
                publish(out, target)
            api = HfApi(endpoint=server.endpoint, token="hf_test_token")
            hub.lfs.clear()  # the peer uploads every object too, not only the ones csdm did not
            with Counted(hub) as peer:
                api.create_repo("team/peer", repo_type="dataset", exist_ok=True)
                api.upload_folder(
                    folder_path=str(out),
                    repo_id="team/peer",
                    repo_type="dataset",
                    ignore_patterns=[".cache/**", ".lease.json", "**/.*"],
                )
            print("\npublishing (same run, loopback stand-in)")
            print(f"{'':28}{'commits':>8}{'requests':>10}{'seconds':>9}")
            for name, c in (
                ("csdm publish", ours),
                ("HfApi.upload_folder", peer),
                ("csdm republish, unchanged", again),
            ):
                print(f"{name:28}{c.commits:>8}{c.requests:>10}{c.seconds:>9.2f}")
            print(
                f"csdm publish: {s.uploaded} files in {s.commits} commits of <= 100 files; "
                f"time ratio upload_folder/csdm {peer.seconds / ours.seconds:.2f}x"
            )

            local = open_dataset(out)
            picks = windows(local, args.windows)
            with Counted(hub) as opened:
                remote = open_dataset("hf://datasets/team/csdm-bench")
            with Counted(hub) as cold:  # a fresh opening: zarr.json and shard indexes too
                read_all(remote, picks)
            read_all(local, picks)  # the page cache warm, as the remote reader's indexes
            t = time.perf_counter()
            read_all(local, picks)
            local_s = time.perf_counter() - t
            with Counted(hub) as reading:
                read_all(remote, picks)
            with Counted(hub) as query:
                con = connect_catalog("hf://datasets/team/csdm-bench")
                rows = con.execute("select split, count(*) from frames group by all").fetchall()
            print(f"\nreading {args.windows} random {WINDOW}-frame windows")
            print(f"{'':34}{'windows/s':>10}{'requests/window':>17}")
            print(f"{'local folder':34}{args.windows / local_s:>10.0f}{0:>17.2f}")
            for name, c in (
                ("hf://, first pass (cold)", cold),
                ("hf://, again (indexes held)", reading),
            ):
                print(
                    f"{name:34}{args.windows / c.seconds:>10.0f}{c.requests / args.windows:>17.2f}"
                )
            print(f"hf:// warm / local: {local_s / reading.seconds:.2f}x")
            crossing = sum(s // SHARD_FRAMES != (s + WINDOW - 1) // SHARD_FRAMES for _, s in picks)
            print(
                f"windows spanning two {SHARD_FRAMES}-frame shard objects: {crossing} of "
                f"{len(picks)}, so one range per shard needs "
                f"{1 + crossing / len(picks):.2f} requests per window at best"
            )
            print(f"\nopen_dataset(hf://...): {opened.requests} requests, {opened.seconds:.2f} s")
            print(
                f"open + whole-catalog query ({sum(r[1] for r in rows)} frames): "
                f"{query.requests} requests, {query.seconds:.2f} s"
            )


if __name__ == "__main__":
    main()
