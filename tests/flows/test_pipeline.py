"""`csdm pipeline`: tars stream from the Hub into processing within a disk budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storage.containers import MemberRef, iter_container
from storage.dataset import open_dataset
from storage.episode import read_episode
from tests.conftest import known_agreement
from tests.hub_server import FakeHub, HubServer
from tests.tasks.test_hub import REPO

pytestmark = pytest.mark.slow
CSDM = str(Path(sys.executable).with_name("csdm"))


def _result(stdout: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in stdout.split() if "=" in kv)


def test_pipeline_streams_within_a_disk_budget(synth_tree: Path, prefect_api: str,
                                               tmp_path: Path) -> None:  # fmt: skip
    files = {str(p.relative_to(synth_tree)): p.read_bytes()
             for p in synth_tree.rglob("*") if p.is_file()}  # fmt: skip
    biggest = max(len(b) for p, b in files.items() if p.endswith((".tar", ".zip")))
    fake = FakeHub()
    fake.commit(REPO, files)
    out, dest = tmp_path / "out", tmp_path / "hub"
    with HubServer(fake) as server:
        env = {**os.environ, "PREFECT_API_URL": prefect_api, "HF_ENDPOINT": server.endpoint,
               "COLUMNS": "200"}  # fmt: skip
        args = [CSDM, "pipeline", str(out), "--dest", str(dest), "--workers", "2",
                "--max-disk", str(int(biggest * 1.5))]  # fmt: skip
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        res = _result(r.stdout)
        assert int(res["stored"]) == 8 and int(res["failed"]) == 0
        assert int(res["peak_source_bytes"]) <= int(biggest * 1.5)  # one container at a time
        assert not list(dest.glob("*.tar")) and not list(dest.glob("*.zip"))  # deleted
        ds = open_dataset(out)
        assert ds.manifest.revision == fake.branches[REPO]["main"]
        assert len(ds.episodes) == 8
        tar = synth_tree / "hdf5_dm_july2021_4_to_6.tar"
        ref = next(m for m in iter_container(tar) if isinstance(m, MemberRef) and "_5." in m.name)
        np.testing.assert_array_equal(ds.frames("dm_july2021_5"), read_episode(ref).frames)
        files_pq = open_dataset(out).files.to_pandas().set_index("episode")
        assert files_pq.metadata_file.notna().all()
        for ep in files_pq.index:  # the HDF5 labels the synthesiser changed on purpose
            for col, value in known_agreement(ep, "targets").items():
                assert files_pq.loc[ep, col] == pytest.approx(value, abs=1e-12), (ep, col)
        # a second run has nothing to download or process
        fake.requests.clear()
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        assert _result(r.stdout)["downloaded_bytes"] == "0"
        assert not [q for q in fake.requests if "/resolve/" in q[1]]
