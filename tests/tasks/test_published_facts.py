"""The public data as it is: source defects are recorded once, twins stored once, order moot."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from storage.dataset import open_dataset
from storage.fs import Root
from tasks import repack
from tasks.params import ProcessParams
from tasks.process_source import process_source
from tests.published_facts import DEFECTS, EXPERT_ZIP, FIRST, TWIN, published_facts_source


@pytest.fixture(scope="module")
def facts(synth_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return published_facts_source(synth_tree, tmp_path_factory.mktemp("facts") / "src")


def _process(src: Path, out: Path, **kw):
    params = ProcessParams(test_fraction=0.5, seed=3)
    return process_source(Root(str(src)), Root(str(out)), params, **kw)


def _rows(out: Path) -> dict[str, dict]:
    return {r["episode"]: r for r in open_dataset(out).files.to_pylist()}


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The members whose bytes a run reads."""
    seen: list[str] = []
    original = repack._load

    def counted(ref):
        seen.append(ref.label)
        return original(ref)

    monkeypatch.setattr(repack, "_load", counted)
    return seen


def test_defects_are_recorded_once_and_twins_stored_once(
    facts: Path, tmp_path: Path, loads: list[str]
) -> None:
    out = tmp_path / "out"
    summary, _ = _process(facts, out)
    rows = _rows(out)
    assert summary.failed == 0 and len(summary.defects) == 2
    for name in DEFECTS:
        r = rows[name]
        assert r["status"] == "defect" and not r["keep"]
        assert r["container"].endswith(EXPERT_ZIP) and r["member"].endswith(f"hdf5_{name}.hdf5")
        with zipfile.ZipFile(facts / EXPERT_ZIP) as zf:
            assert r["size"] == zf.getinfo(r["member"]).file_size
        assert len(r["sha256"]) == 64 and "truncated file" in r["reject_reason"]
    twin, first = rows[TWIN], rows[FIRST]
    assert (twin["status"], twin["duplicate_of"], twin["keep"]) == ("duplicate", FIRST, False)
    assert twin["sha256"] == first["sha256"] and twin["split"] == first["split"]
    assert any(TWIN in line and FIRST in line for line in summary.duplicates)
    ds = open_dataset(out)
    assert TWIN not in ds.episodes and FIRST in ds.episodes
    assert not (out / "frames.zarr" / TWIN).exists() and not (out / "actions.zarr" / TWIN).exists()
    from tasks.report.numbers import dataset_report

    report = dataset_report(out)
    assert (report.summary["source_defects"], report.summary["duplicates"]) == (2, 1)
    assert report.summary["failed"] == 0 and report.summary["episodes"] == len(ds.episodes)
    # a rerun reads neither defect nor the twin again, and still names them
    loads.clear()
    again, _ = _process(facts, out)
    assert not [x for x in loads if "expert" in x or f"{TWIN}.hdf5" in x], loads
    assert again.failed == 0 and again.defects == summary.defects
    assert again.duplicates == summary.duplicates
    assert _rows(out) == rows
    # told to, it reads the defects again, and they stay defects
    loads.clear()
    _process(facts, out, retry_defects=True)
    assert sum("expert" in x for x in loads) == 2
    assert _rows(out)[DEFECTS[0]]["status"] == "defect"


def test_a_member_that_fails_its_crc_is_a_failure_and_is_retried(
    facts: Path, tmp_path: Path, loads: list[str]
) -> None:
    src = tmp_path / "src"
    shutil.copytree(facts, src)
    z = src / EXPERT_ZIP
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo(f"dataset_dm_expert_dust2/hdf5_{DEFECTS[0]}.hdf5")
    data = bytearray(z.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0xFF  # its bytes, not its CRC
    z.write_bytes(bytes(data))
    out = tmp_path / "out"
    summary, _ = _process(src, out)
    rows = _rows(out)
    assert rows[DEFECTS[0]]["status"] == "failed" and rows[DEFECTS[1]]["status"] == "defect"
    assert "CRC-32 does not match" in rows[DEFECTS[0]]["reject_reason"]
    assert summary.failed == 1
    loads.clear()
    assert _process(src, out)[0].failed == 1
    assert sum(DEFECTS[0] in x for x in loads) == 1 and not [x for x in loads if DEFECTS[1] in x]


def _tar_with(src: Path, keep: str) -> None:
    for tar in src.glob("*.tar"):
        if tar.name != keep:
            tar.unlink()


@pytest.mark.parametrize(
    "first_run", ["hdf5_dm_july2021_1_to_3.tar", "hdf5_dm_july2021_4_to_6.tar"]
)
def test_twins_that_arrive_in_two_runs(facts: Path, tmp_path: Path, first_run: str) -> None:
    """Whichever tar comes first, the lower-numbered twin is the one stored."""
    part = tmp_path / "part"
    shutil.copytree(facts, part)
    _tar_with(part, first_run)
    out = tmp_path / "out"
    _process(part, out)
    _process(facts, out)
    rows = _rows(out)
    assert rows[TWIN]["status"] == "duplicate" and rows[TWIN]["duplicate_of"] == FIRST
    assert rows[FIRST]["status"] == "stored" and rows[TWIN]["split"] == rows[FIRST]["split"]
    ds = open_dataset(out)
    assert TWIN not in ds.episodes and not (out / "frames.zarr" / TWIN).exists()
    assert TWIN not in ds.catalog.to_table(columns=["episode"]).column("episode").to_pylist()


def test_the_order_of_members_never_matters(facts: Path, tmp_path: Path) -> None:
    ordered = tmp_path / "ordered"
    shutil.copytree(facts, ordered)
    tar = ordered / "hdf5_dm_july2021_1_to_3.tar"
    with tarfile.open(tar) as tf:
        assert tf.getnames()[0] == "hdf5_dm_july2021_3.hdf5"  # as on the Hub
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    from tests.published_facts import _write_tar

    _write_tar(tar, sorted(members.items()))
    a, b = tmp_path / "a", tmp_path / "b"
    _process(facts, a)
    _process(ordered, b)
    keep = ["episode", "split", "keep", "status", "sha256", "n_frames", "duplicate_of"]
    assert open_dataset(a).files.select(keep) == open_dataset(b).files.select(keep)
    frames = ["episode", "frame", "split", "key_w"]
    ta = open_dataset(a).catalog.to_table(columns=frames).sort_by([("episode", "ascending")])
    tb = open_dataset(b).catalog.to_table(columns=frames).sort_by([("episode", "ascending")])
    assert ta.equals(tb)


def test_windows_segments_and_exports_never_draw_the_later_twin(
    facts: Path, tmp_path: Path
) -> None:
    from tasks.diamond_export import export_episode, finish_export, plan_export
    from training.data import SamplerConfig, load_labels
    from training.segments import SegmentStream

    out = tmp_path / "out"
    _process(facts, out)
    labels = load_labels(out, SamplerConfig(window=8, jitter=4, split=None, keep_only=False))
    assert FIRST in labels.episodes and TWIN not in labels.episodes
    assert TWIN not in SegmentStream(str(out), 8, 2).episodes
    # DIAMOND exports both twins (its preparation reads every tar member); --kept-only does not
    for kept_only in (False, True):
        dest = tmp_path / f"diamond-{kept_only}"
        plan, jobs, _ = plan_export(
            str(out), str(dest), "hdf5_dm_july2021_1.hdf5", "split", (30, 56), 60, kept_only
        )
        results = [export_episode(j) for j in jobs]
        finish_export(plan, str(dest))
        names = {j.file_id.rsplit("/", 1)[1] for j in jobs}
        assert (f"hdf5_{TWIN}.hdf5" in names) is not kept_only
        assert all(r.status == "written" for r in results)
        if not kept_only:
            twin = next(j for j in jobs if j.file_id.endswith(f"hdf5_{TWIN}.hdf5"))
            first = next(j for j in jobs if j.file_id.endswith(f"hdf5_{FIRST}.hdf5"))
            import torch

            a = torch.load(dest / twin.key, weights_only=True)["obs"]
            b = torch.load(dest / first.key, weights_only=True)["obs"]
            assert np.array_equal(a.numpy(), b.numpy())
