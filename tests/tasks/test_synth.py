"""The synthetic tree: public names, determinism, realistic contents."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from storage.containers import MemberRef, iter_container
from storage.episode import read_episode
from storage.layout import episode_from_member
from storage.metadata import load_metadata
from tasks.synth.tree import SynthConfig, write_synthetic_tree
from tests.conftest import SMALL


def test_tree_uses_the_public_names(synth_tree: Path) -> None:
    names = sorted(str(p.relative_to(synth_tree)) for p in synth_tree.rglob("*") if p.is_file())
    assert names == [
        "dataset_dm_expert_dust2.zip",
        "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy",
        "dataset_metadata/currvarsv2_dm_july2021_expert_1_to_100.npy",
        "hdf5_dm_july2021_1_to_3.tar",
        "hdf5_dm_july2021_4_to_6.tar",
    ]
    members = [m for m in iter_container(synth_tree) if isinstance(m, MemberRef)]
    eps = sorted(episode_from_member(m.member).name for m in members if m.member)
    assert eps == [f"dm_july2021_{i}" for i in range(1, 7)] + [
        "dm_july2021_expert_1",
        "dm_july2021_expert_2",
    ]


def test_frames_labels_and_metadata_agree(synth_tree: Path) -> None:
    ref = next(
        m
        for m in iter_container(synth_tree / "hdf5_dm_july2021_1_to_3.tar")
        if isinstance(m, MemberRef) and m.member == "hdf5_dm_july2021_2.hdf5"
    )
    ep = read_episode(ref)
    assert len(ep) == SMALL.frames and ep.frames.dtype == np.uint8
    # frames differ as the view pans, and the crosshair is drawn in BGR green
    assert np.abs(np.diff(ep.frames.astype(int), axis=0)).mean() > 1
    assert ep.frames[:, 75, 140].tolist().count([42, 250, 46]) == SMALL.frames
    meta = load_metadata(synth_tree / "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy")
    i = [e.name for e in meta.episodes].index("dm_july2021_2")
    start = int(meta.lengths[:i].sum())
    kills = meta.shipped.column("ship_kill").to_numpy()[start : start + SMALL.frames]
    np.testing.assert_array_equal(ep.helperarr[:, 0], kills)
    assert (ep.y[:, 13:36].sum(axis=1) == 1).all() and (ep.y[:, 36:].sum(axis=1) == 1).all()


def test_expert_set_has_clean_labels(synth_tree: Path) -> None:
    meta = load_metadata(synth_tree / "dataset_metadata/currvarsv2_dm_july2021_expert_1_to_100.npy")
    assert meta.state.column("tp_wasd").null_count == 0
    assert meta.state.column("tp_lclick").null_count == 0


def test_same_seed_same_tree_other_seed_other_tree(tmp_path: Path) -> None:
    cfg = SynthConfig(seed=3, frames=20, tars=1, episodes_per_tar=1, expert_episodes=1)
    a = write_synthetic_tree(tmp_path / "a", cfg)
    b = write_synthetic_tree(tmp_path / "b", cfg)
    c = write_synthetic_tree(tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 4}))
    for pa_, pb in zip(a, b, strict=True):
        if pa_.suffix == ".npy":
            assert pa_.read_bytes() == pb.read_bytes()
    ma = load_metadata(a[-1]).state.column("xy_rad").to_pylist()
    mc = load_metadata(c[-1]).state.column("xy_rad").to_pylist()
    assert ma != mc
    fa = read_episode(next(m for m in iter_container(a[0]) if isinstance(m, MemberRef)))
    fb = read_episode(next(m for m in iter_container(b[0]) if isinstance(m, MemberRef)))
    np.testing.assert_array_equal(fa.frames, fb.frames)
