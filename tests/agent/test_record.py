"""`csdm-agent record` -> `csdm process`: the catalog holds exactly the inputs that were played.

Windows-only calls are injected: a scripted input source and a synthetic screen. The game's
state arrives as real HTTP posts to the real GSI listener.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import signal
import struct
import threading
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest
from csdm_agent import record as rec
from csdm_agent.capture import Crop, Preprocess
from csdm_agent.cli import main as agent_main
from csdm_agent.gsi import GsiListener
from csdm_agent.record import EpisodeWriter, Inputs, record

from storage import action_space
from storage.dataset import open_dataset
from storage.fs import Root
from tasks.params import ProcessParams
from tasks.process_source import process_source
from tasks.synth import reference as ref
from training.actions import Crop as PipelineCrop

TOKEN = "rec-token"
ME = "76561190000000001"
SENSITIVITY = 3.75  # counts x 1.5: even counts land on ties between bins


def _post(port: int, body: dict) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}", data=json.dumps(body).encode())
    urllib.request.urlopen(req, timeout=10).read()


def _game(
    token: str = TOKEN,
    who: str = ME,
    health: int = 100,
    kills: int = 0,
    deaths: int = 0,
    weapon: str = "ak47",
) -> dict:
    knife = weapon == "knife"
    return {
        "provider": {"name": "Counter-Strike: Global Offensive", "steamid": ME},
        "player": {
            "steamid": who,
            "team": "CT",
            "state": {"health": health, "armor": 100},
            "weapons": {
                "weapon_0": {
                    "name": "weapon_knife",
                    "type": "Knife",
                    "state": "active" if knife else "holstered",
                },
                "weapon_1": {
                    "name": "weapon_ak47",
                    "type": "Rifle",
                    "ammo_clip": 27,
                    "state": "holstered" if knife else "active",
                },
            },
            "match_stats": {"kills": kills, "assists": 0, "deaths": deaths},
        },
        "auth": {"token": token},
    }


# step -> what the game posts just before that step's frame (and before recording starts)
POSTS = {
    9: [_game(kills=1)],
    12: [_game(token="wrong", kills=5)],  # ignored: not this recording's token
    20: [_game(health=0, kills=1, deaths=1)],
    21: [_game(who="76561190000000999", health=80)],  # watching the killer: still dead
    27: [_game(kills=1, deaths=1, weapon="knife")],  # respawned with the knife out
    40: [_game(kills=2, deaths=1, weapon="knife")],
}
DEAD = range(20, 27)  # frames whose own health is 0
KILLS, DEATHS = {9, 40}, {20}


class Screen:
    """The game's client area (BGRA): margins one colour, the cut region a colour per frame."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.n, self.i = port, n, 0
        self.pre = Preprocess(Crop(**rec.SEED_CROP), rec.FRAME_SHAPE[:2])

    @staticmethod
    def colour(i: int) -> tuple[int, int, int]:
        return (i * 7) % 256, (i * 13 + 50) % 256, 255 - i % 256

    def grab(self):
        if self.i >= self.n:
            return None
        for body in POSTS.get(self.i, []):
            _post(self.port, body)
        c = rec.SEED_CROP
        client = np.full((c["client_height"], c["client_width"], 4), 255, np.uint8)
        client[c["top"] : -c["bottom"], c["sides"] : -c["sides"], :3] = self.colour(self.i)
        self.i += 1
        return self.pre(client)


class Script:
    """Seeded inputs; read 0 is recording's reset, read k+1 the inputs of step k."""

    def __init__(self, n: int, stop_after: int | None = None, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.steps = []
        for _ in range(n):
            keys = frozenset(str(k) for k in rng.choice(action_space.KEYS, rng.integers(0, 5)))
            dx = int(rng.choice([0, 2, -2, 7, -40, 150, 900]) * rng.integers(1, 3))
            dy = int(rng.choice([0, 1, -3, 14, -70, 300]))
            self.steps.append(
                Inputs(keys, bool(rng.random() < 0.3), bool(rng.random() < 0.1), dx, dy)
            )
        self.reads, self.stop_after, self.closed = 0, stop_after, False

    def read(self) -> Inputs:
        self.reads += 1
        return Inputs() if self.reads == 1 else self.steps[self.reads - 2]

    def stop(self) -> bool:
        return self.stop_after is not None and self.reads - 1 >= self.stop_after

    def close(self) -> None:
        self.closed = True


def _play(out: Path, script: Script, screen: type[Screen] = Screen, stub: str = "x_", **kw):
    """Record `script` in 24-frame episodes, once the game has posted its first state."""
    with GsiListener("127.0.0.1", 0, TOKEN) as gsi:
        _post(gsi.port, _game())  # recording waits for this
        return record(
            screen(gsi.port, len(script.steps)),
            script,
            gsi.seed_state,
            EpisodeWriter(out, stub),
            episode_frames=24,
            pace=False,
            **kw,
        )


def _record(out: Path, n_steps: int, stop_after: int, keep_partial: bool, seed: int):
    script = Script(n_steps, stop_after, seed)
    summary = _play(
        out,
        script,
        stub="dm_mine_",
        sensitivity=SENSITIVITY,
        keep_partial=keep_partial,
        stop=script.stop,
    )
    assert script.closed
    return summary, script.steps[:stop_after]


def test_recording_round_trips_through_process(tmp_path: Path) -> None:
    src = tmp_path / "recordings"
    first, played = _record(src, 80, stop_after=60, keep_partial=False, seed=1)
    assert first.stopped_by == "stop key" and first.discarded == 12 and first.frames == 48
    assert sorted(p.name for p in src.rglob("*") if p.is_file()) == [
        "currvarsv2_dm_mine_1_to_1.npy",
        "currvarsv2_dm_mine_2_to_2.npy",
        "hdf5_dm_mine_1.hdf5",
        "hdf5_dm_mine_2.hdf5",
    ]
    second, played2 = _record(src, 40, stop_after=30, keep_partial=True, seed=2)
    assert [Path(e).name for e in second.episodes] == ["hdf5_dm_mine_3.hdf5", "hdf5_dm_mine_4.hdf5"]
    assert second.discarded == 0 and second.frames == 30
    with h5py.File(src / "hdf5_dm_mine_4.hdf5") as h5:  # the partial episode, whole
        assert len([k for k in h5 if k.endswith("_x")]) == 6

    out = tmp_path / "out"
    summary, _ = process_source(Root(str(src)), Root(str(out)), ProcessParams(test_fraction=0))
    assert (summary.stored, summary.failed, summary.kept) == (4, 0, 3), summary
    ds = open_dataset(out)
    cat = ds.catalog.to_table().to_pandas().sort_values(["file_num", "frame"])
    expect = [(1, played[:24]), (2, played[24:48]), (3, played2[:24]), (4, played2[24:30])]
    agree = {}  # episode -> share of frames whose inferred keys equal the recorded ones
    for num, steps in expect:
        rows = cat[cat.file_num == num]
        assert len(rows) == len(steps)
        for (i, r), s in zip(enumerate(rows.itertuples()), steps, strict=True):
            step = (0 if num in (1, 3) else 24) + i  # the step of the recording
            for k in action_space.KEYS:
                assert getattr(r, f"key_{k}") == (k in s.keys), (num, i, k)
            assert (r.lclick, r.rclick) == (s.lclick, s.rclick), (num, i)
            assert r.mouse_x == ref.nearest(s.dx * SENSITIVITY / 2.5, ref.MOUSE_X), (num, i)
            assert r.mouse_y == ref.nearest(s.dy * SENSITIVITY / 2.5, ref.MOUSE_Y), (num, i)
            assert (r.kill, r.death) == (step in KILLS, step in DEATHS), (num, i)
            assert r.health == (0 if step in DEAD else 100), (num, i)
            processed = i > 0 and step not in DEAD and step - 1 not in DEAD
            assert r.infer_processed == processed, (num, i)
            if processed:  # the clean labels, untouched by inference
                assert sorted(r.infer_keys) == sorted(s.keys), (num, i)
                assert r.infer_mouse_x == s.dx * SENSITIVITY / 2.5, (num, i)
            else:  # the seed labels frames it skips with nothing
                assert list(r.infer_keys) == [] and r.infer_mouse_x == 0, (num, i)
            agree.setdefault(f"dm_mine_{num}", []).append(processed or not s.keys)
        frames = ds.frames(f"dm_mine_{num}")
        start = 0 if num in (1, 3) else 24
        want = np.array([Screen.colour(start + i) for i in range(len(steps))], np.uint8)
        np.testing.assert_array_equal(frames, np.broadcast_to(want[:, None, None], frames.shape))
    files = ds.files.to_pandas().set_index("episode")
    # GSI health judges death: frames 20-23 of episode 1; 25, 26 of episode 2 (24 is its first)
    assert files.loc["dm_mine_1", "dead_skipped"] == 4 and files.loc["dm_mine_1", "skipped"] == 0
    assert files.loc["dm_mine_2", "dead_skipped"] == 2 and files.loc["dm_mine_2", "skipped"] == 1
    # six frames, two dead: over the seed's limit of 200 per 1000 frames
    assert not files.loc["dm_mine_4", "keep"]
    assert files.loc["dm_mine_4", "reject_reason"] == "dead_skipped=2>1.2"
    for c in ("ram_gsi_disagree_hp", "obs_count", "mouse_static", "vel_static"):
        assert files[c].isna().all(), c  # memory was never read: unknown, not zero
    for ep, same in agree.items():
        assert files.loc[ep, "agree_keys"] == pytest.approx(np.mean(same)), ep


def test_stop_before_the_game_speaks_writes_nothing(tmp_path: Path) -> None:
    script = Script(5, stop_after=0)
    with GsiListener("127.0.0.1", 0, TOKEN) as gsi:
        s = record(
            Screen(gsi.port, 0),
            script,
            gsi.seed_state,
            EpisodeWriter(tmp_path, "x_"),
            stop=lambda: True,
            pace=False,
        )
    assert s.episodes == [] and "first GSI post" in s.stopped_by
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_failed_write_stops_and_leaves_no_half_episode(tmp_path: Path, monkeypatch) -> None:
    release, failed = threading.Event(), threading.Event()

    def full(*a, **k):
        assert release.wait(10)
        raise OSError(28, "No space left on device")

    class Pool(rec.ThreadPoolExecutor):  # says when a write's future holds its outcome
        def submit(self, *a, **k):
            fut = super().submit(*a, **k)
            fut.add_done_callback(lambda _: failed.set())
            return fut

    class SlowScreen(Screen):  # the first write fails while step 24 is grabbed
        def grab(self):
            if self.i == 24:
                release.set()
                assert failed.wait(10)
            return super().grab()

    monkeypatch.setattr(h5py, "File", full)
    monkeypatch.setattr(rec, "ThreadPoolExecutor", Pool)
    script = Script(100)
    s = _play(tmp_path, script, SlowScreen)
    assert s.stopped_by == "an episode could not be written" and script.reads == 26
    assert s.episodes == [] and len(s.failures) == 1 and s.discarded == 1
    assert "hdf5_x_1.hdf5: not written (No space left on device)" in s.failures[0]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_the_grid_keeps_16_fps_and_counts_dropped_slots(tmp_path: Path) -> None:
    """Injected clock: grabs at slot starts, reads at slot ends; a slow grab drops slots."""
    now = [100.0]
    grabs, reads = [], []

    class Clocked(Script):
        def read(self):
            reads.append(now[0])
            return super().read()

    class SlowGrab:
        i = 0

        def grab(self):
            grabs.append(now[0])
            self.i += 1
            now[0] += 0.2 if self.i == 4 else 0.001  # the fourth grab takes 200 ms
            return np.zeros(rec.FRAME_SHAPE, np.uint8) if self.i <= 8 else None

    def sleep(dt: float) -> None:
        now[0] += dt

    game = {
        "gsi_team": "T",
        "gsi_health": 100,
        "gsi_kills": 0,
        "gsi_deaths": 0,
        "found_active": False,
    }
    script = Clocked(8)
    s = record(
        SlowGrab(),
        script,
        lambda: game,
        EpisodeWriter(tmp_path, "x_"),
        episode_frames=8,
        clock=lambda: now[0],
        sleep=sleep,
    )
    p = 1 / 16
    assert grabs[:4] == pytest.approx([100 + k * p for k in range(4)], abs=1e-6)
    assert reads[1:4] == pytest.approx([100 + k * p for k in range(1, 4)], abs=1e-6)
    # the fourth grab (slot 3) ends at 100.3875, inside slot 6: slots 4 and 5 are lost; the
    # step reads at once, the next grab follows it, and the grid resumes at slot 7
    assert s.dropped == 2 and s.frames == 8
    assert reads[4] == pytest.approx(100.3875, abs=1e-6)
    assert grabs[4] == pytest.approx(100.3875, abs=1e-6)
    assert grabs[5:8] == pytest.approx([100 + k * p for k in range(7, 10)], abs=1e-6)


def test_raw_input_layout_is_windows_64_bit() -> None:
    """RAWINPUTHEADER (24 bytes) then RAWMOUSE: lLastX at 12, lLastY at 16, per winuser.h."""
    from csdm_agent.inputs import RAWINPUTHEADER, RAWMOUSE, mouse_counts

    assert (ctypes.sizeof(RAWINPUTHEADER), ctypes.sizeof(RAWMOUSE)) == (24, 24)
    head = struct.pack("<IIQQ", 0, 48, 0xABC, 0)  # dwType RIM_TYPEMOUSE, dwSize, device, wParam
    move = struct.pack("<HHIIiiI", 0, 0, 0, 0, -7, 12, 0)
    assert mouse_counts(head + move) == (-7, 12)
    absolute = struct.pack("<HHIIiiI", 1, 0, 0, 0, 30000, 20000, 0)  # a tablet: positions
    assert mouse_counts(head + absolute) is None
    keyboard = struct.pack("<IIQQ", 1, 48, 0, 0)
    assert mouse_counts(keyboard + move) is None and mouse_counts(head) is None


def test_episode_numbers_continue_and_stale_parts_go(tmp_path: Path) -> None:
    (tmp_path / "dataset_metadata").mkdir()
    (tmp_path / "hdf5_dm_mine_7.hdf5").write_bytes(b"")
    (tmp_path / "dataset_metadata" / "currvarsv2_dm_mine_9_to_9.npy").write_bytes(b"")
    (tmp_path / "hdf5_dm_mine_10.hdf5.part").write_bytes(b"half")
    other = tmp_path / "hdf5_dm_mine_x_1.hdf5.part"  # stub dm_mine_x_'s: not ours to remove
    other.write_bytes(b"")
    w = EpisodeWriter(tmp_path, "dm_mine_")  # metadata 9 alone: its number is not reused
    assert w.next == 10 and other.exists()
    assert not (tmp_path / "hdf5_dm_mine_10.hdf5.part").exists()
    with pytest.raises(ValueError, match="ending in '_'"):
        EpisodeWriter(tmp_path, "dm_mine")


def test_mouse_units_and_the_seed_action_space() -> None:
    """Counts x sensitivity / 2.5 are the seed's units; the agent's copy of the space is exact."""
    assert rec.KEYS == action_space.KEYS
    np.testing.assert_array_equal(rec.MOUSE_X_BINS, action_space.MOUSE_X_BINS)
    np.testing.assert_array_equal(rec.MOUSE_Y_BINS, action_space.MOUSE_Y_BINS)
    assert (rec.FPS, rec.FRAME_SHAPE) == (action_space.FPS, action_space.FRAME_SHAPE)
    assert dataclasses.asdict(PipelineCrop()) == rec.SEED_CROP
    # at sensitivity 2.5 one count turns the view 2.5 x m_yaw 0.022 degrees: the seed's unit
    assert np.deg2rad(rec.SEED_SENSITIVITY * 0.022) == pytest.approx(0.00096, rel=1e-3)


def test_record_command_checks_before_it_starts(tmp_path: Path, caplog) -> None:
    assert (
        agent_main(["record", "--out", str(tmp_path), "--gsi-token", "t", "--stub", "bad stub"])
        == 2
    )
    assert "--stub 'bad stub': use letters" in caplog.text
    assert (
        agent_main(["record", "--out", str(tmp_path), "--gsi-token", "t", "--sensitivity", "0"])
        == 2
    )
    with pytest.raises(SystemExit, match="needs Windows"):
        agent_main(["record", "--out", str(tmp_path), "--gsi-token", "t"])


def test_ctrl_c_stops_between_steps_and_keeps_whole_episodes(tmp_path: Path) -> None:
    """SIGINT becomes a flag: the step in progress completes, no KeyboardInterrupt escapes."""
    before = signal.getsignal(signal.SIGINT)

    class Interrupting(Screen):
        def grab(self):
            if self.i == 30:
                os.kill(os.getpid(), signal.SIGINT)
            return super().grab()

    script = Script(100)
    s = _play(tmp_path, script, Interrupting)
    assert s.stopped_by == "Ctrl+C" and script.reads == 32
    assert [Path(e).name for e in s.episodes] == ["hdf5_x_1.hdf5"] and s.discarded == 7
    assert signal.getsignal(signal.SIGINT) is before


def test_episode_files_are_flushed_through_writable_handles(tmp_path: Path, monkeypatch) -> None:
    """Windows' fsync (FlushFileBuffers) refuses a read-only handle: every flush must write."""
    modes = []
    real = os.fsync

    def checked(fd: int) -> None:
        modes.append(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE)
        real(fd)

    monkeypatch.setattr(rec.os, "fsync", checked)
    steps = [
        rec.Step(
            np.zeros(rec.FRAME_SHAPE, np.uint8),
            Inputs(),
            0.0,
            0.0,
            {
                "gsi_team": "CT",
                "gsi_health": 100,
                "gsi_kills": 0,
                "gsi_deaths": 0,
                "found_active": False,
            },
        )
    ] * 3
    EpisodeWriter(tmp_path, "x_").write(steps)
    assert len(modes) == 2 and os.O_RDONLY not in modes


def test_max_frames_ends_the_recording(tmp_path: Path) -> None:
    s = _play(tmp_path, Script(100), max_frames=30)
    assert s.stopped_by == "--max-frames 30" and s.frames == 24 and s.discarded == 6
