"""Benchmark: DIAMOND's data from the store against DIAMOND's own way, on the same tar.

Run: `.venv/bin/python -m bench.diamond [--episodes 4 --frames 1000]`.
Realistic simulated episodes (tasks/synth/frames.py) go into one scraped-style tar, which
csdm processes into a store (timed, but a store is what a csdm user already has). Then, in
one run and on one pinned core:
- preparation: DIAMOND's way (untar, read every frame's HDF5 dataset, resize, save a .pt per
  episode) against `export-diamond`'s work (read the store, resize, save the same files);
  goal csdm >= 2x faster;
- disk: full-res HDF5 plus the low-res copy, against the store plus the low-res copy;
  goal csdm <= 0.55x;
- full-res segment reads: DIAMOND's `CSGOHdf5Dataset` (restated: the file opened per
  segment, a dataset read per frame) on the extracted files, against `FullResDataset`;
  goal csdm >= 1.2x;
- the same reads through 4 forked DataLoader workers (DIAMOND's trainer), DIAMOND's own
  `CSGOHdf5Dataset` against `FullResDataset`, with each's peak RSS per worker;
- low-res segment batches from csdm's `SegmentStream` over a stored 30x56 view.
DIAMOND's steps are the test suite's restatement (tests/training/diamond_reference.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.repack import build_source
from storage.diamond_layout import LOW_RES, default_test_split, parse_test_split
from storage.fs import Root
from storage.sidearrays import ViewSpec
from tasks.diamond_export import export_episode, finish_export, plan_export
from tasks.params import ProcessParams
from tasks.process_source import process_source
from tasks.views import ViewJob, finish_views, make_view
from tests import diamond_code
from tests.training import diamond_reference as ref
from training.diamond import FullResDataset, SegmentId
from training.segments import SegmentStream


def du(path: Path) -> int:
    """Bytes of the files below `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def diamond_prepare(tar: Path, work: Path, test_names: frozenset[str], length: int) -> float:
    """DIAMOND's preparation, restated: untar with tar(1), then a .pt per episode; seconds."""
    t = time.perf_counter()
    d = work / "full_res" / "-".join(tar.stem[len(ref.PREFIX) :].split("_to_"))
    d.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tar), "-C", str(d)], check=True)
    counts = {"train": 0, "test": 0}
    for fid, path in ref.files(work / "full_res").items():
        s = ref.segment(path, 0, length, length)
        small = F.interpolate(
            torch.from_numpy(s["obs"]),
            size=LOW_RES,
            mode="bicubic",
            align_corners=False,
            antialias=True,
        ).numpy()
        split = "test" if path.name in test_names else "train"
        ep = {
            "obs": torch.from_numpy(ref.to_bytes(small)),
            "act": torch.from_numpy(s["act"]),
            "rew": torch.zeros(length),
            "end": torch.zeros(length, dtype=torch.uint8),
            "trunc": torch.zeros(length, dtype=torch.uint8),
            "info": {"original_file_id": fid},
        }
        out = ref.episode_file(work / "low_res" / split, counts[split])
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ep, out)
        counts[split] += 1
    return time.perf_counter() - t


def csdm_export(store: Path, dest: Path, split: str, length: int) -> float:
    """`export-diamond`'s work on one core, without the Dask cluster around it; seconds."""
    t = time.perf_counter()
    plan, jobs, _ = plan_export(str(store), str(dest), split, "DIAMOND's split", LOW_RES, length)
    for j in jobs:
        assert export_episode(j).status == "written"
    assert finish_export(plan, str(dest)) == []
    return time.perf_counter() - t


def segment_reads(read, ids: list[str], length: int, seq: int, n: int, seed: int) -> float:
    """Segments per second over `n` random segments (DIAMOND's upsampler draws)."""
    rng = np.random.default_rng(seed)
    picks = [
        (ids[rng.integers(len(ids))], int(rng.integers(-seq // 2, length - seq // 2)))
        for _ in range(n)
    ]
    t = time.perf_counter()
    for fid, start in picks:
        read(fid, start, start + seq)
    return n / (time.perf_counter() - t)


class _Measured(torch.utils.data.Dataset):
    """A segment reader that also reports its worker's peak RSS with every segment."""

    def __init__(self, read) -> None:
        self.read = read

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, key):
        info = torch.utils.data.get_worker_info()
        seg = self.read(*key)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        return (info.id if info else -1), rss, seg.obs.shape[0]


def loader_reads(read, picks: list, workers: int = 4) -> tuple[float, int]:
    """Segments/s through a DataLoader of `workers` forked workers, and the largest peak RSS."""
    loader = torch.utils.data.DataLoader(
        _Measured(read),
        sampler=picks,
        batch_size=None,
        num_workers=workers,
        multiprocessing_context="fork",
        collate_fn=lambda x: x,
    )
    it = iter(loader)
    next(it)  # workers started and each store opened: not counted
    peak: dict[int, int] = {}
    t = time.perf_counter()
    n = 0
    for worker, rss, _ in it:
        peak[worker] = max(peak.get(worker, 0), rss)
        n += 1
    return n / (time.perf_counter() - t), max(peak.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--segments", type=int, default=300)
    ap.add_argument("--seq", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dir", type=Path, default=None, help="Work folder (default: a temp one).")
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        srcs = build_source(tmp / "src", args.episodes, args.frames)
        tar = Path(srcs[0].ref.container)
        print(
            f"source: {args.episodes} episodes x {args.frames} frames, "
            f"{tar.stat().st_size / 1e6:.0f} MB tar ({time.perf_counter() - t:.0f} s to make)"
        )
        store = tmp / "store"
        t = time.perf_counter()
        process_source(Root(str(tmp / "src")), Root(str(store)), ProcessParams())
        print(f"csdm process into the store (all cores, once): {time.perf_counter() - t:.1f} s")
        os.sched_setaffinity(0, {cores[0]})
        split = default_test_split()
        names = parse_test_split(split, "DIAMOND's split")
        os.sync()
        t_diamond = diamond_prepare(tar, tmp / "diamond", names, args.frames)
        t_csdm = csdm_export(store, tmp / "csdm", split, args.frames)
        low = du(tmp / "csdm" / "low_res")
        disk_d = du(tmp / "diamond" / "full_res") + du(tmp / "diamond" / "low_res")
        disk_c = du(store) + low
        full = FullResDataset(str(store), length=args.frames)
        files = ref.files(tmp / "diamond" / "full_res")
        ids = list(files)
        assert ids == list(full._filenames)
        full[SegmentId(ids[0], 0, 1)]  # open the store once, as a long-lived reader would
        seg_d = segment_reads(
            lambda f, a, b: ref.segment(files[f], a, b, args.frames),
            ids,
            args.frames,
            args.seq,
            args.segments,
            1,
        )
        seg_c = segment_reads(
            lambda f, a, b: full[SegmentId(f, a, b)], ids, args.frames, args.seq, args.segments, 1
        )
        # 4 forked DataLoader workers (DIAMOND's trainer): DIAMOND's own CSGOHdf5Dataset (its
        # code, ../shared/third_party/diamond) on the extracted files, against FullResDataset
        os.sched_setaffinity(0, set(cores))
        rng = np.random.default_rng(2)
        picks = [
            (ids[rng.integers(len(ids))], int(rng.integers(-args.seq // 2, args.frames - 8)))
            for _ in range(args.segments)
        ]
        picks = [(f, a, a + args.seq) for f, a in picks]
        w_d = w_c = None
        if diamond_code.available():
            data = diamond_code.diamond_data()
            theirs = data.CSGOHdf5Dataset(tmp / "diamond" / "full_res")
            theirs._length_one_episode = args.frames
            w_d = loader_reads(lambda f, a, b: theirs[data.SegmentId(f, a, b)], picks)
        mine = FullResDataset(str(store), length=args.frames)
        w_c = loader_reads(lambda f, a, b: mine[SegmentId(f, a, b)], picks)
        os.sched_setaffinity(0, {cores[0]})
        t = time.perf_counter()
        spec = ViewSpec("30x56", *LOW_RES)  # DIAMOND's recipe
        done = [make_view(ViewJob(str(store), e, spec)) for e in full._filenames.values()]
        finish_views(str(store), spec, done)
        t_views = time.perf_counter() - t
        stream = iter(SegmentStream(str(store), args.seq, args.batch, view="30x56"))
        next(stream)
        t = time.perf_counter()
        n = 50
        for _ in range(n):
            next(stream)
        low_rate = n / (time.perf_counter() - t)
        full_stream = iter(SegmentStream(str(store), args.seq, args.batch))
        next(full_stream)
        t = time.perf_counter()
        for _ in range(10):
            next(full_stream)
        full_rate = 10 / (time.perf_counter() - t)
    frames = args.episodes * args.frames
    print(f"\none core; {frames} frames; segments of {args.seq}, batches of {args.batch}")
    print(f"{'measure':34} {'DIAMOND':>12} {'csdm':>12} {'csdm/DIAMOND':>13}")
    print(
        f"{'preparation s (lower is better)':34} {t_diamond:12.2f} {t_csdm:12.2f} "
        f"{t_diamond / t_csdm:12.2f}x faster (goal >= 2)"
    )
    print(
        f"{'disk MB (lower is better)':34} {disk_d / 1e6:12.1f} {disk_c / 1e6:12.1f} "
        f"{disk_c / disk_d:12.2f}x (goal <= 0.55)"
    )
    print(
        f"{'full-res segments/s':34} {seg_d:12.1f} {seg_c:12.1f} "
        f"{seg_c / seg_d:12.2f}x (goal >= 1.2)"
    )
    if w_d is not None:
        print(
            f"{'full-res segments/s, 4 workers':34} {w_d[0]:12.1f} {w_c[0]:12.1f} "
            f"{w_c[0] / w_d[0]:12.2f}x ({len(cores)} cores)"
        )
        print(
            f"{'peak RSS per worker MB':34} {w_d[1] / 1e6:12.0f} {w_c[1] / 1e6:12.0f} "
            f"{w_c[1] / w_d[1]:12.2f}x"
        )
    else:
        print(f"full-res segments/s, 4 workers: csdm {w_c[0]:.1f} (DIAMOND's code not beside)")
    print(
        f"low-res 30x56 view: made in {t_views:.2f} s ({frames / t_views:,.0f} frames/s); "
        f"low_res/ copy {low / 1e6:.1f} MB"
    )
    print(
        f"SegmentStream, 30x56 view: {low_rate:.1f} batches/s "
        f"({low_rate * args.batch * args.seq:,.0f} frames/s) per core"
    )
    print(
        f"SegmentStream, full res: {full_rate:.1f} batches/s "
        f"({full_rate * args.batch * args.seq:,.0f} frames/s) per core"
    )


if __name__ == "__main__":
    main()
