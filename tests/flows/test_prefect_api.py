"""The temporary Prefect server a command starts never outlives the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CSDM = str(Path(sys.executable).with_name("csdm"))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _server_pids(port: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server" in cmd and port.encode() in cmd:
            pids.append(int(d.name))
    return pids


@pytest.mark.slow
def test_killing_the_process_group_stops_the_server(synth_tree: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "home"), COLUMNS="200")
    proc = subprocess.Popen(
        [CSDM, "process", str(synth_tree), str(tmp_path / "out"), "--workers", "1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        url = None
        for line in proc.stderr:
            if line.startswith("Prefect API: "):
                url = line.split()[-1]
                break
        assert url and _answers(url)
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert _server_pids(port)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # as a user's kill -9 of the job, or an OOM kill
    proc.wait()
    deadline = time.monotonic() + 60
    while (_answers(url) or _server_pids(port)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _answers(url), "the Prefect server still answers after its parent was killed"
    assert not _server_pids(port)
