"""Benchmark: random 96-frame training windows per second on one core, csdm against its peers.

Run: `.venv/bin/python -m bench.loader [--codec up-zstd --episodes 4 --frames 1000]`.
Realistic simulated episodes (tasks/synth/frames.py) are processed into the store; the same
random windows are then read, in one run and on one core (the process is pinned to it):
- csdm's read path (`Dataset.frames`: shard indexes cached, one range per shard, crc32c,
  zstd into the window, the compiled predictor inverse);
- csdm through zarr, as before this path (the baseline it must beat 2x);
- extracted HDF5, a dataset per frame, the file opened per window: how DIAMOND and the seed
  read (the peer it must beat 1.5x);
- zstd alone on the bytes of the chunks those windows touch, in memory (the entropy stage's
  limit; goal >= 60%), counted in window frames like every other row;
- the codec's decode before this path on those bytes (zstd, then the numpy predictor inverse);
- where a read's time goes: fetching the ranges, crc32c, zstd and the predictor, timed apart;
- `WindowStream` batches, frames and labels (goal >= 0.9x the window rate); the GPU path's
  host work per batch (`decode="cuda"`: read, crc32c and pack, no decoding), which runs here
  without a GPU;
- `make_loader` with one thread per core, per thread against `WindowStream`'s in-process rate
  on one core (goal >= 0.9x), and torch's DataLoader with as many spawned worker processes,
  the loader before, measured the same way.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import imagecodecs
import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader

from bench.repack import build_source
from storage.codecs import DEFAULT_CODEC, FRAME_CODECS, PredictorCodec
from storage.dataset import open_dataset
from storage.framestore import open_frames
from storage.fs import Root
from storage.unpredict import undo_predictor
from tasks.params import ProcessParams
from tasks.process_source import process_source
from training.data import SamplerConfig, WindowStream, build_index, load_labels, make_loader

WINDOW = 96


def hdf5_window(path: Path, start: int, out: np.ndarray) -> None:
    """DIAMOND's and the seed's way: open the file, read `frame_i_x` for each frame."""
    with h5py.File(path, "r") as h5:
        for j in range(len(out)):
            out[j] = h5[f"frame_{start + j}_x"][()]


def best(fn, rounds: int = 3) -> float:
    """Best of `rounds` timings (page cache and allocator warm for every contender)."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def chunk_bytes(ds, episode: str, picks: list[int]) -> list[tuple[bytes, str | None]]:
    """The stored zstd bodies of every chunk the windows touch, with their predictor."""
    reader = ds.reader(episode)
    out = []
    for s in picks:
        for c, data, _, _ in reader.chunks(s, s + WINDOW):
            out.append((bytes(reader.body(c, data)), reader.layout.predictor))
    return out


def anatomy(ds, picks: list[tuple[str, int]]) -> dict[str, float]:
    """Seconds each stage of csdm's read takes over the windows, stage by stage in turn."""
    readers = {e: ds.reader(e) for e, _ in picks}
    t = {}
    start = time.perf_counter()
    found = [(readers[e], readers[e].chunks(s, s + WINDOW)) for e, s in picks]
    t["fetch"] = time.perf_counter() - start
    start = time.perf_counter()
    bodies = [(r, r.body(c, data)) for r, chunks in found for c, data, _, _ in chunks]
    t["crc32c"] = time.perf_counter() - start
    lay = bodies[0][0].layout
    scratch = np.empty((len(bodies), lay.chunk, *lay.shape[1:]), np.uint8)
    scratch[:] = 0  # faulted in first: the stages below time work, not page faults
    start = time.perf_counter()
    for (_, body), out in zip(bodies, scratch, strict=True):
        imagecodecs.zstd_decode(body, out=out.reshape(-1))
    t["zstd"] = time.perf_counter() - start
    start = time.perf_counter()
    if lay.predictor:
        for out in scratch:
            undo_predictor(out, lay.predictor, out=out)
    t["predictor"] = time.perf_counter() - start
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default=DEFAULT_CODEC, choices=sorted(FRAME_CODECS))
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=48, help="windows per measurement")
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})  # one core for every single-core figure
    zarr.config.set({"threading.max_workers": 1, "async.concurrency": 1})
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        sources = build_source(tmp / "source", args.episodes, args.frames)
        out = tmp / "out"
        process_source(Root(str(tmp / "source")), Root(str(out)), ProcessParams(codec=args.codec))
        loose = {}
        for s in sources:  # the extracted HDF5 files the peers train from
            loose[s.episode.name] = tmp / s.episode.hdf5_name
            with s.ref.open() as f:
                loose[s.episode.name].write_bytes(f.read())
        ds = open_dataset(out)
        names = [s.episode.name for s in sources]
        rng = np.random.default_rng(0)
        picks = [
            (names[rng.integers(len(names))], int(rng.integers(0, args.frames - WINDOW)))
            for _ in range(args.windows)
        ]
        buf = np.empty((WINDOW, 150, 280, 3), np.uint8)
        arrays = {n: open_frames(ds.layout, n) for n in names}
        n_frames = args.windows * WINDOW

        def new() -> None:
            for e, s in picks:
                ds.frames(e, s, s + WINDOW, out=buf)

        def via_zarr() -> None:
            for e, s in picks:
                buf[:] = arrays[e][s : s + WINDOW]

        def hdf5() -> None:
            for e, s in picks:
                hdf5_window(loose[e], s, buf)

        bodies = [b for e, s in picks for b in chunk_bytes(ds, e, [s])]
        chunk = FRAME_CODECS[args.codec].chunk_frames
        zbuf = np.empty(chunk * 150 * 280 * 3, np.uint8)

        def zstd_alone() -> None:
            for body, _ in bodies:
                imagecodecs.zstd_decode(body, out=zbuf)

        def old_codec() -> None:
            for body, kind in bodies:
                r = np.frombuffer(imagecodecs.zstd_decode(body), np.uint8)
                if kind:
                    PredictorCodec(kind=kind).decode_array(r.reshape(chunk, 150, 280, 3))

        new()  # the compiled inverse loaded and the shard indexes read, as in training
        t = {f.__name__: best(f) for f in (new, via_zarr, hdf5)}
        # the chunk rows decode every chunk the windows touch (whole chunks, about 7 for a
        # 96-frame window of 16-frame chunks), and count the windows' frames: a window
        # cannot be had for less
        t_z, t_old = best(zstd_alone), best(old_codec)
        rate = {k: n_frames / v for k, v in t.items()}
        z_rate, old_rate = n_frames / t_z, n_frames / t_old

        cfg = SamplerConfig(window=WINDOW, keep_only=False, split=None)
        index = build_index(load_labels(out, cfg), cfg)
        stream = WindowStream(out, index, args.batch)
        n_batches = max(1, args.windows // args.batch)
        plan = [stream.windows(0, b % stream.batches_per_epoch) for b in range(n_batches)]
        stream.read(plan[0])
        t_stream = best(lambda: [stream.read(w) for w in plan])
        stream_rate = n_batches * args.batch * WINDOW / t_stream

        packing = WindowStream(out, index, args.batch, decode="cuda")
        packing.read(plan[0])
        t_pack = best(lambda: [packing.read(w) for w in plan])
        pack_rate = n_batches * args.batch * WINDOW / t_pack

        print(
            f"{args.episodes} episodes x {args.frames} realistic frames, codec {args.codec}; "
            f"{args.windows} random {WINDOW}-frame windows; one core "
            f"({os.cpu_count()} on this machine), page cache warm, best of 3"
        )
        print(f"  csdm read path (Dataset.frames)   : {rate['new']:8.0f} frames/s")
        print(
            f"  csdm through zarr (before)        : {rate['via_zarr']:8.0f} frames/s  "
            f"new/zarr {rate['new'] / rate['via_zarr']:.2f}x (goal >= 2x)"
        )
        print(
            f"  extracted HDF5 per frame (peers)  : {rate['hdf5']:8.0f} frames/s  "
            f"new/hdf5 {rate['new'] / rate['hdf5']:.2f}x (goal >= 1.5x)"
        )
        print(
            f"  zstd alone, the windows' chunks   : {z_rate:8.0f} frames/s  "
            f"new/zstd {rate['new'] / z_rate:.0%} (goal >= 60%)"
        )
        print(
            f"  old codec decode, same chunks     : {old_rate:8.0f} frames/s  "
            f"new/old {rate['new'] / old_rate:.2f}x"
        )
        print(
            f"  WindowStream batches (+ labels)   : {stream_rate:8.0f} frames/s  "
            f"{stream_rate / rate['new']:.2f}x the window rate (goal >= 0.9x)"
        )

        print(
            f"  GPU path, host work (no decoding) : {pack_rate:8.0f} frames/s  "
            f"{rate['new'] / pack_rate:.2f}x the CPU path's host time (goal <= 0.2x)"
        )
        stages = min((anatomy(ds, picks) for _ in range(3)), key=lambda d: sum(d.values()))
        total = sum(stages.values())
        print(
            "  where a read's time goes (stages timed apart, best of 3): "
            + ", ".join(f"{k} {v / total:.0%}" for k, v in stages.items())
        )
        # the loaders against the same stream's batches read in-process on one core, over
        # 4x the batches above: a longer pass than the rows above, so less noise in the ratio
        n_long = 4 * n_batches
        solo = WindowStream(out, index, args.batch)
        solo.batch(0)
        t_solo = best(lambda: [solo.batch(g) for g in range(n_long)])
        solo_rate = n_long * args.batch * WINDOW / t_solo
        print(f"  WindowStream, {n_long} batches in order : {solo_rate:8.0f} frames/s (one core)")
        os.sched_setaffinity(0, set(cores))
        workers = len(cores)
        spawned = DataLoader(  # the loader before: worker processes, batches in shared memory
            WindowStream(out, index, args.batch),
            batch_size=None,
            num_workers=workers,
            multiprocessing_context="spawn",
            persistent_workers=True,
            prefetch_factor=4,
        )
        threads = make_loader(WindowStream(out, index, args.batch), workers, pin=False)
        for name, loader in (("make_loader, threads", threads), ("DataLoader, processes", spawned)):
            it = iter(loader)
            for _ in range(2 * workers):
                next(it)  # workers started and warm
            secs = best(lambda it=it: [next(it) for _ in range(n_long)])  # best of 3, as solo
            per = n_long * args.batch * WINDOW / secs / workers
            goal = " (goal >= 0.9x)" if "threads" in name else ""
            print(
                f"  {name}, {workers} on {workers} cores: {per * workers:8.0f} frames/s, "
                f"{per:.0f} per worker = {per / solo_rate:.2f}x in-process per core{goal}"
            )


if __name__ == "__main__":
    main()
