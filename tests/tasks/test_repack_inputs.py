"""A completion record remembers its inputs: a rerun redoes exactly what changed."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storage.dataset import open_dataset
from storage.episode import Episode, read_episode, write_episode
from storage.fs import Root
from storage.records import EpisodeRecord
from tasks.params import ProcessParams
from tasks.process_source import process_source

EXPERT_META = "dataset_metadata/currvarsv2_dm_july2021_expert_1_to_100.npy"


def _run(src: Path, out: Path, params: ProcessParams | None = None) -> dict[str, EpisodeRecord]:
    """One process run in-process, with the flow's own wiring."""
    params = params or ProcessParams(test_fraction=0.25, seed=1)
    _, records = process_source(Root(str(src)), Root(str(out)), params, reprocess=True)
    return {r.episode: r for r in records}


def _shard_stamp(out: Path, episode: str) -> tuple[int, int]:
    shard = next(
        p
        for p in (out / "frames.zarr" / episode).rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    st = shard.stat()
    return st.st_ino, st.st_mtime_ns


@pytest.fixture
def src(synth_tree: Path, tmp_path: Path) -> Path:
    out = tmp_path / "src"
    shutil.copytree(synth_tree, out)
    return out


def test_restoring_missing_metadata_redoes_only_its_episodes(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    kept_aside = tmp_path / "meta.npy"
    shutil.move(src / EXPERT_META, kept_aside)
    first = _run(src, out)
    expert = "dm_july2021_expert_1"
    assert "no metadata" in first[expert].reject_reason and first[expert].counters is None
    stamp = _shard_stamp(out, expert)
    assert all(not r.skipped for r in first.values())

    again = _run(src, out)  # nothing changed: nothing redone
    assert all(r.skipped and r.redone is None for r in again.values())

    shutil.move(kept_aside, src / EXPERT_META)
    fixed = _run(src, out)
    redone = {e for e, r in fixed.items() if r.redone}
    assert redone == {"dm_july2021_expert_1", "dm_july2021_expert_2"}
    assert fixed[expert].redone == "metadata"
    assert all(r.skipped for e, r in fixed.items() if e not in redone)
    assert fixed[expert].counters is not None and fixed[expert].reject_reason is None
    assert _shard_stamp(out, expert) == stamp  # frames not rewritten
    frames = open_dataset(out).catalog.to_table().to_pandas()
    assert frames[frames.episode == expert]["health"].notna().all()
    files = open_dataset(out).files.to_pandas().set_index("episode")
    assert pd.isna(files.loc[expert, "reject_reason"]) and files.loc[expert, "keep"]


def test_changed_metadata_contents_are_picked_up(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(src, out)
    from storage.safepickle import load_npy
    from tasks.synth.tree import save_legacy_npy

    path = src / EXPERT_META
    meta = load_npy(path).item()
    for i in range(60):
        state = meta[f"file_num1_frame_{i}"][0]
        state["gsi_health"] = state["obs_health"] = 0  # dead all along: dead_skipped
    path.unlink()
    save_legacy_npy(path, np.array(meta, dtype=object))
    rerun = _run(src, out)
    assert {e for e, r in rerun.items() if r.redone} == {
        "dm_july2021_expert_1",
        "dm_july2021_expert_2",
    }
    assert rerun["dm_july2021_expert_1"].counters["dead_skipped"] > 0


def test_frames_are_rewritten_only_when_the_member_changed(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(src, out)
    tar = src / "hdf5_dm_july2021_1_to_3.tar"
    stamps = {e: _shard_stamp(out, e) for e in ("dm_july2021_1", "dm_july2021_2")}

    tar.touch()  # same bytes, new mtime: re-hashed, frames kept
    touched = _run(src, out)
    assert touched["dm_july2021_1"].redone == "member"
    assert {e: _shard_stamp(out, e) for e in stamps} == stamps
    assert touched["dm_july2021_4"].skipped

    # new frames for episode 2 inside the same tar
    work = tmp_path / "untar"
    with tarfile.open(tar) as t:
        t.extractall(work, filter="data")
    ep2 = work / "hdf5_dm_july2021_2.hdf5"
    old = read_episode(ep2)
    brighter = Episode(
        np.clip(old.frames.astype(int) + 7, 0, 255).astype(np.uint8), old.y, old.xaux, old.helperarr
    )
    ep2.unlink()
    write_episode(ep2, brighter)
    tar.unlink()
    with tarfile.open(tar, "w") as t:
        for n in (1, 2, 3):
            t.add(work / f"hdf5_dm_july2021_{n}.hdf5", arcname=f"hdf5_dm_july2021_{n}.hdf5")
    changed = _run(src, out)
    assert changed["dm_july2021_2"].redone == "member"
    assert _shard_stamp(out, "dm_july2021_2") != stamps["dm_july2021_2"]
    assert _shard_stamp(out, "dm_july2021_1") == stamps["dm_july2021_1"]
    np.testing.assert_array_equal(open_dataset(out).frames("dm_july2021_2"), brighter.frames)
    assert open_dataset(out).sha256("dm_july2021_2") == changed["dm_july2021_2"].sha256


def test_new_parameters_rejudge_and_keep_frames(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ProcessParams(test_fraction=0.25, seed=1)
    first = _run(src, out, base)
    stamp = _shard_stamp(out, "dm_july2021_1")
    strict = base.model_copy(update={"mouse_static": 0, "vel_static": 0})
    again = _run(src, out, strict)
    assert all(r.redone == "parameters" for r in again.values())
    assert _shard_stamp(out, "dm_july2021_1") == stamp
    assert sum(r.keep for r in again.values()) < sum(r.keep for r in first.values())


def test_float_frames_are_refused_not_cast(src: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ep = Episode(
        rng.random((40, 150, 280, 3)).astype(np.float32),
        np.zeros((40, 51)),
        np.zeros((40, 54)),
        np.zeros((40, 2)),
    )
    write_episode(src / "hdf5_dm_july2021_9.hdf5", ep)
    out = tmp_path / "out"
    records = _run(src, out)
    bad = records["dm_july2021_9"]
    assert bad.status == "failed" and "float32" in bad.reject_reason
    assert "(values in [" in bad.reject_reason and "uint8" in bad.reject_reason
    assert not (out / "frames.zarr" / "dm_july2021_9").exists()
    files = open_dataset(out).files.to_pandas().set_index("episode")
    assert (
        files.loc["dm_july2021_9", "status"] == "failed" and not files.loc["dm_july2021_9", "keep"]
    )


def test_a_new_codec_rewrites_the_frames_a_new_limit_keeps_them(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ProcessParams(test_fraction=0.25, seed=1)
    _run(src, out, base)
    ep = "dm_july2021_1"
    before = open_dataset(out).frames(ep)
    stamp = _shard_stamp(out, ep)
    meta = out / "frames.zarr" / ep / "zarr.json"
    assert '"csdm.predictor"' in meta.read_text()  # the default codec is named in zarr.json

    limit = _run(src, out, base.model_copy(update={"obs_count": 7}))
    assert limit[ep].redone == "parameters" and _shard_stamp(out, ep) == stamp

    archived = _run(src, out, base.model_copy(update={"codec": "jpegxl"}))
    assert archived[ep].redone == "parameters, codec"
    assert '"csdm.image"' in meta.read_text() and '"jpegxl"' in meta.read_text()
    ds = open_dataset(out)
    np.testing.assert_array_equal(ds.frames(ep), before)
    assert ds.manifest.parameters["codec"] == "jpegxl"
    assert archived[ep].stored_bytes < limit[ep].stored_bytes  # the archive codec is smaller
