"""`csdm ingest` through Prefect against the local Hub, configured by HF_ENDPOINT and HF_TOKEN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_server import FakeHub, Faults, HubServer
from tests.tasks.test_hub import REPO, _files

pytestmark = pytest.mark.slow
CSDM = str(Path(sys.executable).with_name("csdm"))


def test_ingest_cli(prefect_api: str, tmp_path: Path) -> None:
    fake = FakeHub()
    fake.commit(REPO, _files())
    fake.faults["hdf5_dm_july2021_1_to_200.tar"] = Faults(drop_after=100_000)
    with HubServer(fake) as server:
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "HF_ENDPOINT": server.endpoint,
            "HF_TOKEN": "hf_test_token",
            "COLUMNS": "200",
        }
        args = [
            CSDM,
            "ingest",
            "--dest",
            str(tmp_path / "hub"),
            "--subset",
            "dm_scraped",
            "--subset",
            "metadata",
            "--workers",
            "3",
        ]
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "4 files selected, 4 fetched" in r.stdout
        files = _files()
        for p in (
            "hdf5_dm_july2021_1_to_200.tar",
            "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy",
        ):
            assert (tmp_path / "hub" / p).read_bytes() == files[p]
        assert not (tmp_path / "hub/dataset_dm_expert_dust2.zip").exists()
        assert "hf_test_token" not in r.stdout + r.stderr
        resolves = [
            a
            for (m, path, _), a in zip(fake.requests, fake.authorizations, strict=True)
            if "/resolve/" in path
        ]
        assert resolves and set(resolves) == {"Bearer hf_test_token"}
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0 and "0 fetched" in r.stdout and "4 already verified" in r.stdout
        bad = [CSDM, "ingest", "--dest", str(tmp_path / "x"), "--revision", "no-such-branch"]
        r = subprocess.run(bad, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 2 and "no-such-branch" in r.stderr


def test_a_refused_connection_is_one_line_naming_the_endpoint(
    prefect_api: str, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "COLUMNS": "200"}
    r = subprocess.run(
        [CSDM, "ingest", "--dest", str(tmp_path / "d"), "--endpoint", endpoint],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 2
    assert f"{endpoint}: cannot reach the Hub" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_ingest_into_a_bucket_never_shows_a_corrupted_file(
    synth_tree: Path, bucket: str, prefect_api: str
) -> None:
    import threading

    import fsspec

    from tasks.source import list_source

    files = {
        p.relative_to(synth_tree).as_posix(): p.read_bytes()
        for p in synth_tree.rglob("*")
        if p.is_file()
    }
    bad = "dataset_dm_expert_dust2.zip"
    fake = FakeHub()
    fake.commit(REPO, files)
    fake.faults[bad] = Faults(corrupt_at=len(files[bad]) // 2, bytes_per_s=20e6)
    s3 = fsspec.filesystem("s3")
    seen, stop = [], threading.Event()

    def watch() -> None:  # the corrupted file must never be visible, not even for a moment
        while not stop.is_set():
            s3.invalidate_cache()
            seen.append(s3.exists(f"{bucket[5:]}/raw/{bad}"))
            stop.wait(0.05)

    with HubServer(fake) as server:
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "HF_ENDPOINT": server.endpoint,
            "HF_TOKEN": "hf_test_token",
            "COLUMNS": "200",
        }
        args = [CSDM, "ingest", "--dest", f"{bucket}/raw"]
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        finally:
            stop.set()
            watcher.join()
        assert r.returncode == 1, r.stderr
        assert "5 files selected, 4 fetched" in r.stdout
        assert f"{bad}: checksum mismatch after 5 retries" in r.stderr
        assert len(seen) > 20 and not any(seen)
        assert s3.call_s3("list_multipart_uploads", Bucket=bucket[5:]).get("Uploads", []) == []
        assert "hf_test_token" not in r.stdout + r.stderr
        for p, data in files.items():
            if p != bad:
                assert s3.cat_file(f"{bucket[5:]}/raw/{p}") == data
        fake.faults.clear()
        fake.requests.clear()
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0 and "1 fetched" in r.stdout and "4 already verified" in r.stdout
        assert {q[1].rsplit("/", 1)[-1] for q in fake.requests if "/resolve/" in q[1]} == {bad}
    listing = list_source(f"{bucket}/raw")  # what `csdm process s3://.../raw OUT` reads by range
    assert len(listing.episodes) == 8 and not listing.problems
    assert all(e.ref.container.startswith(f"{bucket}/raw/") for e in listing.episodes)
