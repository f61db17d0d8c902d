"""DIAMOND's data from the store: export, full-res reader and segments, against a restatement."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from storage.dataset import open_dataset
from storage.episode import Episode, write_episode
from tests.training import diamond_reference as ref

LENGTH = 40  # frames DIAMOND reads per episode here (1000 in the public data)
SIZE = (30, 56)
# numbers whose text order is not their numeric order; 101 is too short, 12 longer than LENGTH
EPISODES = {
    "hdf5_dm_july2021_1_to_20.tar": {2: 40, 10: 40, 12: 47},
    "hdf5_dm_july2021_100_to_120.tar": {100: 40, 101: 30},
}
TEST_NAMES = ["hdf5_dm_july2021_10.hdf5", "hdf5_dm_july2021_100.hdf5"]
ASSET = Path(__file__).parents[1] / "assets" / "real_frame.png"


def _frames(n: int, seed: int) -> np.ndarray:
    """The real frame shifted per step, with a black and white checkerboard: bicubic overshoot."""
    rgb = np.asarray(Image.open(ASSET).convert("RGB"))[:150, :280]
    base = np.ascontiguousarray(rgb[:, :, ::-1])
    out = np.stack([np.roll(base, (seed + i) * 3, axis=1) for i in range(n)])
    out[:, 20:110, 30:220] = 0  # a white box on black, edges off the 5x grid: overshoot
    out[:, 43:87, 73:151] = 255
    return out


def _actions(n: int, seed: int) -> np.ndarray:
    """Rows with malformed one-hot groups: two mouse bins, fractions, negatives, all zeros."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 51)) < 0.1).astype(np.float64)
    y[0, 23:25] = 1.0  # two mouse-x bins
    y[1, :] = 0.0
    y[2, 5] = 0.5
    y[3, 40] = -1.0
    return y


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Two scraped tars in the public layout, built from the real frame."""
    src = tmp_path_factory.mktemp("diamond-src")
    work = tmp_path_factory.mktemp("diamond-h5")
    for tar, eps in EPISODES.items():
        with tarfile.open(src / tar, "w") as tf:
            for num, n in eps.items():
                h5 = work / f"hdf5_dm_july2021_{num}.hdf5"
                write_episode(
                    h5,
                    Episode(_frames(n, num), _actions(n, num), np.zeros((n, 54)), np.zeros((n, 2))),
                )
                tf.add(h5, arcname=h5.name)
    return src


@pytest.fixture(scope="module")
def store(source, tmp_path_factory) -> Path:
    from tests.conftest import process_plain

    return process_plain(source, tmp_path_factory.mktemp("diamond-out") / "out", 0.0)


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> dict:
    full = tmp_path_factory.mktemp("diamond-full") / "full_res"
    ref.untar(sorted(source.glob("*.tar")), full)
    # DIAMOND's reader fails on episode 101 (30 frames); it is left out of both sides
    (full / "100-120" / "hdf5_dm_july2021_101.hdf5").unlink()
    return {"full": full, **ref.prepare(full, TEST_NAMES, SIZE, LENGTH)}


def _load(path: Path):
    from numpy.core.multiarray import _reconstruct

    # the files name numpy 1's module (numpy.core), so numpy 1.26 (DIAMOND's) loads them too
    old_name = (_reconstruct, "numpy.core.multiarray._reconstruct")
    allowed = [Counter, np.ndarray, np.dtype, _reconstruct, old_name, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)


def _export(store: Path, dest: Path, split_text: str = "\n".join(TEST_NAMES)):
    from tasks.diamond_export import export_episode, finish_export, plan_export

    plan, jobs, left_out = plan_export(str(store), str(dest), split_text, "split.txt", SIZE, LENGTH)
    return plan, jobs, left_out, [export_episode(j) for j in jobs], finish_export(plan, str(dest))


def _check_against(reference: dict, dest: Path) -> None:
    for split in ("train", "test"):
        want = reference["episodes"][split]
        for i, ep in enumerate(want):
            got = _load(ref.episode_file(dest / "low_res" / split, i))
            assert list(got) == ["obs", "act", "rew", "end", "trunc", "info"]
            assert got["info"] == ep["info"]
            for k in ("obs", "act", "rew", "end", "trunc"):
                assert got[k].numpy().dtype == ep[k].dtype, (split, i, k)
                np.testing.assert_array_equal(got[k].numpy(), ep[k], err_msg=f"{split} {i} {k}")
        info = _load(dest / "low_res" / split / "info.pt")
        exp = reference["info"][split]
        assert set(info) == set(exp)
        for k, v in exp.items():
            if isinstance(v, np.ndarray):
                assert info[k].dtype == v.dtype
                np.testing.assert_array_equal(info[k], v)
            else:
                assert info[k] == v and type(info[k]) is type(v), k


def test_reference_data_is_adversarial(reference) -> None:
    """The frames overshoot [-1, 1] after the resize, and wrap: the test can tell a clip."""
    small = np.concatenate(
        [e["float_obs"] for s in ("train", "test") for e in reference["episodes"][s]]
    )
    assert small.min() < -1.02 and small.max() > 1.02
    obs = np.concatenate([e["obs"] for e in reference["episodes"]["train"]])
    assert (obs[small[: len(obs)] < -1.02] > 200).all()  # dark overshoot wrapped to bright


def test_torch_resize_is_a_pil_style_antialiased_bicubic() -> None:
    """The primitive both sides use, pinned against a numpy filter (support scaled by 1/scale)."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        support = 2 * scale
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            c = (i + 0.5) * scale
            lo, hi = max(int(c - support + 0.5), 0), min(int(c + support + 0.5), n_in)
            a, ax = -0.5, np.abs((np.arange(lo, hi) - c + 0.5) / scale)
            k = np.where(
                ax < 1,
                (a + 2) * ax**3 - (a + 3) * ax**2 + 1,
                np.where(ax < 2, a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a, 0),
            )
            w[i, lo:hi] = k / k.sum()
        return w

    img = ref.scaled(_frames(1, 3)[0])
    want = np.einsum("ph,chw,qw->cpq", weights(150, 30), img.astype(np.float64), weights(280, 56))
    got = torch.nn.functional.interpolate(
        torch.from_numpy(img)[None], size=SIZE, mode="bicubic", align_corners=False, antialias=True
    )[0].numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_export_is_diamonds_preparation(store, reference, tmp_path) -> None:
    plan, _, left_out, results, missing = _export(store, tmp_path / "d")
    assert [r.status for r in results] == ["written"] * 4 and missing == []
    assert left_out == ["dm_july2021_101: 30 frames, DIAMOND reads 40; left out"]
    assert plan.train == ("1-20/hdf5_dm_july2021_2.hdf5", "1-20/hdf5_dm_july2021_12.hdf5")
    assert plan.test == ("1-20/hdf5_dm_july2021_10.hdf5", "100-120/hdf5_dm_july2021_100.hdf5")
    _check_against(reference, tmp_path / "d")
    assert not list((tmp_path / "d").rglob("*.hdf5"))  # no full-resolution copy


def test_export_from_a_stored_view_is_the_same(store, reference, tmp_path) -> None:
    from storage.sidearrays import ViewSpec
    from tasks.views import ViewJob, finish_views, make_view

    spec = ViewSpec("30x56-wrap", *SIZE)  # DIAMOND's recipe: bicubic, stretch, wrap
    results = [
        make_view(ViewJob(str(store), e, spec))
        for e in ["dm_july2021_2", "dm_july2021_10", "dm_july2021_12", "dm_july2021_100"]
    ]
    assert {r.status for r in results} == {"written"}
    assert make_view(ViewJob(str(store), "dm_july2021_2", spec)).status == "present"
    finish_views(str(store), spec, results)
    _export(store, tmp_path / "v")
    _check_against(reference, tmp_path / "v")


def test_full_res_dataset_is_diamonds_reader(store, reference) -> None:
    from training.diamond import FullResDataset, SegmentId

    ds = FullResDataset(str(store), length=LENGTH)
    files = ref.files(reference["full"])
    assert list(ds._filenames) == list(files)
    assert ds.num_episodes == 4 and ds.num_steps == 160
    assert ds.lengths.dtype == np.int64 and ds.lengths.tolist() == [LENGTH] * 4
    for fid in files:
        for start, stop in [(-5, 10), (30, 52), (0, LENGTH), (-3, 1), (39, 40), (-60, 90)]:
            got = ds[SegmentId(fid, start, stop)]
            want = ref.segment(files[fid], start, stop, LENGTH)
            np.testing.assert_array_equal(got.obs.numpy(), want["obs"])
            assert got.obs.dtype == torch.float32 and got.act.numpy().dtype == want["act"].dtype
            np.testing.assert_array_equal(got.act.numpy(), want["act"])
            np.testing.assert_array_equal(got.mask_padding.numpy(), want["mask"])
            assert got.rew.dtype == torch.float32 and got.end.dtype == torch.uint8
            assert got.trunc.dtype == torch.uint8 and got.info == {}
            assert (got.id.episode_id, got.id.start, got.id.stop) == (fid, *want["id"])
    ep = ds.load_episode("1-20/hdf5_dm_july2021_12.hdf5")
    assert len(ep) == LENGTH  # the first 40 of its 47 frames, as DIAMOND reads it
    for bad in [(40, 41), (5, 5), (-3, 0)]:
        with pytest.raises(ValueError):
            ds[SegmentId("1-20/hdf5_dm_july2021_2.hdf5", *bad)]
    with pytest.raises(KeyError, match="hdf5_dm_july2021_7"):
        ds[SegmentId("1-20/hdf5_dm_july2021_7.hdf5", 0, 4)]


def test_segments_sample_as_diamond_and_resume(store, reference) -> None:
    from training.segments import SegmentStream
    from training.stream import StreamState

    s = SegmentStream(str(store), 16, 6, state=StreamState(seed=5), obs="uint8")
    assert s.episodes == [
        "dm_july2021_10",
        "dm_july2021_100",
        "dm_july2021_101",
        "dm_july2021_12",
        "dm_july2021_2",
    ]
    assert s.lengths.tolist() == [40, 40, 30, 47, 40]
    for g in range(3):
        ep, start, stop = ref.sample(np.random.default_rng([5, 0, g]), s.lengths, 6, 16)
        got = s.segments(g)
        for a, b in zip(got, (ep, start, stop), strict=True):
            np.testing.assert_array_equal(a, b)
    batches = iter(s)
    first = [next(batches) for _ in range(3)]
    resumed = next(
        iter(SegmentStream(str(store), 16, 6, state=StreamState(seed=5, cursor=2), obs="uint8"))
    )
    assert (
        torch.equal(resumed["obs"], first[2]["obs"]) and resumed["episode"] == first[2]["episode"]
    )
    b = first[0]
    files = ref.files(reference["full"])
    for i, name in enumerate(b["episode"]):
        lo, hi = max(0, int(b["start"][i])), int(b["stop"][i])
        num = int(name.rsplit("_", 1)[1])
        path = next((p for p in files.values() if p.stem.endswith(f"_{num}")), None)
        if path is None:  # the short episode: csdm's own users get it too
            continue
        want = ref.segment(path, lo, hi, hi)
        left = lo - int(b["start"][i])
        got = b["obs"][i, left : left + hi - lo].numpy()
        np.testing.assert_array_equal(got, ref.rgb_frames(path, lo, hi))
        np.testing.assert_array_equal(b["act"][i, left : left + hi - lo].numpy(), want["act"])
        assert not b["mask_padding"][i, :left].any() and b["mask_padding"][i, left:].all()
        assert not b["obs"][i, :left].any()


def test_segment_ranks_are_disjoint(store) -> None:
    from training.segments import SegmentStream

    seen = [
        set(np.asarray(SegmentStream(str(store), 8, 32, rank=r, world=2).mine).tolist())
        for r in range(2)
    ]
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(5))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_cli_export_resumes_and_names_each_failure(store, reference, tmp_path) -> None:
    from tasks.diamond_export import export_episode, plan_export

    split = tmp_path / "split.txt"
    split.write_text("\n".join(TEST_NAMES) + "\n")
    dest = tmp_path / "dest"
    # an export killed after two episodes: their files are whole, no info.pt, a stray .tmp
    _, jobs, _ = plan_export(str(store), str(dest), split.read_text(), str(split), SIZE, LENGTH)
    for j in jobs[:2]:
        export_episode(j)
    (dest / "low_res" / "train" / ".0.pt.abcd1234.tmp").write_bytes(b"half")
    assert not list(dest.rglob("info.pt"))
    p = _cli(
        "export-diamond",
        str(store),
        str(dest),
        "--test-split",
        str(split),
        "--length",
        str(LENGTH),
        "--workers",
        "1",
    )
    assert p.returncode == 0, p.stderr
    assert "written 2, already there 2, failed 0" in p.stdout
    assert "left out: dm_july2021_101: 30 frames" in p.stderr
    _check_against(reference, dest)

    bad = tmp_path / "bad.txt"
    bad.write_text("hdf5_dm_july2021_10.hdf5\n../etc/passwd\n")
    for extra, msg in [
        (["--test-split", str(tmp_path / "none.txt")], "none.txt: cannot read"),
        (["--test-split", str(bad)], "bad.txt: line 2"),
    ]:
        p = _cli("export-diamond", str(store), str(tmp_path / "x"), *extra)
        assert p.returncode == 2 and msg in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) <= 2  # one line (after Prefect's API line)


def test_corrupt_chunk_and_no_scraped_episodes_are_one_line(store, tmp_path) -> None:
    import shutil

    from tasks.diamond_export import ExportError, export_episode, finish_export, plan_export
    from tests.conftest import process_plain

    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    shutil.rmtree(broken / "views", ignore_errors=True)  # a stored view would stand in for frames
    shard = next(
        p
        for p in (broken / "frames.zarr" / "dm_july2021_2").rglob("*")
        if p.is_file() and "/c/" in str(p)
    )
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    plan, jobs, _ = plan_export(
        str(broken), str(tmp_path / "d"), "\n".join(TEST_NAMES), "s", SIZE, LENGTH
    )
    results = {r.file_id: r for r in map(export_episode, jobs)}
    bad = results["1-20/hdf5_dm_july2021_2.hdf5"]
    assert bad.status == "failed" and "episode dm_july2021_2, frames" in bad.reason
    assert "\n" not in bad.reason
    assert sum(r.status == "written" for r in results.values()) == 3
    assert finish_export(plan, str(tmp_path / "d")) == ["1-20/hdf5_dm_july2021_2.hdf5"]
    assert not (tmp_path / "d" / "low_res" / "train" / "info.pt").exists()
    assert (tmp_path / "d" / "low_res" / "test" / "info.pt").exists()

    from tasks.synth.tree import SynthConfig, write_synthetic_tree

    src = tmp_path / "expert-src"
    write_synthetic_tree(src, SynthConfig(seed=1, frames=4, tars=0, expert_episodes=1))
    out = process_plain(src, tmp_path / "expert-out", 0.0)
    with pytest.raises(ExportError, match="no scraped dust2 episodes"):
        plan_export(str(out), str(tmp_path / "e"), "\n".join(TEST_NAMES), "s", SIZE, LENGTH)


def test_export_and_full_res_from_a_bucket(store, reference, bucket, tmp_path) -> None:
    import fsspec

    from training.diamond import FullResDataset, SegmentId

    fs = fsspec.filesystem("s3")
    for p in sorted(store.rglob("*")):
        if p.is_file() and "views" not in p.parts:
            fs.put_file(str(p), f"{bucket[5:]}/out/{p.relative_to(store).as_posix()}")
    _, _, _, results, missing = _export(f"{bucket}/out", f"{bucket}/dest")
    assert [r.status for r in results] == ["written"] * 4 and missing == []
    local = tmp_path / "copy"
    fs.get(f"{bucket[5:]}/dest", str(local), recursive=True)
    _check_against(reference, local)
    files = ref.files(reference["full"])
    ds = FullResDataset(f"{bucket}/out", length=LENGTH)
    got = ds[SegmentId("100-120/hdf5_dm_july2021_100.hdf5", -2, 6)]
    want = ref.segment(files["100-120/hdf5_dm_july2021_100.hdf5"], -2, 6, LENGTH)
    np.testing.assert_array_equal(got.obs.numpy(), want["obs"])
    np.testing.assert_array_equal(got.act.numpy(), want["act"])


def test_sizes_parse_or_say_why() -> None:
    from training.diamond_obs import parse_size

    assert parse_size("30x56") == (30, 56) and parse_size("150X280") == (150, 280)
    for bad, msg in [("30by56", "not HEIGHTxWIDTH"), ("0x56", "1..4096"), ("30x99999", "1..4096")]:
        with pytest.raises(ValueError, match=msg):
            parse_size(bad)


def test_spawn_points_load_in_diamonds_play_env(store, reference, tmp_path) -> None:
    from tasks.diamond_spawn import write_spawns
    from tests import diamond_code

    _, jobs, _, _, _ = _export(store, tmp_path / "d")
    folders = write_spawns(jobs, 3)
    assert len(folders) == 3 and (tmp_path / "d" / "spawn" / "2" / "low_res.npy").exists()
    # DIAMOND's own loader, `WorldModelEnv.make_generator_init`, on a stand-in `self` that
    # has what it reads: a device, no reward model, and an upsampler (full_res is loaded)
    env = diamond_code.world_model_env().WorldModelEnv
    me = types.SimpleNamespace(device=torch.device("cpu"), rew_end_model=None)
    me.sampler_upsampling = object()
    gen = env.make_generator_init(me, tmp_path / "d" / "spawn", 3)
    ds = open_dataset(store)
    # test episodes first, then train: 2 + 1 here
    order = [j for j in jobs if j.split == "test"] + [j for j in jobs if j.split == "train"]
    theirs = reference["episodes"]["test"] + reference["episodes"]["train"]
    for i in range(3):
        obs, full, act, next_act, _ = gen.send(1)
        want = theirs[i]  # DIAMOND's own export of the same episode
        scaled = torch.from_numpy(want["obs"][:4]).div(255).mul(2).sub(1)
        torch.testing.assert_close(obs[0], scaled, rtol=0, atol=0)
        np.testing.assert_array_equal(act[0].numpy(), want["act"][:4].astype(np.int64))
        np.testing.assert_array_equal(next_act[0].numpy(), want["act"][4:].astype(np.int64))
        frames = ds.frames(order[i].episode, 0, 4)[..., ::-1].transpose(0, 3, 1, 2)
        torch.testing.assert_close(
            full[0], torch.from_numpy(frames.copy()).div(255).mul(2).sub(1), rtol=0, atol=0
        )
