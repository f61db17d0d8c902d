"""A full disk stops a run with one line; nothing half-written survives, and a rerun resumes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.diskspace import DiskFullError
from storage.fs import Root

CSDM = str(Path(sys.executable).with_name("csdm"))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs (root can mount one here and in CI); skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_atomic_writes_leave_no_temporary_file_on_enospc(small_disk: Path) -> None:
    with open(small_disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with pytest.raises(DiskFullError) as err:
        Root(str(small_disk)).put_json("catalog/manifest.json", {"x": "y" * 100_000})
    assert str(small_disk / "catalog/manifest.json") in str(err.value)
    assert not _leftovers(small_disk) and not (small_disk / "catalog/manifest.json").exists()


def test_process_refuses_to_start_without_room(
    small_disk: Path, synth_tree: Path, prefect_api: str
) -> None:
    out = small_disk / "out"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "COLUMNS": "200"}
    r = subprocess.run(
        [CSDM, "process", str(synth_tree), str(out), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 3, r.stderr
    assert "no space left" in r.stderr and str(out) in r.stderr and "more is needed" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert not _leftovers(small_disk)


def test_enospc_mid_run_stops_cleanly_and_a_rerun_finishes(
    synth_tree: Path, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.process import ProcessParams, process_flow
    from storage.dataset import open_dataset
    from storage.framestore import episode_exists
    from storage.layout import OutLayout

    out = tmp_path / "out"
    real, shards = Root.put_bytes, []

    def fills_up(self, key: str, data: bytes) -> None:  # the third episode's shard hits it
        if "/c/" in key:
            shards.append(key)
            if len(shards) == 3:
                raise OSError(errno.ENOSPC, "No space left on device", self.full(key))
        real(self, key, data)

    monkeypatch.setattr(Root, "put_bytes", fills_up)
    flow = process_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    with pytest.raises(DiskFullError) as err:
        flow(str(synth_tree), str(out), ProcessParams())
    victim = shards[2].split("/")[1]  # frames.zarr/<episode>/c/...
    assert f"{out}/frames.zarr/{victim}" in str(err.value) and "more is needed" in str(err.value)
    assert not _leftovers(out)
    ds = open_dataset(out)
    assert len(ds.episodes) >= 2 and victim not in ds.episodes
    assert not episode_exists(OutLayout.at(out), victim)  # no array counts as written
    monkeypatch.setattr(Root, "put_bytes", real)
    # what a killed run would leave: a temporary catalog file
    (out / "catalog" / "_episodes" / ".dm_july2021_9.json.0badc0de.tmp").write_bytes(b"{")
    summary = flow(str(synth_tree), str(out), ProcessParams())
    assert not _leftovers(out)  # swept at the start of the run
    assert (summary.stored, summary.skipped, summary.failed) == (8, len(ds.episodes), 0)
    assert len(open_dataset(out).episodes) == 8
