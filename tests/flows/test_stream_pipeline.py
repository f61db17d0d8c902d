"""`csdm pipeline --stream`: archives stream from a local Hub server into a bucket, verified."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.dataset import open_dataset
from tests.flows.test_object_store_cluster import _bit_exact, _cluster
from tests.flows.test_pipeline import LIAR, liar_tar
from tests.hub_server import FakeHub, Faults, HubServer
from tests.tasks.test_hub import REPO
from tests.tasks.test_stream_source import TAR_A, TAR_B, _files, _member_offset

pytestmark = pytest.mark.slow
CSDM = str(Path(sys.executable).with_name("csdm"))


def _result(stdout: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in stdout.split() if "=" in kv)


def test_stream_into_a_bucket_on_a_cluster_survives_drops_a_corrupted_tar_and_a_killed_worker(
    synth_tree: Path, bucket: str, prefect_api: str, tmp_path: Path
) -> None:
    """One run meets every fault; a second, with the faults gone, completes the dataset.

    In tar A a 503 is answered once and the connection drops halfway; the worker streaming it
    is then killed after it wrote episode 2's frames. Tar B is corrupted inside episode 5.
    """
    files = _files(synth_tree)
    files[LIAR] = liar_tar(synth_tree)  # its damage is in the archive: the Hub's hash matches
    fake = FakeHub()
    fake.commit(REPO, files)
    fake.faults[TAR_A] = Faults(drop_after=len(files[TAR_A]) // 2, unavailable=1)
    fake.faults[TAR_B] = Faults(
        corrupt_at=_member_offset(files[TAR_B], "hdf5_dm_july2021_5.hdf5") + 999
    )
    scratch = tmp_path / "scratch"  # the only temporary folder of the run and its workers
    scratch.mkdir()
    signal_file = tmp_path / "stalled.pid"
    out = f"{bucket}/out"
    with HubServer(fake) as server:
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "HF_ENDPOINT": server.endpoint,
            "TMPDIR": str(scratch),
            "CSDM_TEST_STALL_EPISODE": "dm_july2021_2",
            "CSDM_TEST_STALL_SIGNAL": str(signal_file),
            "COLUMNS": "200",
        }
        for address, _client, workers in _cluster(tmp_path, env):
            args = [CSDM, "pipeline", out, "--stream", "--scheduler", address]
            run = subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            deadline = time.monotonic() + 240
            while not signal_file.exists() or not signal_file.read_text():
                assert time.monotonic() < deadline and run.poll() is None, "no worker stalled"
                time.sleep(0.05)
            pid = int(signal_file.read_text())
            assert pid in {w.pid for w in workers}
            # tar A is half read: episode 2's frames are written, none of its records
            assert "dm_july2021_1" not in open_dataset(out).episodes
            os.kill(pid, signal.SIGKILL)
            stdout, stderr = run.communicate(timeout=400)
            assert run.returncode == 1, stderr  # tar B failed: the run says so
            res = _result(stdout)
            # tar B's bytes are not the Hub's: a failure; the liar's are: a source defect
            assert res["stored"] == "5" and res["failed"] == "1" and res["failed_archives"] == "1"
            assert "source defect" in stdout
            assert f"{TAR_B}: checksum mismatch" in stdout + stderr
            assert f"{LIAR}: unreadable tar in or after member 'hdf5_dm_july2021_8.hdf5'" in (
                stdout + stderr
            )
            ranges = [q[2] for q in fake.requests if q[0] == "GET" and q[1].endswith(TAR_A)]
            # the 503, the transfer that dropped, its resumption, then from the start again
            assert ranges[:2] == [None, None] and ranges[2].startswith("bytes=")
            assert ranges[3:] == [None]
            ds = open_dataset(out)
            assert [e for e in ds.episodes if "expert" not in e] == [
                "dm_july2021_1",
                "dm_july2021_2",
                "dm_july2021_3",
            ]
            assert ds.layout.root.list("frames.zarr") == [*ds.episodes, "zarr.json"]
            left = [p for p in scratch.rglob("*") if p.is_file() and p.stat().st_size]
            assert not left  # no archive bytes, no temporary file left (empty locks aside)

            fake.faults.clear()
            fake.requests.clear()
            r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
            assert r.returncode == 0, r.stderr  # tar B now streams whole; the liar is named
            res = _result(r.stdout)
            assert res["stored"] == "3" and res["failed"] == "0" and res["failed_archives"] == "0"
            assert "source defect" in r.stdout
            fetched = {q[1].rsplit("/", 1)[-1] for q in fake.requests if "/resolve/" in q[1]}
            assert fetched == {TAR_B}  # committed archives and known defects: never again
    _bit_exact(out, synth_tree)
    files_table = open_dataset(out).files.to_pandas()
    assert files_table.query("status != 'stored'").container.tolist() == [
        f"hf://datasets/{REPO}/{LIAR}"
    ]
