"""Benchmark: streamed ingest-and-process against ingest then process, on a throttled hub.

Run: `make bench` (or `.venv/bin/python -m bench.pipeline --tars 4 --mbps 20`). Serves a
synthetic source from the local Hub-compatible test server with each transfer throttled,
then measures in one run: (a) `ingest` alone, (b) `process` alone on what (a) fetched, and
(c) `pipeline` from scratch. Goal: (c) within 1.2x of max((a), (b)).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tasks.synth import SynthConfig, write_synthetic_tree
from tests.hub_server import FakeHub, Faults, HubServer
from tests.tasks.test_hub import REPO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tars", type=int, default=4)
    ap.add_argument("--episodes-per-tar", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--mbps", type=float, default=15.0, help="throttle per transfer, MB/s")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from flows.prefect_api import local_api

    with tempfile.TemporaryDirectory() as tmp_, local_api():
        from prefect.task_runners import ThreadPoolTaskRunner

        from flows.ingest import ingest_flow
        from flows.pipeline import pipeline_flow
        from flows.process import dask_runner, process_flow

        tmp = Path(tmp_)
        cfg = SynthConfig(seed=1, frames=args.frames, tars=args.tars,
                          episodes_per_tar=args.episodes_per_tar, expert_episodes=0)  # fmt: skip
        write_synthetic_tree(tmp / "src", cfg)
        files = {str(p.relative_to(tmp / "src")): p.read_bytes()
                 for p in (tmp / "src").rglob("*") if p.is_file()}  # fmt: skip
        hub = FakeHub()
        hub.commit(REPO, files)
        for p in files:
            hub.faults[p] = Faults(bytes_per_s=args.mbps * 1e6)
        total = sum(len(b) for b in files.values())
        print(f"source: {len(files)} files, {total / 1e6:.0f} MB, throttled to {args.mbps} MB/s "
              f"per transfer, 2 transfers, {args.workers} Dask workers")  # fmt: skip
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
            t = time.perf_counter()
            pipeline_flow(str(tmp / "out2"), str(tmp / "dl2"), REPO, "main", ["*"],
                          endpoint=server.endpoint, transfers=2, delete_sources=True,
                          workers=args.workers or 0)  # fmt: skip
            t_pipe = time.perf_counter() - t
        bound = max(t_ingest, t_process)
        print(f"  ingest alone          : {t_ingest:6.1f} s")
        print(f"  process alone         : {t_process:6.1f} s")
        print(f"  ingest, then process  : {t_ingest + t_process:6.1f} s  (sequential baseline)")
        print(f"  pipeline (streamed)   : {t_pipe:6.1f} s  = {t_pipe / bound:.2f}x max(ingest, "
              f"process); goal <= 1.2x; {(t_ingest + t_process) / t_pipe:.2f}x faster than "
              "sequential")  # fmt: skip


if __name__ == "__main__":
    main()
