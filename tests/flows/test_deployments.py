"""`make serve`'s script, then the `pipeline` deployment run through the Prefect API by a worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from storage.dataset import open_dataset
from tests.hub_server import FakeHub, HubServer
from tests.tasks.test_hub import REPO

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_deploy_and_run_the_pipeline(synth_tree: Path, tmp_path: Path) -> None:
    files = {str(p.relative_to(synth_tree)): p.read_bytes()
             for p in synth_tree.rglob("*") if p.is_file()}  # fmt: skip
    fake = FakeHub()
    fake.commit(REPO, files)
    port = _port()
    with HubServer(fake) as hub:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
               "PREFECT_PORT": str(port), "CSDM_STATE": str(tmp_path / "state"),
               "PREFECT_HOME": str(tmp_path / "home"), "HF_ENDPOINT": hub.endpoint}  # fmt: skip
        try:
            r = subprocess.run([str(ROOT / "infra/serve.sh")], env=env, capture_output=True,
                               text=True, timeout=300)  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
            api = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
            listed = subprocess.run([PREFECT, "deployment", "ls"], env=api, capture_output=True,
                                    text=True, timeout=120).stdout  # fmt: skip
            for name in ("ingest/ingest", "process/process", "pipeline/pipeline",
                         "pipeline/daily-refresh"):  # fmt: skip
                assert name in listed
            out = tmp_path / "out"
            params = {"out": str(out), "dest": str(tmp_path / "hub"), "include": ["*"],
                      "max_disk": None, "delete_sources": True, "workers": 1}  # fmt: skip
            r = subprocess.run(
                [PREFECT, "deployment", "run", "pipeline/pipeline", "--params",
                 json.dumps(params), "--watch", "--watch-timeout", "400"],
                env=api, capture_output=True, text=True, timeout=480,
            )  # fmt: skip
            assert "Completed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
            ds = open_dataset(out)
            assert len(ds.episodes) == 8
            assert ds.manifest["revision"] == fake.branches[REPO]["main"]
        finally:
            subprocess.run([str(ROOT / "infra/stop.sh")], env=env, timeout=60)
