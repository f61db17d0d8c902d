"""`csdm process` end to end on a synthetic source with faults, then read back."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from storage.catalog import KEY_COLUMNS, decode_y
from storage.commit import withdraw_episode
from storage.containers import MemberRef, iter_container
from storage.dataset import open_dataset
from storage.episode import read_episode, write_episode
from storage.layout import EpisodeId
from storage.safepickle import load_npy
from tasks.splits import SplitSpec
from tasks.synth import reference as ref
from tasks.synth.tree import simulate_episode
from tests.conftest import known_agreement

pytestmark = pytest.mark.slow
CSDM = str(Path(sys.executable).with_name("csdm"))


def run_csdm(*args: str, api: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api, "COLUMNS": "200"}
    return subprocess.run([CSDM, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _faulty_source(base: Path, tmp: Path) -> Path:
    """The small synthetic tree plus a tar of three faults.

    A truncated member, a `../` member, and an episode that has no metadata.
    """
    src = tmp / "src"
    shutil.copytree(base, src)
    good = tmp / "hdf5_dm_july2021_9.hdf5"
    write_episode(
        good, simulate_episode(EpisodeId("dm_july2021", 9), 40, 9, "normal", False).arrays
    )
    cut = tmp / "hdf5_dm_july2021_7.hdf5"
    cut.write_bytes(good.read_bytes()[:200_000])
    with tarfile.open(src / "hdf5_dm_july2021_7_to_9.tar", "w") as tf:
        tf.add(cut, arcname=cut.name)
        tf.add(good, arcname="../hdf5_dm_july2021_8.hdf5")
        tf.add(good, arcname=good.name)
    return src


@pytest.fixture(scope="module")
def processed(synth_tree: Path, prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("process")
    src = _faulty_source(synth_tree, tmp)
    out = tmp / "out"
    first = run_csdm(
        "process",
        str(src),
        str(out),
        "--workers",
        "2",
        "--test-fraction",
        "0.3",
        "--seed",
        "1",
        api=prefect_api,
    )
    return src, out, first


def test_summary_and_fault_isolation(processed) -> None:
    _, out, r = processed
    assert r.returncode == 1, r.stderr  # two members failed; everything else was stored
    assert "2 episode(s) failed" in r.stderr
    # each failure is named with its reason, one line each
    assert "failed: dm_july2021_7: unreadable:" in r.stderr
    assert "failed: dm_july2021_8:" in r.stderr and "escapes the archive" in r.stderr
    assert "Traceback" not in r.stderr
    files = open_dataset(out).files.to_pandas().set_index("episode")
    assert sorted(files.index) == sorted(
        [f"dm_july2021_{i}" for i in range(1, 10)]
        + ["dm_july2021_expert_1", "dm_july2021_expert_2"]
    )
    assert files.loc["dm_july2021_7", "status"] == "failed"
    assert "unreadable" in files.loc["dm_july2021_7", "reject_reason"]
    assert files.loc["dm_july2021_8", "status"] == "failed"
    assert "escapes the archive" in files.loc["dm_july2021_8", "reject_reason"]
    assert files.loc["dm_july2021_9", "status"] == "stored"
    assert not files.loc["dm_july2021_9", "keep"]
    assert "no metadata" in files.loc["dm_july2021_9", "reject_reason"]
    stored = files[files.status == "stored"]
    assert len(stored) == 9 and stored.sha256.str.len().eq(64).all()
    # the synthesiser's idle, desync and third-person episodes are rejected, and still stored
    rejected = set(stored.index[~stored.keep])
    assert {"dm_july2021_3", "dm_july2021_5", "dm_july2021_6", "dm_july2021_9"} <= rejected
    assert {"dm_july2021_1", "dm_july2021_expert_1"}.isdisjoint(rejected)
    for ep in stored.index.drop("dm_july2021_9"):  # the HDF5 labels changed on purpose
        for col, value in known_agreement(ep, "targets").items():
            assert stored.loc[ep, col] == pytest.approx(value, abs=1e-12), (ep, col)
    ds = open_dataset(out)
    assert ds.manifest.parameters["test_fraction"] == 0.3
    assert set(ds.episodes) == set(stored.index)
    # the catalog is compacted at the end of the run: a few files, no per-episode ones
    assert ds.state.index.generation >= 1 and not ds.state.pending
    assert ds.layout.root.list(ds.layout.pending_frames) == []


def test_frames_read_back_bit_exact_in_uneven_windows(processed) -> None:
    src, out, _ = processed
    ds = open_dataset(out)
    refs = {m.name: m for m in iter_container(src) if isinstance(m, MemberRef)}
    rng = np.random.default_rng(0)
    for episode in ds.episodes:
        source = read_episode(refs[f"hdf5_{episode}.hdf5"], parts=("x",))["x"]
        n = ds.n_frames(episode)
        assert n == len(source)
        cuts = sorted({0, n, *rng.integers(0, n, 4).tolist()})
        for a, b in itertools.pairwise(cuts):
            np.testing.assert_array_equal(ds.frames(episode, a, b), source[a:b])
    assert ds.frames("dm_july2021_1", 5, 5).shape == (0, 150, 280, 3)


def test_catalog_labels_equal_the_source_and_the_reference(processed) -> None:
    src, out, _ = processed
    ds = open_dataset(out)
    table = ds.catalog.to_table()
    refs = {m.name: m for m in iter_container(src) if isinstance(m, MemberRef)}
    meta = load_npy(src / "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy").item()
    for episode in ("dm_july2021_2", "dm_july2021_5", "dm_july2021_9"):
        rows = table.filter(pc.equal(table["episode"], episode)).sort_by("frame").to_pydict()
        ep = read_episode(refs[f"hdf5_{episode}.hdf5"])
        want = decode_y(ep.y)
        for c in (*KEY_COLUMNS, "lclick", "rclick", "mouse_x", "mouse_y"):
            np.testing.assert_array_equal(rows[c], want[c], err_msg=f"{episode} {c}")
        np.testing.assert_array_equal(rows["kill"], ep.helperarr[:, 0] > 0.5)
        assert set(rows["split"]) <= {"train", "test"} and len(set(rows["split"])) == 1
        if episode == "dm_july2021_9":  # no metadata: inferred columns are null
            assert set(rows["infer_mouse_x"]) == {None}
            continue
        num = int(episode.rsplit("_", 1)[1])
        states = [meta[f"file_num{num}_frame_{i}"][0] for i in range(len(ep))]
        acts, _ = ref.infer_episode(states)
        assert rows["infer_keys"] == [a[0] for a in acts]
        np.testing.assert_array_equal(rows["infer_mouse_x"], [a[1] for a in acts])
        np.testing.assert_array_equal(rows["pos_x"], [s["localpos1"] for s in states])
        assert rows["team"] == [s["gsi_team"] for s in states]
    datasets = sorted(table.column("dataset").unique().to_pylist())
    assert datasets == ["dm_july2021", "dm_july2021_expert"]


def test_rerun_is_idempotent_and_resumes(processed, prefect_api: str) -> None:
    src, out, _ = processed
    shard = out / "frames.zarr/dm_july2021_1/c/0/0/0/0"
    shard2 = out / "frames.zarr/dm_july2021_2/c/0/0/0/0"
    before = shard.stat().st_mtime_ns, shard2.stat().st_mtime_ns
    # a crash while episode 2 was redone: withdrawn, rows half-written, no record
    ds = open_dataset(out)
    withdraw_episode(ds.layout, "dm_july2021_2", None)
    ds.layout.root.put_bytes(ds.layout.new_frames_file("dm_july2021_2"), b"PAR1 half")
    assert "dm_july2021_2" not in open_dataset(out).episodes
    assert "dm_july2021_2" not in set(
        open_dataset(out).catalog.to_table(["episode"])["episode"].to_pylist()
    )
    r = run_csdm(
        "process",
        str(src),
        str(out),
        "--workers",
        "1",
        "--test-fraction",
        "0.3",
        "--seed",
        "1",
        api=prefect_api,
    )
    assert r.returncode == 1, r.stderr
    numbers = r.stdout.split("stored GB")[1].split()
    kept = int(open_dataset(out).files.column("keep").to_numpy().sum())
    # episodes, stored, redone, already done (all but episode 2), kept, rejected, failed
    assert [int(n) for n in numbers if n.isdigit()][:7] == [11, 9, 0, 8, kept, 9 - kept, 2]
    assert (shard.stat().st_mtime_ns, shard2.stat().st_mtime_ns) == before  # frames kept
    ds = open_dataset(out)
    assert "dm_july2021_2" in ds.episodes and not ds.state.markers
    rows = ds.catalog.to_table(["episode"])["episode"].to_pylist()
    assert rows.count("dm_july2021_2") == 60
    assert ds.layout.root.list(ds.layout.pending_frames) == []  # the half file is gone
    # other parameters would mix splits: refused
    r = run_csdm(
        "process", str(src), str(out), "--test-fraction", "0.5", "--seed", "1", api=prefect_api
    )
    assert r.returncode == 2 and "other parameters" in r.stderr
    assert "test_fraction: built with 0.3, this run 0.5" in r.stderr and "--reprocess" in r.stderr
    # --reprocess re-splits: exactly the episodes whose split changes are redone, frames kept
    old = open_dataset(out).files.to_pandas().set_index("episode")
    new_spec = SplitSpec(test_fraction=0.5, seed=1)
    moved = sorted(
        e for e in old[old.status == "stored"].index if new_spec.split_of(e) != old.loc[e, "split"]
    )
    assert moved  # the test means something
    r = run_csdm(
        "process",
        str(src),
        str(out),
        "--workers",
        "1",
        "--test-fraction",
        "0.5",
        "--seed",
        "1",
        "--reprocess",
        api=prefect_api,
    )
    assert r.returncode == 1, r.stderr
    redone = sorted(
        line.split(": ")[1].split()[0]
        for line in r.stdout.splitlines()
        if line.strip().startswith("redone (inputs changed):")
    )
    assert redone == moved
    now = open_dataset(out).files.to_pandas().set_index("episode")
    for e in old[old.status == "stored"].index:
        assert now.loc[e, "split"] == new_spec.split_of(e)
    assert shard.stat().st_mtime_ns == before[0]  # frames never rewritten
    assert "failed: dm_july2021_7:" in r.stderr


def test_query_formats(processed, tmp_path: Path) -> None:
    _, out, _ = processed
    sql = "select split, count(*) as n from frames group by split order by split"
    r = subprocess.run(
        [CSDM, "query", str(out), sql, "--format", "csv"], capture_output=True, text=True
    )
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and lines[0] == "split,n"
    assert sum(int(x.split(",")[1]) for x in lines[1:]) == 9 * 60 - 20  # episode 9 has 40 frames
    sql = "select count(*) n from files where not keep"
    r = subprocess.run(
        [
            CSDM,
            "query",
            str(out),
            sql,
            "--format",
            "parquet",
            "--output",
            str(tmp_path / "q.parquet"),
        ]
    )
    assert r.returncode == 0
    files = open_dataset(out).files
    want = files.num_rows - sum(files.column("keep").to_pylist())
    assert pq.read_table(tmp_path / "q.parquet").column("n").to_pylist() == [want]
    r = subprocess.run(
        [CSDM, "query", str(out), "select nope from frames"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "query failed" in r.stderr and "Traceback" not in r.stderr
    # list columns: JSON text in CSV, on stdout and in a file alike
    sql = "select ['s', 'd'] as keys, [1, 2] as n from frames limit 1"
    r = subprocess.run(
        [CSDM, "query", str(out), sql, "--format", "csv"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.splitlines() == ["keys,n", '"[""s"", ""d""]","[1, 2]"']
    r = subprocess.run(
        [CSDM, "query", str(out), sql, "--format", "csv", "--output", str(tmp_path / "q.csv")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "q.csv").read_text().splitlines() == ["keys,n", '"[""s"", ""d""]","[1, 2]"']


def test_prefect_artifacts_report_the_run(processed, prefect_api: str) -> None:
    import httpx

    def latest(key: str) -> dict:
        r = httpx.post(
            f"{prefect_api}/artifacts/filter",
            json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1},
        )
        r.raise_for_status()
        return r.json()[0]

    rejected = latest("rejected-and-failed-episodes")
    rows = json.loads(rejected["data"]) if isinstance(rejected["data"], str) else rejected["data"]
    by_episode = {row["episode"]: row for row in rows}
    assert by_episode["dm_july2021_7"]["status"] == "failed"
    assert "escapes the archive" in by_episode["dm_july2021_8"]["reason"]
    assert by_episode["dm_july2021_9"]["status"] == "stored"
    assert latest("process-progress")["data"] == 100.0
    # the report's tables and figures ride along, with the catalog's numbers
    _, out, _ = processed
    files = open_dataset(out).files.to_pandas()
    summary = latest("dataset-summary")
    row = (json.loads(summary["data"]) if isinstance(summary["data"], str) else summary["data"])[0]
    stored = files[files.status == "stored"]
    assert (row["episodes"], row["kept"], row["failed"]) == (
        len(stored),
        int(stored.keep.sum()),
        int((files.status == "failed").sum()),
    )
    assert row["frames"] == int(stored.n_frames.sum())
    emd = latest("map-coverage-emd")
    emd_rows = json.loads(emd["data"]) if isinstance(emd["data"], str) else emd["data"]
    assert {r["base"] for r in emd_rows} == {"out/dm_july2021", "out/dm_july2021_expert"}
    assert latest("dataset-report")["data"].count("data:image/png;base64,") >= 3
    assert (out / "report" / "index.html").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_empty_source_and_unsafe_metadata_are_one_line(
    synth_tree: Path, prefect_api: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/README.md").write_text("nothing here")
    out = tmp_path / "out"
    r = run_csdm("process", str(tmp_path / "empty"), str(out), api=prefect_api)
    assert r.returncode == 2 and "no episodes found in" in r.stderr and "hdf5_" in r.stderr
    assert not out.exists()
    src = tmp_path / "src"
    shutil.copytree(synth_tree, src)
    meta = src / "dataset_metadata/currvarsv2_dm_july2021_expert_1_to_100.npy"
    arr = np.empty((), dtype=object)
    arr[()] = {"file_num1_frame_0": _Evil()}
    meta.unlink()
    np.save(meta, arr, allow_pickle=True)
    r = run_csdm("process", str(src), str(out), "--workers", "1", api=prefect_api)
    assert r.returncode == 0, r.stderr  # episodes are stored, rejected for want of metadata
    lines = [x for x in r.stdout.splitlines() if "metadata file unusable" in x]
    assert len(lines) == 1 and str(meta) in lines[0] and "may carry code" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    files = open_dataset(out).files.to_pandas().set_index("episode")
    assert "metadata file unusable" in files.loc["dm_july2021_expert_1", "reject_reason"]
