"""`csdm process --scheduler` on a real Dask scheduler with two worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from storage.containers import MemberRef, iter_container
from storage.dataset import open_dataset
from storage.episode import read_episode
from tests.flows.test_process import run_csdm

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(prefect_api: str, tmp_path: Path):
    address = f"tcp://127.0.0.1:{_port()}"
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
         "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]  # fmt: skip
    try:
        with Client(address, timeout="60s") as client:
            for i in range(2):
                procs.append(subprocess.Popen(
                    [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard",
                     "--name", f"w{i}", "--local-directory", str(tmp_path / f"w{i}")],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
            client.wait_for_workers(2, timeout=60)
            yield address, client
    finally:
        for p in reversed(procs):
            p.terminate()
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()


def test_process_runs_on_an_existing_cluster(cluster, synth_tree: Path, prefect_api: str,
                                             tmp_path: Path) -> None:  # fmt: skip
    address, client = cluster
    out = tmp_path / "out"
    r = run_csdm("process", str(synth_tree), str(out), "--scheduler", address, api=prefect_api)
    assert r.returncode == 0, r.stderr

    def repacked(dask_scheduler) -> int:
        return sum(1 for key, _, finish, *_ in dask_scheduler.transition_log
                   if finish == "memory" and "repack" in str(key))  # fmt: skip

    ds = open_dataset(out)
    assert len(ds.episodes) == 8
    assert client.run_on_scheduler(repacked) == 8  # every episode ran on this cluster's workers
    refs = [m for m in iter_container(synth_tree) if isinstance(m, MemberRef) and m.member]
    for m in refs[:3]:
        episode = m.name.removeprefix("hdf5_").removesuffix(".hdf5")
        np.testing.assert_array_equal(ds.frames(episode), read_episode(m, parts=("x",))["x"])
