"""Views of any geometry, strided segments, action encodings and latents, against references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tests.encoders as encoders
from storage.dataset import open_dataset
from storage.sidearrays import ViewSpec, read_actions, view_key
from tasks.encode import EncodeError, encode_episode, finish_encode, params_sha256, plan_encode
from tasks.views import ViewClashError, ViewJob, check_view, finish_views, make_view
from training.diamond_obs import low_res, parse_size
from training.segments import SegmentStream

EPISODE_FRAMES = 60


@pytest.fixture
def store(processed: Path, tmp_path: Path) -> Path:
    """A private copy of the processed dataset (views and latents are written into it)."""
    return Path(shutil.copytree(processed, tmp_path / "out"))


def _views(store: Path, spec: ViewSpec) -> list:
    ds = open_dataset(store)
    check_view(str(store), spec)
    results = [make_view(ViewJob(str(store), e, spec)) for e in ds.episodes]
    finish_views(str(store), spec, results)
    return results


def _made_from_old_frames(store: Path, key: str) -> None:
    """An array as a run before a redo left it: made from the episode's earlier bytes."""
    body = json.loads((store / key / "zarr.json").read_text())
    body["attributes"]["sha256"] = "0" * 64
    (store / key / "zarr.json").write_text(json.dumps(body))


def _stored(store: Path, name: str, episode: str) -> np.ndarray:
    from storage.sidearrays import open_array

    ds = open_dataset(store)
    return open_array(ds.root, view_key(ds.layout, name, episode))[...]


# The geometry, restated: the largest centred region of the target's aspect, and letterboxing
def _crop(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = rgb.shape[1:3]
    if w / h < W / H:
        cw = round(H * w / h)
        return rgb[:, :, (W - cw) // 2 : (W - cw) // 2 + cw]
    ch = round(W * h / w)
    return rgb[:, (H - ch) // 2 : (H - ch) // 2 + ch]


def _pil(rgb: np.ndarray, h: int, w: int, mode) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), mode)) for f in rgb])


def _cv2_area(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in rgb])


CASES = [  # (size, fit, filter, reference on RGB (T, H, W, 3) giving (T, h, w, 3))
    ((64, 112), "crop", "area", lambda x, h, w: _cv2_area(_crop(x, h, w).copy(), h, w)),
    ((88, 160), "stretch", "box", lambda x, h, w: _pil(x, h, w, Image.Resampling.BOX)),
    ((128, 128), "crop", "bilinear", lambda x, h, w: _pil(_crop(x, h, w).copy(), h, w, 2)),
    ((256, 256), "stretch", "area", lambda x, h, w: _cv2_area(x, h, w)),
    ((40, 40), "stretch", "nearest", lambda x, h, w: _pil(x, h, w, Image.Resampling.NEAREST)),
]


@pytest.mark.parametrize(("size", "fit", "filt", "reference"), CASES)
def test_each_filter_and_fit_is_its_reference_library(store, size, fit, filt, reference) -> None:
    spec = ViewSpec(f"v{size[0]}", *size, fit=fit, filter=filt, overshoot="clamp")
    ds = open_dataset(store)
    episode = ds.episodes[0]
    make_view(ViewJob(str(store), episode, spec))
    rgb = np.ascontiguousarray(ds.frames(episode, 0, EPISODE_FRAMES)[..., ::-1])
    want = reference(rgb, *size).transpose(0, 3, 1, 2)
    got = _stored(store, spec.name, episode)
    assert got.shape == (EPISODE_FRAMES, 3, *size) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def test_pad_letterboxes_and_bicubic_clamps_or_wraps(store) -> None:
    ds = open_dataset(store)
    episode = ds.episodes[1]
    rgb = np.ascontiguousarray(ds.frames(episode, 0, EPISODE_FRAMES)[..., ::-1])
    pad = ViewSpec("pad", 128, 128, fit="pad", filter="nearest", overshoot="clamp")
    make_view(ViewJob(str(store), episode, pad))
    got = _stored(store, "pad", episode)
    # 150x280 into 128x128: scaled to 69x128, centred with 29 black rows above, 30 below
    inner = _pil(rgb, 69, 128, Image.Resampling.NEAREST).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got[:, :, 29:98], inner)
    assert not got[:, :, :29].any() and not got[:, :, 98:].any()
    # clamp: torchvision's uint8 bicubic, restated (antialiased float resize, clamped, rounded)
    clamp = ViewSpec("c", 30, 56, overshoot="clamp")
    make_view(ViewJob(str(store), episode, clamp))
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(30, 56), mode="bicubic", antialias=True, align_corners=False)
    want = y.clamp(0, 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(_stored(store, "c", episode), want)
    # wrap: DIAMOND's preparation exactly (low_res is tested against DIAMOND's own code)
    wrap = ViewSpec("w", 30, 56, overshoot="wrap")
    make_view(ViewJob(str(store), episode, wrap))
    diamond = low_res(ds.frames(episode, 0, EPISODE_FRAMES), (30, 56)).numpy()
    np.testing.assert_array_equal(_stored(store, "w", episode), diamond)


def test_views_coexist_resume_and_go_stale(store) -> None:
    a = ViewSpec("a", 30, 56, overshoot="clamp")
    b = ViewSpec("b", 64, 112, fit="crop", filter="area", overshoot="clamp")
    assert {r.status for r in _views(store, a)} == {"written"}
    assert {r.status for r in _views(store, b)} == {"written"}
    index = json.loads((store / "catalog" / "views.json").read_text())
    recipes = {v["name"]: (v["fit"], v["filter"], v["stored_bytes"] > 0) for v in index["views"]}
    assert recipes == {"a": ("stretch", "bicubic", True), "b": ("crop", "area", True)}
    ds = open_dataset(store)
    e0, e1 = ds.episodes[:2]
    # a run killed mid-episode leaves chunks without zarr.json: invisible, so made again
    (store / view_key(ds.layout, "b", e0) / "zarr.json").unlink()
    _made_from_old_frames(store, view_key(ds.layout, "b", e1))  # an episode redone since
    with pytest.raises(ValueError, match="stale for 2 episode"):
        SegmentStream(str(store), 4, 2, view="b")
    status = {r.episode: r.status for r in _views(store, b)}
    assert status[e0] == status[e1] == "written"
    assert set(status.values()) == {"written", "present"}
    SegmentStream(str(store), 4, 2, view="b")  # current again
    with pytest.raises(ViewClashError, match="exists with another recipe"):
        check_view(str(store), ViewSpec("a", 30, 56, filter="box", overshoot="clamp"))
    # only bicubic overshoots: any other filter's recipe is one, however it was asked for
    check_view(str(store), ViewSpec("b", 64, 112, fit="crop", filter="area", overshoot="wrap"))
    assert (ViewSpec("c", 8, 8, filter="box").overshoot, b.method) == ("clamp", "resize")
    assert ViewSpec("d", 30, 56).method == "diamond"


def test_bad_view_input_is_one_line() -> None:
    with pytest.raises(ValueError, match=r"must be 1\.\.4096"):
        parse_size("0x56")
    with pytest.raises(ValueError, match="unknown filter 'lanczos'"):
        ViewSpec("x", 30, 56, filter="lanczos")
    with pytest.raises(ValueError, match="unknown fit 'zoom'"):
        ViewSpec("x", 30, 56, fit="zoom")


# The seed's action layout, restated (config.py:25-26, 126-145): 11 keys, 2 clicks, one-hot bins
X_BINS = [-1000, -500, -300, -200, -100, -60, -30, -20, -10, -4, -2, 0, 2, 4, 10, 20, 30, 60, 100]
X_BINS += [200, 300, 500, 1000]
Y_BINS = [-200, -100, -50, -20, -10, -4, -2, 0, 2, 4, 10, 20, 50, 100, 200]


def _combine(rows: list[list[float]]) -> tuple[list[int], float, float]:
    """Buttons held if pressed in any row; mouse moves summed in the seed's units."""
    held = [int(any(r[i] > 0.5 for r in rows)) for i in range(13)]
    dx = sum(X_BINS[r[13:36].index(max(r[13:36]))] for r in rows if max(r[13:36]) > 0.5)
    dy = sum(Y_BINS[r[36:51].index(max(r[36:51]))] for r in rows if max(r[36:51]) > 0.5)
    return held, dx, dy


def _nearest(v: float, bins: list[int]) -> int:
    v = min(max(v, bins[0]), bins[-1])
    return min(range(len(bins)), key=lambda i: (abs(bins[i] - v), i))


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_stride_and_action_encodings_follow_the_seeds_layout(store, stride) -> None:
    ds = open_dataset(store)
    streams = {
        enc: SegmentStream(str(store), 6, 4, stride=stride, actions=enc, obs="uint8")
        for enc in ("raw", "decoded", "indices")
    }
    episodes, starts, stops = streams["raw"].segments(3)
    batches = {enc: s.read(episodes, starts, stops) for enc, s in streams.items()}
    assert batches["decoded"]["act"].shape[-1] == batches["indices"]["act"].shape[-1] == 15
    for i, (e, start, stop) in enumerate(zip(episodes, starts, stops, strict=True)):
        name = streams["raw"].episodes[e]
        rows = read_actions(ds.layout, name).astype(float).tolist()
        frames = ds.frames(name, 0, EPISODE_FRAMES)
        for t, step in enumerate(range(int(start), int(stop))):
            if step < 0:  # left padding
                assert not batches["decoded"]["mask_padding"][i, t]
                continue
            f = step * stride  # the frame this step shows
            np.testing.assert_array_equal(
                batches["raw"]["obs"][i, t].numpy(), frames[f, :, :, ::-1].transpose(2, 0, 1)
            )
            held, dx, dy = _combine(rows[max(0, f - stride + 1) : f + 1])
            got = batches["decoded"]["act"][i, t].tolist()
            assert got == [*held, dx, dy]
            ix, iy = _nearest(dx, X_BINS), _nearest(dy, Y_BINS)
            assert batches["indices"]["act"][i, t].tolist() == [*held, ix, iy]
            raw = batches["raw"]["act"][i, t].tolist()
            if stride == 1:
                assert raw == rows[f]  # the stored row itself
            else:
                assert raw[:13] == held and raw[13 + ix] == 1 and raw[36 + iy] == 1
                assert sum(raw[13:]) == 2
    assert int(streams["raw"].lengths.max()) == -(-EPISODE_FRAMES // stride)


def _encode(store: Path, target: str, view: str, name: str, dtype: str = "float32") -> list:
    jobs = plan_encode(str(store), target, view, name, dtype=dtype, batch=7)
    results = [encode_episode(j) for j in jobs]
    if jobs:
        finish_encode(str(store), jobs[0].spec, results)
    return results


@pytest.mark.parametrize(
    ("target", "dtype"),
    [("tests.encoders:tiny", "float32"), ("tests.encoders:tiny_vae", "bfloat16")],
)
def test_latents_are_the_encoder_applied_directly(store, target, dtype) -> None:
    spec = ViewSpec("32x56", 32, 56, overshoot="clamp")
    _views(store, spec)
    assert {r.status for r in _encode(store, target, "32x56", "lat", dtype)} == {"written"}
    assert {r.status for r in _encode(store, target, "32x56", "lat", dtype)} == {"present"}
    ds = open_dataset(store)
    episode = ds.episodes[2]
    module, factory = target.split(":")
    model = getattr(encoders, factory)().eval()
    view = torch.from_numpy(_stored(store, "32x56", episode)).float() / 255 * 2 - 1
    with torch.no_grad():
        want = model(view).to(getattr(torch, dtype)).float()
    seg = SegmentStream(str(store), 5, 1, view="lat")
    batch = seg.read(np.array([seg.episodes.index(episode)]), np.array([10]), np.array([15]))
    assert batch["obs"].dtype == torch.float32 and batch["obs"].shape[2:] == want.shape[1:]
    # encoded in batches, against one pass: a CPU's kernels may round per batch size, by at
    # most one step of the stored dtype
    rtol = 2**-7 if dtype == "bfloat16" else 1e-5
    torch.testing.assert_close(batch["obs"][0], want[10:15], rtol=rtol, atol=1e-6)
    index = json.loads((store / "catalog" / "latents.json").read_text())["latents"][0]
    assert (index["module"], index["factory"], index["view"]) == (module, factory, "32x56")
    assert len(index["params_sha256"]) == 64 and index["stored_bytes"] > 0


def test_latents_of_the_full_frames_and_staleness(store) -> None:
    _encode(store, "tests.encoders:tiny", "full", "full_lat")
    ds = open_dataset(store)
    episode = ds.episodes[0]
    model = encoders.tiny().eval()
    rgb = torch.from_numpy(np.ascontiguousarray(ds.frames(episode, 0, 8)[..., ::-1]))
    with torch.no_grad():
        want = model(rgb.permute(0, 3, 1, 2).float() / 255 * 2 - 1)
    seg = SegmentStream(str(store), 8, 1, view="full_lat")
    got = seg.read(np.array([seg.episodes.index(episode)]), np.array([0]), np.array([8]))
    torch.testing.assert_close(got["obs"][0], want, rtol=1e-5, atol=1e-6)  # batched, as above
    # a redone episode: its latents were made from the old frames
    from storage.latents import latent_key

    _made_from_old_frames(store, latent_key(ds.layout, "full_lat", episode))
    with pytest.raises(ValueError, match="stale for 1 episode"):
        SegmentStream(str(store), 8, 1, view="full_lat")
    # and a run killed mid-episode: chunks without zarr.json, so invisible and made again
    (store / latent_key(ds.layout, "full_lat", ds.episodes[1]) / "zarr.json").unlink()
    status = [r.status for r in _encode(store, "tests.encoders:tiny", "full", "full_lat")]
    assert status.count("written") == 2 and status.count("present") == len(status) - 2


def test_bad_encoder_input_is_one_line(store, monkeypatch) -> None:
    import tasks.encode as encode_mod

    _views(store, ViewSpec("v", 32, 56, overshoot="clamp"))
    cases = [
        ("no_such_module:make", "v", "l1", "does not import"),
        ("tests.encoders:nothing", "v", "l1", "has no 'nothing'"),
        ("tests.encoders", "v", "l1", "is not MODULE:FACTORY"),
        ("tests.encoders:wrong_shape", "v", "l1", r"must return \(B, C, h', w'\)"),
        ("tests.encoders:not_a_module", "v", "l1", "returned str, not a torch.nn.Module"),
        ("tests.encoders:tiny", "nope", "l1", "no view 'nope'"),
        ("tests.encoders:tiny", "v", "v", "is a view's name"),
    ]
    for target, view, name, why in cases:
        with pytest.raises(EncodeError, match=why):
            plan_encode(str(store), target, view, name)
    _encode(store, "tests.encoders:tiny", "v", "taken")
    with pytest.raises(EncodeError, match="exists from another encoder"):
        plan_encode(str(store), "tests.encoders:tiny_vae", "v", "taken")
    with pytest.raises(ValueError, match=r"latent name '\.\./x' is not allowed"):
        plan_encode(str(store), "tests.encoders:tiny", "v", "../x")
    with pytest.raises(ViewClashError, match="'full' names the full frames"):
        check_view(str(store), ViewSpec("full", 30, 56))
    # an encoder with a 0-d buffer (BatchNorm) has an identity, the same on every call
    jobs = plan_encode(str(store), "tests.encoders:with_batchnorm", "v", "bn")
    assert jobs[0].spec.params_sha256 == params_sha256(encoders.with_batchnorm())
    # a factory with other weights in each process: a worker refuses what was not planned
    jobs = plan_encode(str(store), "tests.encoders:random_each_call", "v", "rnd")
    monkeypatch.setattr(encode_mod, "_LOADED", {})  # as in a fresh worker process
    r = encode_episode(jobs[0])
    assert r.status == "failed" and "other parameters than the planned one" in r.reason


def _cli(*args: str):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "flows.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_views_and_encode_run_on_dask_and_resume(store) -> None:
    p = _cli("views", str(store), "--size", "32x56", "--fit", "crop", "--filter", "area")
    assert p.returncode == 0, p.stderr
    assert "view 32x56-crop-area of 8 episodes; written 8" in p.stdout
    enc = ("encode", str(store), "--encoder", "tests.encoders:tiny", "--view", "32x56-crop-area")
    p = _cli(*enc, "--name", "tiny", "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert "latent tiny of 8 episodes; written 8" in p.stdout
    ds = open_dataset(store)
    seg = SegmentStream(str(store), 4, 2, view="tiny")
    assert seg.read(*seg.segments(0))["obs"].shape == (2, 4, 4, 8, 14)
    # an episode redone: its view and the latents made from it hold the old frames' sha256
    from storage.latents import latent_key

    _made_from_old_frames(store, view_key(ds.layout, "32x56-crop-area", ds.episodes[3]))
    _made_from_old_frames(store, latent_key(ds.layout, "tiny", ds.episodes[3]))
    p = _cli("encode", str(store), "--refresh", "--workers", "1")
    assert p.returncode == 1 and "view 32x56-crop-area is stale" in p.stderr, p.stderr
    p = _cli("views", str(store), "--refresh", "--workers", "1")
    assert "view 32x56-crop-area of 8 episodes; written 1, already there 7" in p.stdout, p.stdout
    p = _cli("encode", str(store), "--refresh", "--workers", "1")
    assert "latent tiny of 8 episodes; written 1, already there 7" in p.stdout, p.stdout
    for args, why in [
        (("views", str(store), "--filter", "lanczos"), "unknown filter 'lanczos'"),
        (("views", str(store), "--size", "0x56"), "height and width must be 1..4096"),
        (("encode", str(store), "--view", "full"), "--encoder, --view and --name are needed"),
        (("encode", str(store), "--refresh", "--device", "tpu"), "device 'tpu': cpu or cuda"),
    ]:
        p = _cli(*args)
        assert p.returncode == 2 and why in p.stderr, p.stderr
        assert len([x for x in p.stderr.splitlines() if "error" in x]) == 1
    assert len(ds.episodes) == 8


def test_full_frames_for_encoding_through_the_gpu_decode_path(store, monkeypatch) -> None:
    """`--view full --device cuda` frames come through the GPU decode path, as on the CPU.

    CPU zstd stands in for nvCOMP (no GPU here); packing, the predictor and layout are its own.
    """
    import itertools

    import imagecodecs

    import training.device_decode as dd
    from tasks.encode import frame_source

    def cpu_nvcomp(data, offsets, size):
        raw = data.numpy()
        return torch.stack(
            [
                torch.from_numpy(
                    np.frombuffer(bytearray(imagecodecs.zstd_decode(raw[a:b])), np.uint8)
                )
                for a, b in itertools.pairwise(offsets)
            ]
        )

    monkeypatch.setattr(dd, "_nvcomp_decompress", cpu_nvcomp)
    monkeypatch.setattr(dd, "check_device_decode", lambda: None)
    jobs = plan_encode(str(store), "tests.encoders:tiny", "full", "g")
    ds = open_dataset(store)
    for job in jobs[:2]:
        on_gpu_path = frame_source(ds, job, gpu_decode=True)
        on_cpu = frame_source(ds, job, gpu_decode=False)
        for lo, hi in [(0, 7), (5, 33), (40, 60)]:  # within, across and at the end of chunks
            torch.testing.assert_close(on_gpu_path(lo, hi), on_cpu(lo, hi), rtol=0, atol=0)
    rgb = ds.frames(jobs[0].episode, 3, 4)[0, :, :, ::-1].astype(np.float32)
    want = torch.from_numpy(rgb.transpose(2, 0, 1).copy()) / 255 * 2 - 1
    got = frame_source(ds, jobs[0], gpu_decode=False)(3, 4)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # RGB, scaled to [-1, 1]


def test_a_format_1_view_is_read_as_diamonds_recipe(store) -> None:
    from storage.sidearrays import view_current

    ds = open_dataset(store)
    e = ds.episodes[0]
    make_view(ViewJob(str(store), e, ViewSpec("30x56", 30, 56)))  # DIAMOND's recipe
    meta = store / view_key(ds.layout, "30x56", e) / "zarr.json"
    body = json.loads(meta.read_text())
    for k in ("fit", "filter", "overshoot"):  # what a format-1 array held: size and method
        del body["attributes"][k]
    body["attributes"]["format_version"] = 1
    meta.write_text(json.dumps(body))
    sha = ds.sha256(e)
    assert view_current(ds.layout, "30x56", e, sha, ViewSpec("-", 30, 56).recipe)
    clamp = ViewSpec("-", 30, 56, overshoot="clamp").recipe
    assert not view_current(ds.layout, "30x56", e, sha, clamp)
