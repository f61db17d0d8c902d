"""A Dask cluster that shares no disk: each worker has its own folder; the data is in a bucket.

The bucket is on a real S3-compatible server; the workers reach it only by its URL.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
from distributed import Client

from storage.containers import MemberRef, iter_container
from storage.dataset import open_dataset
from storage.episode import read_episode
from storage.registry import open_registry
from tests.flows.test_process import run_csdm
from tests.s3_server import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
STALL = str(Path(__file__).resolve().parents[1] / "worker_stall.py")


def _cluster(tmp_path: Path, env: dict):
    """Start a scheduler and two single-threaded workers; yield (address, client, workers)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    sched = subprocess.Popen(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            address.rsplit(":")[-1],
            "--no-dashboard",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = []
    try:
        with Client(address, timeout="60s") as client:
            for i in range(2):
                home = tmp_path / f"worker{i}"  # its own folder: no path to the data
                home.mkdir()
                workers.append(
                    subprocess.Popen(
                        [
                            str(BIN / "dask"),
                            "worker",
                            address,
                            "--nthreads",
                            "1",
                            "--no-nanny",
                            "--no-dashboard",
                            "--name",
                            f"w{i}",
                            "--local-directory",
                            str(home),
                            "--preload",
                            STALL,
                        ],
                        env=env,
                        cwd=home,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            client.wait_for_workers(2, timeout=60)
            yield address, client, workers
    finally:
        for p in [*workers, sched]:
            p.terminate()
        for p in [*workers, sched]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _bit_exact(out: str, synth_tree: Path) -> None:
    ds = open_dataset(out)
    assert len(ds.episodes) == 8
    local = {m.name: m for m in iter_container(synth_tree) if isinstance(m, MemberRef)}
    for episode in ds.episodes:
        want = read_episode(local[f"hdf5_{episode}.hdf5"], parts=("x",))["x"]
        np.testing.assert_array_equal(ds.frames(episode), want)
    rows = ds.catalog.to_table(["episode"])["episode"].to_pylist()
    assert sorted(set(rows)) == ds.episodes and len(rows) == 480  # each committed once
    # no debris a reader could trip on: records folded, no half rows, no markers, no extra arrays
    assert not ds.state.pending and not ds.state.markers
    assert ds.layout.root.list(ds.layout.pending_frames) == []
    assert ds.layout.root.list("frames.zarr") == [*ds.episodes, "zarr.json"]


def test_process_query_train_register_on_a_cluster_without_shared_disk(
    s3_source: str, bucket: str, synth_tree: Path, prefect_api: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    out = f"{bucket}/out"
    for address, client, _ in _cluster(tmp_path, env):
        r = run_csdm("process", s3_source, out, "--scheduler", address, api=prefect_api)
        assert r.returncode == 0, r.stderr

        def repacked(dask_scheduler) -> int:
            return sum(
                1
                for key, _, finish, *_ in dask_scheduler.transition_log
                if finish == "memory" and "repack" in str(key)
            )

        assert client.run_on_scheduler(repacked) == 8  # every episode ran on the workers
        _bit_exact(out, synth_tree)
        r = run_csdm(
            "query",
            out,
            "select count(*) as n, count(distinct episode) as e from frames",
            "--format",
            "csv",
            api=prefect_api,
        )
        assert r.returncode == 0 and r.stdout.split() == ["n,e", "480,8"], r.stderr
        # train a few steps on a worker, reading the bucket; export and register into it
        from flows.train import train_flow

        job = functools.partial(
            train_flow,
            out,
            "runs/tiny",
            preset="tiny",
            steps=3,
            workers=0,
            registry=f"{bucket}/models",
            name="csdm-policy",
            alias="production",
        )
        done = client.submit(job, pure=False).result(timeout=300)
        assert done.train.step == 3 and done.registered["version"] == 1
        assert done.registered["location"] == f"{bucket}/models/csdm-policy/v1"
        assert not Path("runs/tiny").exists()  # the run folder is the worker's own
        registry = open_registry(f"{bucket}/models", "csdm-policy")
        v = registry.resolve(alias="production")
        pulled = registry.download(v, tmp_path / "pulled")
        import onnxruntime as ort

        names = {i.name for i in ort.InferenceSession(str(pulled / "policy.onnx")).get_inputs()}
        assert names and (pulled / "policy.json").exists()
        assert (
            done.registered["sha256"]
            == __import__("hashlib").sha256((pulled / "policy.onnx").read_bytes()).hexdigest()
        )


def test_a_worker_killed_mid_episode_leaves_every_episode_committed_once(
    s3_source: str, bucket: str, synth_tree: Path, prefect_api: str, tmp_path: Path
) -> None:
    signal_file = tmp_path / "stalled.pid"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "CSDM_TEST_STALL_EPISODE": "dm_july2021_2",
        "CSDM_TEST_STALL_SIGNAL": str(signal_file),
    }
    out = f"{bucket}/out"
    for address, _client, workers in _cluster(tmp_path, env):
        run = subprocess.Popen(
            [str(BIN / "csdm"), "process", s3_source, out, "--scheduler", address],
            env={**env, "COLUMNS": "200"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 180
        while not signal_file.exists() or not signal_file.read_text():
            assert time.monotonic() < deadline and run.poll() is None, "no worker stalled"
            time.sleep(0.05)
        pid = int(signal_file.read_text())
        assert pid in {w.pid for w in workers}
        # frames of the episode are written, its rows and record are not: kill the worker
        assert fsspec.filesystem("s3").exists(f"{out[5:]}/frames.zarr/dm_july2021_2/zarr.json")
        os.kill(pid, signal.SIGKILL)
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        _bit_exact(out, synth_tree)
