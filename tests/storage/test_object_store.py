"""Datasets on a real S3-compatible server: the same commit protocol, URLs everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storage.containers import MemberRef, iter_container
from storage.dataset import connect_catalog, open_dataset
from storage.episode import read_episode
from storage.fs import Root, StorageAccessError
from storage.fs_options import parse_options
from storage.layout import OutLayout
from storage.lease import DatasetLease, LeaseHeldError
from tasks.params import ProcessParams
from tasks.process_source import process_source

CSDM = str(Path(sys.executable).with_name("csdm"))


def test_process_from_bucket_to_bucket_reads_back_bit_exact(
    s3_source: str, bucket: str, synth_tree: Path
) -> None:
    out = f"{bucket}/out"
    summary, _ = process_source(Root(s3_source), Root(out), ProcessParams(test_fraction=0.25))
    assert (summary.stored, summary.failed) == (8, 0)
    ds = open_dataset(out)
    assert len(ds.episodes) == 8 and ds.state.index.generation == 1 and not ds.state.pending
    local = {m.name: m for m in iter_container(synth_tree) if isinstance(m, MemberRef)}
    for episode in ds.episodes:
        want = read_episode(local[f"hdf5_{episode}.hdf5"], parts=("x",))["x"]
        np.testing.assert_array_equal(ds.frames(episode, 7, 50), want[7:50])
    con = connect_catalog(ds)
    n, kept = con.execute("select count(*), count(distinct episode) from frames").fetchone()
    assert (n, kept) == (480, 8)
    # nothing is listed beyond the few small folders the commit protocol names
    keys = sorted(Root(out).find())
    assert not [k for k in keys if k.startswith(("catalog/_episodes/", "catalog/_frames/"))]
    # a rerun skips everything, from the compacted records
    again, records = process_source(Root(s3_source), Root(out), ProcessParams(test_fraction=0.25))
    assert again.skipped == 8 and all(r.skipped for r in records if r.status == "stored")


def test_a_crash_before_the_record_leaves_the_episode_invisible(
    s3_source: str, bucket: str, monkeypatch
) -> None:
    import storage.commit as commit
    import tasks.repack as repack

    out = f"{bucket}/out"
    real = commit.commit_episode

    def crash_on_episode_2(layout, record):
        if record.episode == "dm_july2021_2":
            raise OSError("killed after its frames and rows were written")
        real(layout, record)

    monkeypatch.setattr(repack, "commit_episode", crash_on_episode_2)
    summary, _ = process_source(Root(s3_source), Root(out), ProcessParams())
    assert summary.failed == 1 and "killed" in summary.failures[0]
    layout = OutLayout.at(out)
    assert layout.root.exists("frames.zarr/dm_july2021_2/zarr.json")  # the frames are there
    ds = open_dataset(out)
    assert "dm_july2021_2" not in ds.episodes
    episodes = connect_catalog(ds).execute("select distinct episode from frames").fetchall()
    assert ("dm_july2021_2",) not in episodes and len(episodes) == 7
    with pytest.raises(KeyError):
        ds.frames("dm_july2021_2")
    monkeypatch.setattr(repack, "commit_episode", real)
    rerun, _ = process_source(Root(s3_source), Root(out), ProcessParams())
    assert (rerun.stored, rerun.skipped, rerun.failed) == (8, 7, 0)
    assert "dm_july2021_2" in open_dataset(out).episodes


def test_a_second_writer_is_refused_by_name_and_a_stale_lease_is_taken_over(bucket: str) -> None:
    layout = OutLayout.at(f"{bucket}/out")
    now = [1000.0]
    first = DatasetLease(layout, ttl=60, clock=lambda: now[0], renew=False)
    first.acquire()
    second = DatasetLease(layout, ttl=60, clock=lambda: now[0], renew=False)
    with pytest.raises(LeaseHeldError) as err:
        second.acquire()
    assert first.owner in str(err.value) and f"pid {os.getpid()}" in str(err.value)
    assert "expires in 60 s" in str(err.value) and ".lease.json" in str(err.value)
    now[0] += 61  # the first run died without releasing it
    second.acquire()
    assert second.taken_over is not None and second.taken_over.owner == first.owner
    first.release()  # no longer its lease: left alone
    assert layout.root.read_json(layout.lease)["owner"] == second.owner
    second.release()
    assert not layout.root.exists(layout.lease)


def test_wrong_credentials_and_a_missing_bucket_are_named_before_any_work(
    s3_source: str, s3_endpoint, tmp_path: Path
) -> None:
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "not-the-secret", "COLUMNS": "200"}
    r = subprocess.run(
        [CSDM, "process", s3_source, str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and f"{s3_source}: access denied" in r.stderr
    assert "not-the-secret" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    r = subprocess.run(
        [CSDM, "query", "s3://no-such-bucket-csdm/out", "select 1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "no-such-bucket-csdm" in r.stderr and "no such bucket" in r.stderr
    with pytest.raises(StorageAccessError, match="s3://no-such-bucket-csdm/x: no such bucket"):
        Root("s3://no-such-bucket-csdm/x").check_access()


def test_secrets_are_refused_on_the_command_line() -> None:
    assert parse_options(["endpoint_url=http://h:9000", "anon=false"]) == {
        "endpoint_url": "http://h:9000",
        "anon": False,
    }
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY") as err:
        parse_options(["secret=hunter2"])
    assert "hunter2" not in str(err.value)


def test_a_second_process_run_is_refused_naming_the_first(
    s3_source: str, bucket: str, prefect_api: str
) -> None:
    out = f"{bucket}/out"
    holder = DatasetLease(OutLayout.at(out), renew=False)
    holder.acquire()  # a run that is writing OUT right now
    try:
        env = {**os.environ, "PREFECT_API_URL": prefect_api, "COLUMNS": "200"}
        r = subprocess.run(
            [CSDM, "process", s3_source, out, "--workers", "1", "--mouse-static", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 2, r.stderr
        assert f"{out} is being written by run {holder.owner}" in r.stderr
        assert "Traceback" not in r.stderr
        assert not OutLayout.at(out).root.exists("catalog/_episodes")  # nothing was written
    finally:
        holder.release()
    # once the first run is gone, the same command runs, with its quality limit recorded
    r = subprocess.run(
        [CSDM, "process", s3_source, out, "--workers", "1", "--mouse-static", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    ds = open_dataset(out)
    assert ds.manifest.parameters["mouse_static"] == 0 and len(ds.episodes) == 8
    files = ds.files.to_pandas()
    assert (files[files.keep].mouse_static == 0).all()  # the limit applied: zero still frames
    assert files.reject_reason.fillna("").str.contains("mouse_static=").any()
    r = subprocess.run([CSDM, "compact", out], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "generation 2, 8 episodes" in r.stdout, r.stderr


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_runs_starting_at_the_same_moment_get_the_lease_once(
    where: str, request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{request.getfixturevalue('bucket')}/out" if where == "s3" else str(tmp_path / "out")
    layout = OutLayout.at(url)
    root = layout.root
    # the compare-and-swap itself: create once, replace only what was read
    assert root.put_bytes_if("k", b"1", None) and not root.put_bytes_if("k", b"2", None)
    data, stamp = root.read_stamped("k")
    assert data == b"1" and root.put_bytes_if("k", b"3", stamp)
    assert not root.put_bytes_if("k", b"4", stamp) and root.read_bytes("k") == b"3"
    # run A reads "no lease"; run B takes it before A writes: A must not overwrite B
    a, b = DatasetLease(layout, renew=False), DatasetLease(layout, renew=False)
    real = Root.read_stamped
    calls = []

    def b_comes_in_between(self, key):
        seen = real(self, key)
        if not calls:
            calls.append(key)
            b.acquire()
        return seen

    monkeypatch.setattr(Root, "read_stamped", b_comes_in_between)
    with pytest.raises(LeaseHeldError, match=f"run {b.owner} .* at the same moment"):
        a.acquire()
    monkeypatch.setattr(Root, "read_stamped", real)
    assert layout.root.read_json(layout.lease)["owner"] == b.owner
    b.release()
