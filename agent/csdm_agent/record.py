"""`csdm-agent record`: your own play, saved as the public dataset's episodes with true labels.

Each step of the fixed 16 fps grid pairs the frame grabbed at its start with what was read at
its end, as the seed's `dm_record_data_me_wasd.py` pairs an image with the next loop's
`curr_vars`: the keys and buttons held (or pressed since the last read), the mouse's raw counts
moved during the step, and the game's state from GSI. The game's memory is never read.

Mouse counts become the seed's `mouse_x` unit, one count at sensitivity 2.5: the seed turns a
yaw change into units with 0.00096 rad each (2.5 x m_yaw 0.022 degrees) and multiplies by
90/fov when zoomed only to undo the game's zoom scaling of sensitivity, which counts precede.
So units = counts x sensitivity / 2.5, zoomed or not.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from csdm_agent import contract
from csdm_agent.capture import FrameSource
from csdm_agent.contract import KEYS, commit_path
from csdm_agent.pace import skip_lost, sleep_until

log = logging.getLogger("csdm_agent")

# The seed's action space, from the module csdm and the agent share.
MOUSE_X_BINS = np.array(contract.MOUSE_X_BINS, dtype=np.float64)
MOUSE_Y_BINS = np.array(contract.MOUSE_Y_BINS, dtype=np.float64)
FPS = 16
FRAME_SHAPE = (150, 280, 3)
SEED_CROP = {"client_width": 1024, "client_height": 768, "sides": 100, "top": 135, "bottom": 135}
EPISODE_FRAMES = 1000  # the public files' length
SEED_SENSITIVITY = 2.5
AUX_STEPS = 3
# Fields the seed's recorder read from the game's memory: written as None, never read here.
MEMORY_FIELDS = (
    "localpos1",
    "localpos2",
    "localpos3",
    "height",
    "vel_1",
    "vel_2",
    "vel_3",
    "vel_mag",
    "vel_theta_abs",
    "xy_rad",
    "zvert_rads",
    "viewangle_xy",
    "viewangle_vert",
    "obs_health",
    "ammo_active",
    "itemdef",
    "obs_mode",
    "obs_fov",
    "obs_scope",
)
STUB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*_")


@dataclass(frozen=True)
class Inputs:
    """What the player did during one step: keys and buttons, raw mouse counts (right, down)."""

    keys: frozenset[str] = frozenset()
    lclick: bool = False
    rclick: bool = False
    dx: int = 0
    dy: int = 0

    @property
    def held(self) -> list[str]:
        """The keys, in the action space's order."""
        return [k for k in KEYS if k in self.keys]


class InputSource(Protocol):
    """The player's inputs since the previous read (Windows: GetAsyncKeyState and raw input)."""

    def read(self) -> Inputs:
        """Keys and buttons held or pressed since the last read; mouse counts since then."""

    def close(self) -> None:
        """Stop listening."""


def quantise(value: float, bins: np.ndarray) -> int:
    """The nearest bin after clipping to the outer ones; ties go to the lower (np.argmin)."""
    v = min(max(value, bins[0]), bins[-1])
    return int(np.argmin(np.abs(bins - v)))


@dataclass
class Step:
    """One recorded frame with its labels and game state."""

    frame: np.ndarray
    inputs: Inputs
    mouse_x: float  # seed units
    mouse_y: float
    game: dict  # gsi_* fields


def one_hot(step: Step) -> np.ndarray:
    """`frame_i_y`: 11 keys, 2 clicks, 23 mouse_x bins, 15 mouse_y bins (the seed's order)."""
    y = np.zeros(len(KEYS) + 2 + len(MOUSE_X_BINS) + len(MOUSE_Y_BINS))
    y[: len(KEYS)] = [k in step.inputs.keys for k in KEYS]
    y[len(KEYS)] = step.inputs.lclick
    y[len(KEYS) + 1] = step.inputs.rclick
    y[len(KEYS) + 2 + quantise(step.mouse_x, MOUSE_X_BINS)] = 1
    y[len(KEYS) + 2 + len(MOUSE_X_BINS) + quantise(step.mouse_y, MOUSE_Y_BINS)] = 1
    return y


def targets(steps: list[Step]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(y, xaux, helperarr)` of an episode, as `dm_pretrain_process.py` builds them.

    xaux holds the three previous steps' keys and clicks, their mouse bins over the outer bin,
    health/100, ammo/30 (GSI's clip count) and team == CT; helperarr flags a kill (kills rose by
    one, deaths stayed) or a death (the reverse) against the previous frame.
    """
    n = len(steps)
    y = np.stack([one_hot(s) for s in steps])
    nk = len(KEYS) + 2
    qx = y[:, nk : nk + len(MOUSE_X_BINS)].argmax(axis=1)
    qy = y[:, nk + len(MOUSE_X_BINS) :].argmax(axis=1)
    health = np.array([s.game["gsi_health"] for s in steps], np.float64)
    ammo = np.array([s.game.get("gsi_ammo", 0) for s in steps], np.float64)
    ct = np.array([s.game["gsi_team"] == "CT" for s in steps], np.float64)
    per_step = np.column_stack(
        [
            y[:, :nk],
            MOUSE_X_BINS[qx] / MOUSE_X_BINS[-1],
            MOUSE_Y_BINS[qy] / MOUSE_Y_BINS[-1],
            health / 100,
            ammo / 30,
            ct,
        ]
    )
    w = per_step.shape[1]
    xaux = np.zeros((n, AUX_STEPS * w))
    for j in range(AUX_STEPS):  # block j: the step j + 1 back, zeros before the episode
        xaux[j + 1 :, j * w : (j + 1) * w] = per_step[: max(n - j - 1, 0)]
    kills = np.array([s.game["gsi_kills"] for s in steps])
    deaths = np.array([s.game["gsi_deaths"] for s in steps])
    dk, dd = np.diff(kills, prepend=kills[:1]), np.diff(deaths, prepend=deaths[:1])
    helper = np.column_stack([(dk == 1) & (dd == 0), (dd == 1) & (dk == 0)]).astype(np.float64)
    return y, xaux, helper


def curr_vars(step: Step) -> dict:
    """The metadata row's game state: GSI fields, memory fields None, the clean labels."""
    return {
        **dict.fromkeys(MEMORY_FIELDS),
        **step.game,
        "tp_wasd": step.inputs.held,  # the seed's held w, a, s, d, r, space; all keys here
        "tp_lclick": int(step.inputs.lclick),
        "tp_rclick": int(step.inputs.rclick),
        "tp_mouse_x": float(step.mouse_x),
        "tp_mouse_y": float(step.mouse_y),
    }


class EpisodeWriter:
    """Writes `hdf5_{stub}{n}.hdf5` and `dataset_metadata/currvarsv2_{stub}{n}_to_{n}.npy`.

    Both are written under `.part` names and renamed, metadata first: an episode file is
    always whole and has its metadata next to it.
    """

    def __init__(self, out: Path, stub: str) -> None:
        if not STUB_RE.fullmatch(stub):
            raise ValueError(
                f"--stub {stub!r}: use letters, digits and '_', ending in '_' "
                "(episodes are named hdf5_{stub}{n}.hdf5), e.g. dm_mine_"
            )
        try:
            import h5py  # noqa: F401  (checked now, not after the first minute of play)
        except ImportError:
            raise SystemExit("recording needs h5py: pip install 'csdm-agent[record]'") from None
        self.out, self.stub = Path(out), stub
        self.meta_dir = self.out / "dataset_metadata"
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        self._sweep()
        self.next = self._first_free()

    def _sweep(self) -> None:
        """Remove this stub's `.part` files, left by an interrupted recording.

        A metadata file without its episode (a crash between the two renames) is inert:
        `csdm process` only reads metadata of episodes it finds. It is named, not deleted.
        """
        stub = re.escape(self.stub)  # exact names: dm_ must not sweep dm_mine_'s files
        stale = [
            p
            for d, pat in (
                (self.out, rf"hdf5_{stub}\d+\.hdf5\.part"),
                (self.meta_dir, rf"currvarsv2_{stub}\d+_to_\d+\.npy\.part"),
            )
            for p in d.iterdir()
            if re.fullmatch(pat, p.name)
        ]
        for path in stale:
            log.info("removing %s, left by an interrupted recording", path)
            path.unlink()
        for meta in self.meta_dir.glob(f"currvarsv2_{self.stub}*_to_*.npy"):
            m = re.fullmatch(rf"currvarsv2_{stub}(\d+)_to_\1\.npy", meta.name)
            if m and not self.paths(int(m[1]))[0].exists():
                log.warning(
                    "%s has no episode file beside it (moved away, or a recording "
                    "interrupted between its two files); its number is not reused",
                    meta,
                )

    def _first_free(self) -> int:
        """One past the highest episode number of this stub already in the folder."""
        stub = re.escape(self.stub)
        pats = [
            (self.out, rf"hdf5_{stub}(\d+)\.hdf5"),
            (self.meta_dir, rf"currvarsv2_{stub}\d+_to_(\d+)\.npy"),
        ]
        nums = [int(m[1]) for d, p in pats for f in os.listdir(d) if (m := re.fullmatch(p, f))]
        return max(nums, default=0) + 1

    def paths(self, n: int) -> tuple[Path, Path]:
        """The episode file and its metadata file."""
        return (
            self.out / f"hdf5_{self.stub}{n}.hdf5",
            self.meta_dir / f"currvarsv2_{self.stub}{n}_to_{n}.npy",
        )

    def write(self, steps: list[Step]) -> Path:
        """Write one episode; returns the episode file."""
        import h5py

        n, self.next = self.next, self.next + 1
        h5_path, meta_path = self.paths(n)
        y, xaux, helper = targets(steps)
        rows = {}
        for i, s in enumerate(steps):
            action = [
                s.inputs.held,
                float(s.mouse_x),
                float(s.mouse_y),
                int(s.inputs.lclick),
                int(s.inputs.rclick),
            ]
            rows[f"file_num{n}_frame_{i}"] = [curr_vars(s), action, helper[i].tolist()]
        obj = np.empty((), dtype=object)
        obj[()] = rows
        tmp_meta = meta_path.with_name(meta_path.name + ".part")
        tmp_h5 = h5_path.with_name(h5_path.name + ".part")
        try:
            with open(tmp_meta, "wb") as f:
                np.save(f, obj, allow_pickle=True)
            with h5py.File(tmp_h5, "w") as h5:
                for i, s in enumerate(steps):
                    h5.create_dataset(f"frame_{i}_x", data=s.frame)
                    h5.create_dataset(f"frame_{i}_xaux", data=xaux[i])
                    h5.create_dataset(f"frame_{i}_y", data=y[i])
                    h5.create_dataset(f"frame_{i}_helperarr", data=helper[i])
            for tmp in (tmp_meta, tmp_h5):  # on disk before the names say they are whole
                _fsync(tmp)
            commit_path(tmp_meta, meta_path)
            commit_path(tmp_h5, h5_path)
        except BaseException as e:
            tmp_meta.unlink(missing_ok=True)
            tmp_h5.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)  # renamed first: alone it would be an orphan
            if isinstance(e, OSError):
                raise OSError(
                    f"{h5_path}: not written ({e.strerror or e}); its {len(steps)} "
                    "frames are lost: free space, then record again"
                ) from e
            raise
        return h5_path


def _fsync(path: Path) -> None:
    with open(path, "r+b") as f:  # Windows flushes only handles open for writing
        os.fsync(f.fileno())


@dataclass
class RecordSummary:
    """What a recording produced."""

    episodes: list[str] = field(default_factory=list)
    frames: int = 0  # frames in written episodes
    discarded: int = 0  # frames of an unfinished last episode not kept
    dropped: int = 0  # 1/fps slots missed because a step overran
    waited: float = 0.0  # seconds spent waiting for the game's first GSI post
    stopped_by: str = ""
    failures: list[str] = field(default_factory=list)  # episodes that could not be written


def record(
    frames: FrameSource,
    inputs: InputSource,
    game: Callable[[], dict | None],
    writer: EpisodeWriter,
    sensitivity: float = SEED_SENSITIVITY,
    episode_frames: int = EPISODE_FRAMES,
    keep_partial: bool = False,
    stop: Callable[[], bool] = lambda: False,
    max_frames: int | None = None,
    pace: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> RecordSummary:
    """Record until the stop key, Ctrl+C, the end of the frames, `max_frames` or a failed write.

    An unfinished last episode is written (shorter) with `keep_partial`, else discarded;
    episodes are written in a background thread so the 16 fps grid keeps its pace. Counts
    moved while a slow step dropped slots belong to the frame before: labels are what
    happened between consecutive frames.
    """
    s = RecordSummary()
    period, scale = 1.0 / FPS, sensitivity / SEED_SENSITIVITY
    steps: list[Step] = []
    pool = ThreadPoolExecutor(1, thread_name_prefix="csdm-episode-writer")
    pending: list[tuple[Future, int]] = []

    def written(fut: Future) -> None:  # in the writer thread: say it now, not at the end
        if fut.exception() is not None:
            log.error("%s", fut.exception())

    def flush(batch: list[Step]) -> None:
        fut = pool.submit(writer.write, batch)
        fut.add_done_callback(written)
        pending.append((fut, len(batch)))

    with _CtrlC() as interrupted:
        try:
            stop_or_ctrl_c = lambda: stop() or interrupted.is_set()  # noqa: E731
            s.waited = _wait_for_game(game, stop_or_ctrl_c, clock, sleep)
            if s.waited < 0:
                how = "Ctrl+C" if interrupted.is_set() else "stop key"
                s.stopped_by = f"{how} before the game's first GSI post"
                return s
            inputs.read()  # forget what happened before the first frame
            slot, taken = clock(), 0
            while max_frames is None or taken < max_frames:
                if stop():
                    s.stopped_by = "stop key"
                    break
                if interrupted.is_set():
                    s.stopped_by = "Ctrl+C"
                    break
                if any(f.done() and f.exception() is not None for f, _ in pending):
                    s.stopped_by = "an episode could not be written"
                    break
                if pace:
                    sleep_until(slot, clock, sleep)
                frame = frames.grab()
                if frame is None:
                    s.stopped_by = "end of frames"
                    break
                slot += period
                if pace:
                    sleep_until(slot, clock, sleep)
                did = inputs.read()
                steps.append(Step(frame, did, did.dx * scale, did.dy * scale, game()))
                taken += 1
                if len(steps) == episode_frames:
                    batch, steps = steps, []  # swapped first: an interrupt cannot write it twice
                    flush(batch)
                if pace:  # a slow step: whole slots passed unrecorded
                    slot, lost = skip_lost(slot, period, clock())
                    s.dropped += lost
            else:
                s.stopped_by = f"--max-frames {max_frames}"
        except KeyboardInterrupt:  # only where Ctrl+C could not be turned into a flag
            s.stopped_by = "Ctrl+C"
        except Exception as e:  # a failed grab or state read: keep what is whole, say why
            s.stopped_by = f"error: {type(e).__name__}: {e}"
            log.error("recording stopped: %s", s.stopped_by)
        finally:
            try:
                inputs.close()
            except Exception as e:  # the episodes still matter more
                log.warning("closing the input reader: %s", e)
            if steps and keep_partial:
                flush(steps)
            else:
                s.discarded = len(steps)
            pool.shutdown(wait=True)
    for fut, n in pending:
        if fut.exception() is None:
            s.episodes.append(str(fut.result()))
            s.frames += n
        else:  # a full disk: the episode is named, the others are kept
            s.failures.append(str(fut.exception()))
    if s.stopped_by.startswith("error"):
        s.failures.append(s.stopped_by)
    return s


class _CtrlC:
    """Ctrl+C as a flag the loop checks, in the main thread (where signals arrive).

    Raised instead, it could land between two statements: an episode handed to the writer
    twice, or not at all.
    """

    def __init__(self) -> None:
        self.event, self.previous = threading.Event(), None

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._set)
        return self.event

    def _set(self, *_) -> None:
        if self.event.is_set():
            log.warning("still writing the last episode; it is kept when done")
        self.event.set()

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _wait_for_game(
    game: Callable[[], dict | None],
    stop: Callable[[], bool],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> float:
    """Seconds until GSI describes the player on a team; -1 if stopped first."""
    t0, said = clock(), False
    while (state := game()) is None or not state.get("gsi_team"):
        if stop():
            return -1.0
        if not said:
            log.info(
                "waiting for the game's GSI post about you on a team (is the cfg of "
                "csdm-agent gsi-config in csgo\\cfg; have you joined a team?)"
            )
            said = True
        sleep(0.05)
    return clock() - t0
