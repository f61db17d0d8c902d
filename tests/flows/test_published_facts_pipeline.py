"""The published data's defects and twins through `csdm pipeline`, downloading and streaming.

The source is on the local Hub stand-in, read by the real huggingface_hub client: two expert
members cut short inside a zip whose CRCs hold, a byte-identical pair across two tars, a tar
whose last-numbered member comes first, and a tar that is malformed although its sha256 is the
Hub's. Defects end a run green and are never read again; twins are stored once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.dataset import open_dataset
from tests.flows.test_pipeline import LIAR, liar_tar
from tests.hub_server import FakeHub, HubServer
from tests.published_facts import DEFECTS, EXPERT_ZIP, FIRST, TWIN, published_facts_source
from tests.tasks.test_hub import REPO

pytestmark = pytest.mark.slow
CSDM = str(Path(sys.executable).with_name("csdm"))


def _result(stdout: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in stdout.split() if "=" in kv)


@pytest.mark.parametrize("stream", [False, True], ids=["download", "stream"])
def test_defects_end_green_are_never_read_again_and_twins_are_stored_once(
    synth_tree: Path, prefect_api: str, tmp_path: Path, stream: bool
) -> None:
    src = published_facts_source(synth_tree, tmp_path / "src")
    files = {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    files[LIAR] = liar_tar(synth_tree)  # malformed, and exactly what the Hub lists
    fake = FakeHub()
    fake.commit(REPO, files)
    out = tmp_path / "out"
    args = [CSDM, "pipeline", str(out), "--workers", "1"]
    args += ["--stream"] if stream else ["--dest", str(tmp_path / "hub")]
    with HubServer(fake) as server:
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "HF_ENDPOINT": server.endpoint,
            "COLUMNS": "200",
        }
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr  # only the publisher's defects: green
        res = _result(r.stdout)
        assert res["failed"] == "0" and res["failed_archives"] == "0", r.stdout
        for name in DEFECTS:
            assert f"source defect: {name}" in r.stdout or name in r.stdout
        assert f"duplicate: {TWIN}" in r.stdout
        rows = {x["episode"] or x["container"]: x for x in open_dataset(out).files.to_pylist()}
        for name in DEFECTS:
            assert rows[name]["status"] == "defect" and rows[name]["size"] > 0
        assert rows[TWIN]["status"] == "duplicate" and rows[TWIN]["duplicate_of"] == FIRST
        liar = [x for x in rows.values() if LIAR in x["container"] and x["status"] == "defect"]
        assert liar, "the malformed archive whose sha256 matches is a source defect"
        ds = open_dataset(out)
        assert TWIN not in ds.episodes and FIRST in ds.episodes
        # a rerun reads none of them again, and names them again
        fake.requests.clear()
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        fetched = {q[1].rsplit("/", 1)[-1] for q in fake.requests if "/resolve/" in q[1]}
        assert not {EXPERT_ZIP, LIAR} & fetched, fetched
        assert "source defect" in r.stdout and f"duplicate: {TWIN}" in r.stdout
