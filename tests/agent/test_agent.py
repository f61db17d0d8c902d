"""The agent: verified pulls, the replayed dry run, and decoding as the seed's agent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from csdm_agent.artifact import Artifact, VerificationError
from csdm_agent.capture import Crop, Preprocess, ReplayFrames, Resizer
from csdm_agent.cli import main as agent_main
from csdm_agent.control import Controller, RecordingSink
from csdm_agent.decode import Decoder
from csdm_agent.loop import run
from csdm_agent.policy import Policy
from csdm_agent.pull import pull

from storage.dataset import open_dataset
from storage.registry import open_registry
from tests.agent.seed_agent_reference import SeedDecoder
from training.checkpoint import load_checkpoint
from training.export import policy_from_checkpoint
from training.model import probabilities


def test_pull_verifies_and_keeps_versions_side_by_side(registered: dict, tmp_path: Path) -> None:
    reg = open_registry(registered["registry"], "cs")
    if reg.index()["versions"][-1]["version"] < 2:  # a later step of the same run is v2
        from dataclasses import replace

        from training.export import export
        from training.train import TrainConfig, train

        run = tmp_path / "run"
        shutil.copytree(registered["run"], run)
        cfg = TrainConfig.from_dict(load_checkpoint(run).config)
        train(registered["data"], run, replace(cfg, steps=cfg.steps + 1), resume=True, quiet=True)
        export(run, tmp_path / "export")
        assert reg.register(tmp_path / "export").version == 2
        assert reg.register(registered["export"]).existing  # the same model is never v3
    a = pull(str(registered["registry"]), "cs", tmp_path, alias="production")
    b = pull(str(registered["registry"]), "cs", tmp_path)
    assert (a.folder.name, b.folder.name) == ("v1", "v2")
    assert sorted(p.name for p in (tmp_path / "cs").iterdir()) == ["v1", "v2"]
    assert a.descriptor["action_space"]["fps"] == 16
    # a pulled copy altered afterwards is refused when opened
    (a.folder / "policy.onnx").write_bytes(b"x")
    with pytest.raises(VerificationError, match=r"v1/policy\.onnx: sha256 does not match"):
        Artifact.open(a.folder)


def test_pull_refuses_a_tampered_registry(registered: dict, tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    shutil.copytree(registered["registry"], reg)
    for f in reg.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    model = reg / "cs" / "v1" / "policy.onnx"
    model.write_bytes(model.read_bytes()[:-10])  # truncated
    with pytest.raises(VerificationError, match="sha256 does not match") as err:
        pull(str(reg), "cs", tmp_path / "dest", version=1)
    assert f"{reg}/cs/v1/policy.onnx" in str(err.value) and ".pull-" not in str(err.value)
    assert not (tmp_path / "dest" / "cs" / "v1").exists()  # nothing half-pulled is visible
    assert not list((tmp_path / "dest" / "cs").iterdir())
    # a manifest rewritten to match the altered file no longer matches the index
    manifest = reg / "cs" / "v1" / "MANIFEST.json"
    m = json.loads(manifest.read_text())
    m["files"]["policy.onnx"]["size"] -= 10
    manifest.write_text(json.dumps(m))
    with pytest.raises(VerificationError, match="does not match the registry index"):
        pull(str(reg), "cs", tmp_path / "dest", version=1)
    assert (
        agent_main(
            [
                "pull",
                "--registry",
                str(reg),
                "--name",
                "cs",
                "--version",
                "1",
                "--dest",
                str(tmp_path / "dest"),
            ]
        )
        == 2
    )


def _hook_step(policy: Policy, at: int, before=None, after=None) -> None:
    """Wrap `policy.step`: `before()` runs on call number `at`; `after(out)` on every output."""
    real, calls = policy.step, []

    def step(frame):
        calls.append(1)
        if before and len(calls) == at:
            before()
        out = real(frame)
        if after:
            after(out)
        return out

    policy.step = step


def _replay(processed: Path, tmp_path: Path, n: int = 40) -> tuple[Path, np.ndarray]:
    ds = open_dataset(processed)
    frames = ds.frames(ds.episodes[3], 0, n)
    np.save(tmp_path / "episode.npy", frames)
    return tmp_path / "episode.npy", frames


def test_dry_run_plays_at_16_fps_and_releases_everything(
    registered: dict, processed: Path, tmp_path: Path
) -> None:
    path, _ = _replay(processed, tmp_path, 32)
    art = Artifact.open(registered["export"])
    sink = RecordingSink()
    now = [100.0]  # a clock that only sleeping advances: steps take no time on it

    def sleep(d: float) -> None:
        now[0] += max(d, 0.0)

    s = run(
        Policy(art),
        Decoder.from_descriptor(art.descriptor, seed=0),
        ReplayFrames(path),
        Controller(sink),
        fps=16,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert len(s.actions) == 32 and s.stopped_by == "end of replay" and s.dropped == 0
    assert np.allclose(np.diff(s.starts), 1 / 16, rtol=0, atol=1e-9)
    held: set[tuple[str, str]] = set()
    for _, kind, name, arg in sink.events:
        if kind in ("key", "button"):
            (held.add if arg else held.discard)((kind, name))
    assert held == set()  # every key and button released at the end
    assert any(kind == "key" and arg for _, kind, _, arg in sink.events)
    moves = [arg for _, kind, _, arg in sink.events if kind == "move"]
    assert all(abs(dx) <= 150 for dx, _ in moves)  # +-300 clip, sent in two halves


def test_keys_are_released_when_the_policy_fails(
    registered: dict, processed: Path, tmp_path: Path
) -> None:
    path, _ = _replay(processed, tmp_path, 10)
    art = Artifact.open(registered["export"])
    policy = Policy(art)

    def hold_wasd(out: dict) -> None:
        out["keys"][:4] = 1.0

    def fail() -> None:
        raise RuntimeError("device lost")

    _hook_step(policy, 4, before=fail, after=hold_wasd)
    sink = RecordingSink()
    with pytest.raises(RuntimeError, match="device lost"):
        run(
            policy,
            Decoder.from_descriptor(art.descriptor, seed=1),
            ReplayFrames(path),
            Controller(sink),
            fps=16,
            pace=False,
        )
    last = {}
    for _, kind, name, arg in sink.events:
        if kind == "key":
            last[name] = arg
    assert set(last) >= {"w", "a", "s", "d"} and not any(last.values())


def test_decoding_matches_the_seed_and_the_training_side(
    registered: dict, processed: Path, tmp_path: Path
) -> None:
    path, frames = _replay(processed, tmp_path, 40)
    art = Artifact.open(registered["export"])
    d = art.descriptor
    # the agent's own run: ONNX policy, seeded decoder
    s = run(
        Policy(art),
        Decoder.from_descriptor(d, seed=3),
        ReplayFrames(path),
        Controller(RecordingSink()),
        fps=16,
        pace=False,
    )
    # the training side's outputs on the same frames, decoded by the seed's agent logic
    model = policy_from_checkpoint(load_checkpoint(registered["run"]))
    with torch.no_grad():
        probs = probabilities(model(torch.from_numpy(frames)[None])[0][0]).numpy()
    seed = SeedDecoder(
        np.random.default_rng(3),
        d["action_space"]["mouse_x_bins"],
        d["action_space"]["mouse_y_bins"],
    )
    for a, y in zip(s.actions, probs, strict=True):
        keys, lclick, rclick, mx, my, reset = seed.step(y)
        assert (set(a.keys), a.lclick, a.rclick, a.mouse_x, a.mouse_y) == (
            keys,
            lclick,
            rclick,
            mx,
            my,
        )
        if reset:
            break  # the recurrent state diverges from the sequence model after a reset


def test_idle_policy_paths_match_the_seed() -> None:
    rng = np.random.default_rng(5)
    from training.actions import DEFAULT

    dec = Decoder(DEFAULT.keys, DEFAULT.mouse_x_bins, DEFAULT.mouse_y_bins, seed=9)
    seed = SeedDecoder(np.random.default_rng(9), DEFAULT.mouse_x_bins, DEFAULT.mouse_y_bins)
    for t in range(300):  # an idle policy: exercises the >8 and >96 inaction branches
        y = np.concatenate(
            [
                rng.random(11) * 0.4,
                rng.random(2),
                np.eye(23)[11] * 0.5 + 0.5 / 23,
                np.eye(15)[7] * 0.5 + 0.5 / 15,
                [0.0],
            ]
        )
        y[13:36] /= y[13:36].sum()
        y[36:51] /= y[36:51].sum()
        out = {"keys": y[:11], "clicks": y[11:13], "mouse_x": y[13:36], "mouse_y": y[36:51]}
        a = dec.decode(out)
        keys, lclick, rclick, mx, my, reset = seed.step(y)
        assert (set(a.keys), a.lclick, a.rclick, a.mouse_x, a.mouse_y, a.reset_state) == (
            keys,
            lclick,
            rclick,
            mx,
            my,
            reset,
        ), t
    assert dec.inaction == 300  # the idle branches (> 8, > 96) were all exercised


def test_resize_matches_a_per_pixel_bilinear() -> None:
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (13, 21, 4), dtype=np.uint8)
    got = Resizer((13, 21), (5, 8))(img)
    want = np.zeros((5, 8, 3))
    for i in range(5):
        for j in range(8):
            y = min(max((i + 0.5) * 13 / 5 - 0.5, 0), 12)
            x = min(max((j + 0.5) * 21 / 8 - 0.5, 0), 20)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, 12), min(x0 + 1, 20)
            fy, fx = y - y0, x - x0
            p = img[..., :3].astype(float)
            want[i, j] = (1 - fy) * ((1 - fx) * p[y0, x0] + fx * p[y0, x1]) + fy * (
                (1 - fx) * p[y1, x0] + fx * p[y1, x1]
            )
    assert np.abs(got.astype(float) - want).max() <= 0.51
    pre = Preprocess(Crop(1024, 768, 100, 135, 135), (150, 280))
    assert pre(np.zeros((768, 1024, 4), np.uint8)).shape == (150, 280, 3)


def test_pull_from_a_hub_model_repo(hub, registered: dict, tmp_path: Path) -> None:
    from storage.registry import open_registry

    open_registry("hf://team/policies", "cs").register(registered["export"], alias="production")
    art = pull("hf://team/policies", "cs", tmp_path, alias="production")
    assert art.folder == tmp_path / "cs" / "v1"
    assert (art.folder / "policy.onnx").read_bytes() == (
        registered["export"] / "policy.onnx"
    ).read_bytes()
    sha = hub.branches["team/policies"]["cs-v1"]
    hub.repos["team/policies"][sha]["cs/v1/policy.onnx"] = b"tampered"
    with pytest.raises(VerificationError, match="sha256 does not match"):
        pull("hf://team/policies", "cs", tmp_path / "again", version=1)


def test_overruns_and_dropped_frames_are_counted(
    registered: dict, processed: Path, tmp_path: Path
) -> None:
    path, _ = _replay(processed, tmp_path, 12)
    art = Artifact.open(registered["export"])
    policy = Policy(art)
    now = [50.0]  # an injected clock: steps take no time but step 4's 0.16 s (2.56 slots)

    def sleep(dt: float) -> None:
        now[0] += dt

    _hook_step(policy, 4, before=lambda: sleep(0.16))
    s = run(
        policy,
        Decoder.from_descriptor(art.descriptor, seed=2),
        ReplayFrames(path),
        Controller(RecordingSink()),
        fps=16,
        clock=lambda: now[0],
        sleep=sleep,
    )
    # step 4 overruns its slot; the slot after it passes with no step; the grid then resumes
    assert (s.overruns, s.dropped) == (1, 1)
    assert len(s.actions) == 12 and abs(np.diff(s.starts)[-5:].mean() - 1 / 16) < 1e-9
    # step 5 starts as soon as step 4 ends (slot 3 + 2.56), step 6 on the grid (slot 3 + 3)
    assert s.starts[4] - s.starts[3] == pytest.approx(0.16, abs=1e-9)
    assert s.starts[5] - s.starts[3] == pytest.approx(3 / 16, abs=1e-9)


def test_sendinput_structures_have_the_windows_layout() -> None:
    import ctypes

    from csdm_agent.control import INPUT, KEYBDINPUT, MOUSEINPUT

    if ctypes.sizeof(ctypes.c_void_p) == 8:  # 64-bit, as the agent ships
        assert (ctypes.sizeof(MOUSEINPUT), ctypes.sizeof(KEYBDINPUT)) == (32, 24)
        assert ctypes.sizeof(INPUT) == 40 and INPUT.u.offset == 8


@pytest.mark.parametrize("kind", ["missing", "tar", "wrong-shape", "not-hdf5"])
def test_bad_replays_are_one_line(registered: dict, tmp_path: Path, kind: str, caplog) -> None:
    import h5py

    model = tmp_path / "m"
    pull(str(registered["registry"]), "cs", model, version=1)
    path = tmp_path / {"tar": "ep.tar", "wrong-shape": "ep.hdf5", "not-hdf5": "ep.hdf5"}.get(
        kind, "nope.hdf5"
    )
    if kind == "tar":
        import tarfile

        with tarfile.open(path, "w") as t:
            t.add(__file__, arcname="x.py")
    elif kind == "wrong-shape":
        with h5py.File(path, "w") as h5:
            h5["frame_0_x"] = np.zeros((100, 200, 3), np.uint8)
    elif kind == "not-hdf5":
        path.write_text("hello")
    code = agent_main(["run", "--model", str(model / "cs/v1"), "--dry-run", "--replay", str(path)])
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1 and errors[0].exc_info is None
    err = errors[0].getMessage()
    assert str(path) in err
    says = {
        "missing": "no such file",
        "tar": "extract its hdf5_",
        "wrong-shape": "(100, 200, 3)",
        "not-hdf5": "not an HDF5 episode",
    }[kind]
    assert says in err


def test_the_clear_decals_key_is_tapped_every_5_seconds(
    registered: dict, processed: Path, tmp_path: Path
) -> None:
    path, _ = _replay(processed, tmp_path, 60)
    art = Artifact.open(registered["export"])
    taps = {}
    for every in (5.0, 1.0, 0.0):
        sink = RecordingSink()
        s = run(
            Policy(art),
            Decoder.from_descriptor(art.descriptor, seed=0),
            ReplayFrames(path),
            Controller(sink),
            fps=16,
            pace=False,
            clear_decals=("n", every),
        )
        steps = [
            i
            for i, (_, kind, name, down) in enumerate(sink.events)
            if kind == "key" and name == "n" and down
        ]
        taps[every] = (len(steps), s.decals_cleared)
        downs = [e for e in sink.events if e[1:3] == ("key", "n")]
        assert [d[3] for d in downs] == [True, False] * len(steps)  # each tap released at once
    # 60 steps at 16 fps: every 80 steps never comes; every 16 steps at 16, 32 and 48
    assert taps == {5.0: (0, 0), 1.0: (3, 3), 0.0: (0, 0)}


def test_every_decode_switch_is_on_the_command_line(
    registered: dict, processed: Path, tmp_path: Path
) -> None:
    import dataclasses

    from csdm_agent.cli import DECODE_HELP
    from csdm_agent.decode import DecodeOptions

    assert set(DECODE_HELP) == {f.name for f in dataclasses.fields(DecodeOptions)}
    path, _ = _replay(processed, tmp_path, 40)
    art = pull(registered["registry"], "cs", tmp_path / "m")
    summary = tmp_path / "s.json"
    code = agent_main(
        [
            "run",
            "--model",
            str(art.folder),
            "--dry-run",
            "--replay",
            str(path),
            "--summary",
            str(summary),
            "--no-wasd",
            "--no-jump",
            "--rclick",
            "--jump-boost",
            "5",
            "--reset-chance",
            "0",
            "--mouse-x-clip",
            "100",
            "--clear-decals-every",
            "0.5",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    s = json.loads(summary.read_text())
    assert s["decode"] == {
        **dataclasses.asdict(DecodeOptions()),
        "wasd": False,
        "jump": False,
        "rclick": True,
        "jump_boost": 5.0,
        "reset_chance": 0.0,
        "mouse_x_clip": 100.0,
    }
    assert s["decals_cleared"] == 5  # every 8 steps of 40
    held = {k for a in s["actions"] for k in a["keys"]}
    assert not held & {"w", "a", "s", "d", "space"}
    assert all(abs(a["mouse_x"]) <= 100 for a in s["actions"])


@pytest.mark.parametrize("edit", ["state", "input", "width", "outputs"])
def test_a_rehashed_descriptor_that_lies_about_the_graph_is_refused(
    registered: dict, tmp_path: Path, edit: str, caplog
) -> None:
    from storage.policy import DescriptorError
    from training.export import OnnxSteps

    export = tmp_path / "export"
    shutil.copytree(registered["export"], export)
    d = json.loads((export / "policy.json").read_text())
    if edit == "state":
        d["state"][0]["shape"][-1] += 1
    elif edit == "input":
        d["input"]["shape"] = [1, 100, 100, 3]
    elif edit == "width":
        d["outputs"][0]["width"] = 12
    else:
        d["outputs"] = d["outputs"][::-1]
    (export / "policy.json").write_text(json.dumps(d))
    # registered again, consistently: the manifest covers the edited descriptor, pull verifies it
    open_registry(tmp_path / "reg", "cs").register(export)
    art = pull(str(tmp_path / "reg"), "cs", tmp_path / "models", version=1)
    says = {
        "state": "in the model, tensor(float)",
        "input": "[1, 100, 100, 3] in the descriptor",
        "width": "[None, 12] in the descriptor",
        "outputs": "the model's outputs are",
    }[edit]
    with pytest.raises(VerificationError, match="does not describe it") as err:
        Policy(art)
    assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DescriptorError, match="does not describe it"):
        OnnxSteps(art.folder)
    assert agent_main(["run", "--model", str(art.folder), "--dry-run", "--replay", "x.hdf5"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and says in errors[0]
