"""`csdm pipeline`: tars stream from the Hub into processing within a disk budget."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from storage.containers import MemberRef, iter_container
from storage.dataset import open_dataset
from storage.episode import read_episode
from tests.conftest import known_agreement
from tests.hostile_archives import lying_tar
from tests.hub_server import FakeHub, HubServer
from tests.tasks.test_hub import REPO

pytestmark = pytest.mark.slow
LIAR = "hdf5_dm_july2021_7_to_8.tar"


def liar_tar(synth_tree: Path) -> bytes:
    """A tar of a good episode 7, then an episode 8 declaring 10^12 bytes and carrying 1 MB."""
    with tarfile.open(synth_tree / "hdf5_dm_july2021_1_to_3.tar") as tf:
        good = tf.extractfile("hdf5_dm_july2021_1.hdf5").read()
    return lying_tar(
        [("hdf5_dm_july2021_7.hdf5", good)], "hdf5_dm_july2021_8.hdf5", 10**12, 1 << 20
    )


CSDM = str(Path(sys.executable).with_name("csdm"))


def _result(stdout: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in stdout.split() if "=" in kv)


def test_pipeline_streams_within_a_disk_budget(
    synth_tree: Path, prefect_api: str, tmp_path: Path
) -> None:
    files = {
        str(p.relative_to(synth_tree)): p.read_bytes() for p in synth_tree.rglob("*") if p.is_file()
    }
    files[LIAR] = liar_tar(synth_tree)
    biggest = max(len(b) for p, b in files.items() if p.endswith((".tar", ".zip")))
    fake = FakeHub()
    fake.commit(REPO, files)
    out, dest = tmp_path / "out", tmp_path / "hub"
    with HubServer(fake) as server:
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "HF_ENDPOINT": server.endpoint,
            "COLUMNS": "200",
        }
        args = [
            CSDM,
            "pipeline",
            str(out),
            "--dest",
            str(dest),
            "--workers",
            "2",
            "--max-disk",
            str(int(biggest * 1.5)),
        ]
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        # the lying tar is exactly what the Hub lists: a source defect, named, not a failure
        assert r.returncode == 0, r.stderr
        res = _result(r.stdout)
        assert int(res["stored"]) == 8 and int(res["failed"]) == 0
        assert res["failed_archives"] == "0" and "source defect" in r.stdout
        assert int(res["peak_source_bytes"]) <= int(biggest * 1.5)  # one container at a time
        assert not list(dest.glob("*.tar")) and not list(dest.glob("*.zip"))  # deleted
        ds = open_dataset(out)
        assert ds.manifest.revision == fake.branches[REPO]["main"]
        assert len(ds.episodes) == 8 and "dm_july2021_7" not in ds.episodes
        tar = synth_tree / "hdf5_dm_july2021_4_to_6.tar"
        ref = next(m for m in iter_container(tar) if isinstance(m, MemberRef) and "_5." in m.name)
        np.testing.assert_array_equal(ds.frames("dm_july2021_5"), read_episode(ref).frames)
        files_pq = open_dataset(out).files.to_pandas().set_index("episode")
        defects = files_pq.query("status == 'defect'")
        assert sorted(defects.index) == ["dm_july2021_7", "dm_july2021_8"]
        assert "its archive is damaged" in defects.loc["dm_july2021_7", "reject_reason"]
        files_pq = files_pq.query("status == 'stored'")
        assert files_pq.metadata_file.notna().all()
        for ep in files_pq.index:  # the HDF5 labels the synthesiser changed on purpose
            for col, value in known_agreement(ep, "targets").items():
                assert files_pq.loc[ep, col] == pytest.approx(value, abs=1e-12), (ep, col)
        # a second run downloads nothing: the defect is recorded once, and named again
        fake.requests.clear()
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        res = _result(r.stdout)
        assert res["downloaded_bytes"] == "0" and res["failed_archives"] == "0"
        fetched = {q[1].rsplit("/", 1)[-1] for q in fake.requests if "/resolve/" in q[1]}
        assert not fetched & {LIAR}
        assert "source defect" in r.stdout and "dm_july2021_8" in r.stdout
        assert "dm_july2021_7" not in open_dataset(out).episodes
