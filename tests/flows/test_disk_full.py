"""A full disk stops a run with one line; nothing half-written survives, and a rerun resumes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import storage.framestore as framestore
from storage.diskspace import DiskFullError
from tasks.metadata_cache import write_json_atomic

CSDM = str(Path(sys.executable).with_name("csdm"))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs (root can mount one here and in CI); skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".staging/" in str(p)]


def test_atomic_writes_leave_no_temporary_file_on_enospc(small_disk: Path) -> None:
    with open(small_disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with pytest.raises(OSError) as err:
        write_json_atomic({"x": "y" * 100_000}, small_disk / "manifest.json")
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_process_refuses_to_start_without_room(
    small_disk: Path, synth_tree: Path, prefect_api: str
) -> None:
    out = small_disk / "out"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "COLUMNS": "200"}
    r = subprocess.run([CSDM, "process", str(synth_tree), str(out), "--workers", "1"],
                       capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "no space left" in r.stderr and str(out) in r.stderr and "GB more is needed" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert not _leftovers(small_disk)


def test_enospc_mid_run_stops_cleanly_and_a_rerun_finishes(
    synth_tree: Path, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.process import ProcessParams, process_flow
    from storage.dataset import open_dataset

    out = tmp_path / "out"
    real, calls = framestore.stored_bytes, []

    def fills_up(path: Path) -> int:  # the third episode's frames hit a full disk
        calls.append(path)
        if len(calls) == 3:
            assert any(path.rglob("*"))  # its shard is half-way in .staging/
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)

    monkeypatch.setattr(framestore, "stored_bytes", fills_up)
    flow = process_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    with pytest.raises(DiskFullError) as err:
        flow(str(synth_tree), str(out), ProcessParams())
    assert str(out) in str(err.value) and "GB more is needed" in str(err.value)
    assert not _leftovers(out)
    committed = {p.stem for p in (out / "catalog/_episodes").glob("*.json")}
    victim = calls[2].name.split(".")[0]  # .staging/<episode>.<uuid>
    assert len(committed) >= 2 and victim not in committed
    arrays = {p.name for p in (out / "frames.zarr").iterdir() if p.is_dir()}
    assert arrays == committed  # the episode that hit the full disk left no frames
    monkeypatch.setattr(framestore, "stored_bytes", real)
    # what a killed run would leave: a half-written array and a temporary catalog file
    (out / ".staging" / "dm_july2021_9.0badc0de" / "c").mkdir(parents=True)
    (out / ".staging" / "dm_july2021_9.0badc0de" / "c" / "0").write_bytes(b"half")
    (out / "catalog" / ".files.parquet.4242.tmp").write_bytes(b"")
    summary = flow(str(synth_tree), str(out), ProcessParams())
    assert not _leftovers(out)  # swept at the start of the run
    assert (summary.stored, summary.skipped, summary.failed) == (8, len(committed), 0)
    assert len(open_dataset(out).episodes) == 8
