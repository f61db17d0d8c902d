"""Benchmark: the pipeline on a throttled hub, downloading to disk against streaming (`--stream`).

Run: `make bench` (or `.venv/bin/python -m bench.pipeline --tars 4 --mbps 15`). Serves a
synthetic source with realistic frames (tasks/synth/frames.py) from the
local Hub-compatible test server, each transfer throttled, and measures in one run:
(a) `ingest` alone, (b) `process` alone on what (a) fetched, (c) `pipeline` from scratch
(2 transfers, tars deleted once processed) and (d) `pipeline --stream`. Local disk is polled
throughout (d): the downloads folder, the temporary folder and the Dask workers' folders.
Goals: (c) within 1.2x of max((a), (b)); (d) within 1.05x of (c), with no archive bytes ever
on local disk, peak scratch under two episodes, and each worker's peak RSS reported.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from tasks.synth.tree import SynthConfig, write_synthetic_tree
from tests.hub_server import FakeHub, Faults, HubServer
from tests.tasks.test_hub import REPO


class DiskWatch:
    """Polls folders for the bytes of their files: the peak, and any archive seen there."""

    def __init__(self, folders: list[Path], every: float = 0.02) -> None:
        self.folders, self.every = folders, every
        self.peak, self.archives, self.samples = 0, set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _size(self) -> int:
        total = 0
        for folder in self.folders:
            for dirpath, _, names in os.walk(folder):
                for name in names:
                    try:
                        total += os.stat(os.path.join(dirpath, name)).st_size
                    except FileNotFoundError:  # deleted while walking
                        continue
                    if ".tar" in name or ".zip" in name:  # whole, partial or aside
                        self.archives.add(name)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._size())
            self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tars", type=int, default=4)
    ap.add_argument("--episodes-per-tar", type=int, default=2)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--mbps", type=float, default=15.0, help="throttle per transfer, MB/s")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        scratch = tmp / "scratch"  # every temporary file of this process and its workers
        scratch.mkdir()
        os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        os.environ["DASK_TEMPORARY_DIRECTORY"] = str(scratch)
        run(tmp, scratch, args)


def run(tmp: Path, scratch: Path, args) -> None:
    from flows.prefect_api import local_api

    cfg = SynthConfig(
        seed=1,
        frames=args.frames,
        tars=args.tars,
        episodes_per_tar=args.episodes_per_tar,
        expert_episodes=0,
    )
    write_synthetic_tree(tmp / "src", cfg)
    files = {
        str(p.relative_to(tmp / "src")): p.read_bytes()
        for p in (tmp / "src").rglob("*")
        if p.is_file()
    }
    episode = sum(len(b) for p, b in files.items() if p.endswith(".tar")) / (
        args.tars * args.episodes_per_tar
    )
    with local_api():
        from prefect.task_runners import ThreadPoolTaskRunner

        from flows.ingest import ingest_flow
        from flows.pipeline import pipeline_flow
        from flows.process import dask_runner, process_flow

        hub = FakeHub()
        hub.commit(REPO, files)
        for p in files:
            hub.faults[p] = Faults(bytes_per_s=args.mbps * 1e6)
        total = sum(len(b) for b in files.values())
        print(
            f"source: {len(files)} files, {total / 1e6:.0f} MB ({args.tars} tars x "
            f"{args.episodes_per_tar} episodes x {args.frames} frames, "
            f"realistic frames, one episode "
            f"{episode / 1e6:.0f} MB), throttled to {args.mbps} MB/s per transfer, "
            f"{args.workers} Dask workers"
        )
        with HubServer(hub) as server:
            t = time.perf_counter()
            ingest_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(
                REPO, "main", [], [], [], str(tmp / "dl"), server.endpoint
            )
            t_ingest = time.perf_counter() - t
            t = time.perf_counter()
            process_flow.with_options(task_runner=dask_runner(args.workers))(
                str(tmp / "dl"), str(tmp / "out1")
            )
            t_process = time.perf_counter() - t
            with DiskWatch([tmp / "dl2", scratch]) as disk_watch:
                t = time.perf_counter()
                pipeline_flow(
                    str(tmp / "out2"),
                    str(tmp / "dl2"),
                    REPO,
                    "main",
                    ["*"],
                    endpoint=server.endpoint,
                    transfers=2,
                    delete_sources=True,
                    workers=args.workers,
                )
                t_pipe = time.perf_counter() - t
            with DiskWatch([tmp / "dl3", scratch]) as stream_watch:
                t = time.perf_counter()
                res = pipeline_flow(
                    str(tmp / "out3"),
                    str(tmp / "dl3"),
                    REPO,
                    "main",
                    ["*"],
                    endpoint=server.endpoint,
                    workers=args.workers,
                    stream=True,
                )
                t_stream = time.perf_counter() - t
            # the same two runs on a cluster that is already up, as with --scheduler
            from distributed import LocalCluster

            with LocalCluster(
                n_workers=args.workers, threads_per_worker=1, dashboard_address=":0"
            ) as cluster:
                warm = {}
                for name, stream in (("disk", False), ("stream", True)):
                    t = time.perf_counter()
                    pipeline_flow(
                        str(tmp / f"out-{name}"),
                        str(tmp / f"dl-{name}"),
                        REPO,
                        "main",
                        ["*"],
                        endpoint=server.endpoint,
                        transfers=2,
                        delete_sources=True,
                        scheduler=cluster.scheduler_address,
                        stream=stream,
                    )
                    warm[name] = time.perf_counter() - t
    bound = max(t_ingest, t_process)
    ok = "met" if t_stream <= 1.05 * t_pipe else "NOT met"
    print(f"  ingest alone          : {t_ingest:6.1f} s")
    print(f"  process alone         : {t_process:6.1f} s")
    print(f"  ingest, then process  : {t_ingest + t_process:6.1f} s  (sequential baseline)")
    print(
        f"  pipeline (to disk)    : {t_pipe:6.1f} s  = {t_pipe / bound:.2f}x max(ingest, "
        "process); goal <= 1.2x"
    )
    print(
        f"  pipeline --stream     : {t_stream:6.1f} s  = {t_stream / t_pipe:.2f}x the pipeline "
        f"to disk; goal <= 1.05x: {ok}"
    )
    ok_warm = "met" if warm["stream"] <= 1.05 * warm["disk"] else "NOT met"
    print(
        f"  on a running cluster  : to disk {warm['disk']:5.1f} s, --stream "
        f"{warm['stream']:5.1f} s = {warm['stream'] / warm['disk']:.2f}x; goal <= 1.05x: "
        f"{ok_warm}"
    )
    print(
        f"  local disk, to disk   : peak {disk_watch.peak / 1e6:7.1f} MB "
        f"({disk_watch.peak / episode:.2f} episodes), archives seen: "
        f"{len(disk_watch.archives)}"
    )
    print(
        f"  local disk, --stream  : peak {stream_watch.peak / 1e6:7.1f} MB "
        f"({stream_watch.peak / episode:.2f} episodes; goal < 2), archives seen: "
        f"{len(stream_watch.archives)} (goal 0), {stream_watch.samples} samples"
    )
    gain, peak = res.counts["peak_worker_rss_gain"], res.counts["peak_worker_rss"]
    print(
        f"  peak RSS per worker   : {peak / 1e6:7.0f} MB (--stream); at most "
        f"{gain / 1e6:.0f} MB ({gain / episode:.1f} episodes) above its RSS when an archive "
        "began"
    )
    assert res.counts["stored"] == args.tars * args.episodes_per_tar, res


if __name__ == "__main__":
    main()
