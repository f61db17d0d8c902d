"""Benchmark: datasets on object storage (a local S3-compatible server) against a local folder.

Run: `.venv/bin/python -m bench.objectstore` (also part of `make bench`). In one run:
- the storage backend choice: reading the stored shard objects with s3fs (fsspec) and with
  obstore, concurrently;
- `process_source` from the same local source into the S3 server and into a local folder
  (MB/s of raw frame bytes; goal S3 >= 0.8x local);
- random 96-frame training windows through the training stream, from S3 and from the local
  folder, with parallel range reads (frames/s; goal S3 >= 0.7x local);
- a simulated catalog of 5,500 episodes (labels only) on the S3 server: `open_dataset` plus a
  `count(*) ... group by` query, before and after compaction: requests and seconds (goal after
  compaction: under 50 requests and under 2 s).
Frames are the realistic simulated ones (they compress about 2x with the default codec).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import s3fs

from bench.repack import build_source, timed
from storage.catalog import FRAMES_SCHEMA
from storage.commit import commit_episode, compact
from storage.dataset import connect_catalog, open_dataset
from storage.fs import Root
from storage.layout import OutLayout
from storage.records import EpisodeRecord, Manifest
from tasks.params import ProcessParams
from tasks.process_source import process_source, run_threads
from tests.s3_server import MotoServer
from training.data import SamplerConfig, WindowStream, build_index, load_labels

WINDOW = 96
CALLS = {"n": 0}


def count_requests() -> None:
    """Count every request s3fs sends (pyarrow and zarr reach S3 through it too)."""
    real = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        CALLS["n"] += 1
        return await real(self, method, *args, **kwargs)

    s3fs.S3FileSystem._call_s3 = counted


def backend_choice(out: str) -> None:
    """The same reads through s3fs (fsspec) and obstore: whole shards, then chunk-sized ranges."""
    import obstore
    from obstore.store import S3Store

    bucket, prefix = out[5:].split("/", 1)
    fs = fsspec.filesystem("s3")
    keys = [k for k in fs.find(f"{bucket}/{prefix}/frames.zarr") if "/c/" in k]
    sizes = [fs.info(k)["size"] for k in keys]
    store = S3Store(
        bucket, endpoint=os.environ["AWS_ENDPOINT_URL"], allow_http=True, region="us-east-1"
    )
    rng = np.random.default_rng(0)
    span = 4 << 20  # about one 32-frame chunk of real-looking frames
    picks = [
        (int(i), int(rng.integers(0, sizes[i] - span))) for i in rng.integers(0, len(keys), 64)
    ]

    def whole_s3fs() -> None:
        fs.cat(keys)

    def whole_obstore() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: obstore.get(store, k.split("/", 1)[1]).bytes(), keys))

    def ranges_s3fs() -> None:
        fs.cat_ranges(
            [keys[i] for i, _ in picks], [s for _, s in picks], [s + span for _, s in picks]
        )

    def one_range(p: tuple[int, int]) -> bytes:
        return obstore.get_range(store, keys[p[0]].split("/", 1)[1], start=p[1], end=p[1] + span)

    def ranges_obstore() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one_range, picks))

    print("\n[backend: the same reads through each client, 8 at a time; best of 3]")
    cases = [
        (
            f"{len(keys)} whole shards, {sum(sizes) / 1e6:.0f} MB",
            sum(sizes),
            whole_s3fs,
            whole_obstore,
        ),
        (f"{len(picks)} ranges of {span >> 20} MB", len(picks) * span, ranges_s3fs, ranges_obstore),
    ]
    for what, total, *pair in cases:
        t_fs, t_ob = (min(timed(fn) for _ in range(3)) for fn in pair)
        print(
            f"  {what:28s}: s3fs {total / t_fs / 1e6:7.1f} MB/s, obstore "
            f"{total / t_ob / 1e6:7.1f} MB/s (obstore takes {t_ob / t_fs:.2f}x the time)"
        )


def server_costs(out: str) -> None:
    """What this S3 server itself costs: a whole-object PUT, and a tiny range GET of a shard."""
    fs = fsspec.filesystem("s3")
    key = max(
        (k for k in fs.find(out[5:] + "/frames.zarr") if "/c/" in k),
        key=lambda k: fs.info(k)["size"],
    )
    data = fs.cat_file(key)
    t_put = min(timed(lambda: fs.pipe_file(key + ".copy", data)) for _ in range(2))
    t_get = min(timed(lambda: fs.cat_file(key, start=0, end=16)) for _ in range(5))
    fs.rm_file(key + ".copy")
    print(f"\n[the S3 server itself (moto), on a {len(data) / 1e6:.0f} MB shard]")
    print(
        f"  one PUT: {len(data) / t_put / 1e6:.0f} MB/s; one 16-byte range GET: "
        f"{t_get * 1e3:.0f} ms (moto copies the whole object for every GET)"
    )


def process_both(source: Path, local: Path, remote: str, raw: int, threads: int) -> None:
    """The same run into a folder and into the bucket, twice each, interleaved; best of two."""
    times = {"local folder": [], "S3 server": []}
    mapper = run_threads(threads)
    for r in range(2):
        times["local folder"].append(
            timed(
                lambda r=r: process_source(
                    Root(str(source)), Root(str(local / f"run{r}")), ProcessParams(), mapper
                )
            )
        )
        times["S3 server"].append(
            timed(
                lambda r=r: process_source(
                    Root(str(source)), Root(f"{remote}/run{r}"), ProcessParams(), mapper
                )
            )
        )
    best = {k: raw / min(v) / 1e6 for k, v in times.items()}
    print(
        f"\n[process_source, {raw / 1e6:.0f} MB raw, {threads} episode(s) at a time in one "
        "process; best of 2]"
    )
    for name, mbs in best.items():
        print(f"  into the {name:12s}: {mbs:7.1f} MB/s")
    print(f"  S3 / local: {best['S3 server'] / best['local folder']:.2f}x  (goal >= 0.8x)")


def bytes_only(stream: WindowStream, n_batches: int, threads: int) -> float:
    """The server's ceiling: window frames/s when the same byte ranges are fetched, not decoded."""
    ds, labels = stream._ds, stream.index.labels
    wins = [
        (labels.episodes[e], s)
        for b in range(n_batches)
        for e, s in stream.windows(0, b % stream.batches_per_epoch)
    ]

    def fetch(w: tuple[str, int]) -> list:
        return ds.reader(w[0]).chunks(w[1], w[1] + WINDOW)

    with ThreadPoolExecutor(threads) as pool:
        t = min(timed(lambda: list(pool.map(fetch, wins))) for _ in range(2))
    return len(wins) * WINDOW / t


def windows_both(local: str, remote: str, n_batches: int, threads: int) -> None:
    """Random 96-frame windows through the training stream, from both stores.

    Requests are counted on S3 twice: from a cold stream (its shard indexes unread), and once
    every index has been read (the steady state of a training run, which reads each once).
    """
    cfg = SamplerConfig(window=WINDOW, keep_only=False)
    rates, cold, warm = {}, 0.0, 0.0
    for name, root in (("local folder", local), ("S3 server", remote)):
        index = build_index(load_labels(root, cfg), cfg)
        best = 0.0
        stream = WindowStream(root, index, batch_size=8, read_threads=threads)
        for r in range(3):
            CALLS["n"] = 0
            t = time.perf_counter()
            for b in range(n_batches):
                stream.read(stream.windows(r, b % stream.batches_per_epoch))
            best = max(best, n_batches * 8 * WINDOW / (time.perf_counter() - t))
            if r == 0:
                cold = CALLS["n"] / (n_batches * 8)
            warm = CALLS["n"] / (n_batches * 8)  # the S3 run's counts are the ones kept
        rates[name] = best
        if name == "S3 server":
            rates["S3 server, bytes only (moto's ceiling)"] = bytes_only(stream, n_batches, threads)
    print(f"\n[random {WINDOW}-frame windows, batches of 8, {threads} read threads; best of 3]")
    for name, r in rates.items():
        print(f"  from the {name:12s}: {r:8.0f} frames/s")
    ceiling = rates["S3 server, bytes only (moto's ceiling)"]
    print(
        f"  S3 / local: {rates['S3 server'] / rates['local folder']:.2f}x  (goal >= 0.7x); "
        f"S3 / moto's ceiling: {rates['S3 server'] / ceiling:.2f}x"
    )
    print(
        f"  S3 requests per window: {cold:.2f} cold, {warm:.2f} with every shard index read "
        "(goal <= 1.2)"
    )


def simulated_catalog(remote: str, episodes: int, frames: int) -> None:
    """Labels-only catalog of `episodes` episodes; open + group-by before and after compaction."""
    layout = OutLayout.at(remote)
    layout.root.put_json(layout.manifest, Manifest("bench", ["simulated"], {}).to_dict())
    base = {f.name: pa.nulls(frames, f.type) for f in FRAMES_SCHEMA}
    for f in FRAMES_SCHEMA:
        if not f.nullable:
            base[f.name] = (
                pa.array(np.zeros(frames, bool)) if f.type == pa.bool_() else base[f.name]
            )

    def one(i: int) -> None:
        ep = f"dm_july2021_{i + 1}"
        cols = {
            **base,
            "dataset": pa.array(["dm_july2021"] * frames),
            "episode": pa.array([ep] * frames),
            "file_num": pa.array([i + 1] * frames, pa.int32()),
            "frame": pa.array(np.arange(frames, dtype=np.int32)),
            "split": pa.array(["test" if i % 10 == 0 else "train"] * frames),
            "mouse_x": pa.array(np.zeros(frames, np.float32)),
            "mouse_y": pa.array(np.zeros(frames, np.float32)),
        }
        key = layout.new_frames_file(ep)
        layout.root.put_parquet(key, pa.table(cols, schema=FRAMES_SCHEMA))
        commit_episode(
            layout,
            EpisodeRecord(
                ep,
                "dm_july2021",
                i + 1,
                "train",
                "a.tar",
                ep,
                n_frames=frames,
                status="stored",
                keep=True,
                frames_file=key,
            ),
        )

    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(episodes)))
    print(
        f"\n[catalog of {episodes} episodes x {frames} label rows on the S3 server "
        f"(written in {time.perf_counter() - t:.0f} s)]"
    )
    sql = "select dataset, split, count(*) from frames group by all order by all"

    def measure(label: str) -> None:
        CALLS["n"] = 0
        t = time.perf_counter()
        ds = open_dataset(remote)
        opened, t_open = CALLS["n"], time.perf_counter() - t
        rows = connect_catalog(ds).execute(sql).fetchall()
        total = time.perf_counter() - t
        assert sum(r[2] for r in rows) == episodes * frames, rows
        print(
            f"  {label:18s}: open {opened:5d} requests {t_open:6.2f} s; open + query "
            f"{CALLS['n']:5d} requests {total:6.2f} s"
        )

    measure("before compaction")
    t = time.perf_counter()
    index = compact(layout)
    print(
        f"  compaction        : {time.perf_counter() - t:6.2f} s -> "
        f"{len(index.frames_parts)} frames files"
    )
    measure("after compaction")
    print("  goal after compaction: under 50 requests and under 2 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=8, help="read threads of the stream")
    ap.add_argument("--process-threads", type=int, default=2, help="episodes at a time")
    ap.add_argument("--catalog-episodes", type=int, default=5500)
    ap.add_argument("--catalog-frames", type=int, default=1000)
    ap.add_argument("--only-windows", action="store_true", help="skip the other measures")
    args = ap.parse_args()
    count_requests()
    with MotoServer() as endpoint, tempfile.TemporaryDirectory() as tmp_:
        os.environ.update(endpoint.env())
        tmp = Path(tmp_)
        fsspec.filesystem("s3").mkdir("bench")
        sources = build_source(tmp / "source", args.episodes, args.frames)
        raw = args.episodes * args.frames * 150 * 280 * 3
        print(f"source: {len(sources)} episodes x {args.frames} frames, {raw / 1e6:.0f} MB raw")
        if args.only_windows:
            for root in (str(tmp / "local" / "run0"), "s3://bench/out/run0"):
                process_source(Root(str(tmp / "source")), Root(root), ProcessParams())
        else:
            process_both(tmp / "source", tmp / "local", "s3://bench/out", raw, args.process_threads)
            server_costs("s3://bench/out/run0")
            backend_choice("s3://bench/out/run0")
        windows_both(str(tmp / "local" / "run0"), "s3://bench/out/run0", args.batches, args.threads)
        if not args.only_windows:
            simulated_catalog("s3://bench/catalog", args.catalog_episodes, args.catalog_frames)


if __name__ == "__main__":
    main()
