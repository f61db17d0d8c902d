"""`csdm pipeline --publish-to` and `csdm publish` on the command line, against the local Hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.dataset import open_dataset
from tests.hub_server import FakeHub

CSDM = str(Path(sys.executable).with_name("csdm"))
URL = "hf://datasets/team/refreshed"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CSDM, *args], capture_output=True, text=True, timeout=600, env={**os.environ, **env}
    )


@pytest.mark.slow
def test_a_refresh_publishes_and_the_cli_reports_in_one_line(
    hub: FakeHub, prefect_api: str, synth_tree: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    api = {"PREFECT_API_URL": prefect_api}
    args = ["--source", str(synth_tree), "--workers", "1", "--test-fraction", "0.25"]
    r = _run("pipeline", str(out), *args, "--publish-to", URL, **api)
    assert r.returncode == 0, r.stderr[-3000:]
    head = hub.branches["team/refreshed"]["main"]
    assert f"published to {URL}:" in r.stdout and head in r.stdout
    remote, local = open_dataset(URL), open_dataset(out)
    assert remote.commit == head and remote.episodes == local.episodes
    r = _run("publish", str(out), URL, **api)
    assert r.returncode == 0 and "uploaded 0 files" in r.stdout and "in 0 commits" in r.stdout
    r = _run("publish", str(out), URL, HF_TOKEN="hf_read_token", **api)
    lines = [x for x in r.stderr.splitlines() if "error:" in x]
    assert r.returncode == 2 and lines == [
        f"error: {URL}: the token is read-only; publishing needs a write token"
    ], r.stderr[-2000:]
    assert "hf_read_token" not in r.stdout + r.stderr
    assert hub.branches["team/refreshed"]["main"] == head
