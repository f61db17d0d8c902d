"""The fixed-rate control loop: capture, infer, decode, act, every 1/fps seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from csdm_agent.capture import FrameSource
from csdm_agent.control import Controller
from csdm_agent.decode import Action, Decoder
from csdm_agent.pace import skip_lost, sleep_until
from csdm_agent.policy import Policy

log = logging.getLogger("csdm_agent")


@dataclass
class RunSummary:
    """Per-step timings (seconds) and what happened."""

    fps: int
    provider: str
    capture: list[float] = field(default_factory=list)
    inference: list[float] = field(default_factory=list)
    act: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)  # capture + inference + decode + act
    starts: list[float] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    overruns: int = 0
    dropped: int = 0
    decals_cleared: int = 0
    gsi: list[dict | None] = field(default_factory=list)  # the game's state at each step
    released: list[str] = field(default_factory=list)
    stopped_by: str = ""

    def percentiles(self) -> dict[str, float]:
        """p50 and p99 of the step time and its parts, in milliseconds."""
        out = {}
        for name in ("step", "capture", "inference", "act"):
            v = np.asarray(getattr(self, name)) * 1000
            if len(v):
                out[f"{name}_p50_ms"] = float(np.percentile(v, 50))
                out[f"{name}_p99_ms"] = float(np.percentile(v, 99))
        return out

    def report(self) -> str:
        """One paragraph for the console."""
        p = self.percentiles()
        return (
            f"{len(self.step)} steps at {self.fps} fps on {self.provider}: step p50 "
            f"{p.get('step_p50_ms', 0):.1f} ms, p99 {p.get('step_p99_ms', 0):.1f} ms "
            f"(budget {1000 / self.fps:.1f} ms; capture p50 {p.get('capture_p50_ms', 0):.1f}, "
            f"inference p50 {p.get('inference_p50_ms', 0):.1f}); {self.overruns} overruns, "
            f"{self.dropped} dropped frames; stopped by {self.stopped_by}; released "
            f"{', '.join(self.released) or 'nothing'}"
        )


def run(
    policy: Policy,
    decoder: Decoder,
    frames: FrameSource,
    controller: Controller,
    fps: int,
    max_frames: int | None = None,
    stop: Callable[[], bool] = lambda: False,
    pace: bool = True,
    clear_decals: tuple[str, float] | None = ("n", 5.0),
    gsi: Callable[[], dict | None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> RunSummary:
    """Play until the source ends, `max_frames`, the stop hotkey or Ctrl+C; always releases.

    `clear_decals` (key, seconds): tapped every so many seconds of steps, as the seed did with
    a key bound to `r_cleardecals` (blood and bullet holes are not in the training frames).
    `gsi`: the game's latest state, logged with each step. `clock` and `sleep` are injectable
    so tests can drive the grid.
    """
    period = 1.0 / fps
    every = max(1, round(clear_decals[1] * fps)) if clear_decals and clear_decals[1] > 0 else 0
    s = RunSummary(fps, policy.provider)
    slot = clock()  # start of the current 1/fps slot on a fixed grid
    try:
        while max_frames is None or len(s.step) < max_frames:
            if stop():
                s.stopped_by = "stop hotkey"
                break
            if pace:
                sleep_until(slot, clock, sleep)
            t0 = clock()
            frame = frames.grab()
            if frame is None:
                s.stopped_by = "end of replay"
                break
            t1 = clock()
            out = policy.step(frame)
            t2 = clock()
            action = decoder.decode(out)
            if action.reset_state:
                policy.reset()
            controller.apply(action)
            t3 = clock()
            s.starts.append(t0)
            s.capture.append(t1 - t0)
            s.inference.append(t2 - t1)
            s.act.append(t3 - t2)
            s.step.append(t3 - t0)
            s.actions.append(action)
            if gsi is not None:
                s.gsi.append(gsi())
            slot_end = slot + period
            if pace:  # the seed's split mouse move: second half mid-step, within the slot
                sleep_until(min(t0 + period / 2, slot_end), clock, sleep)
            controller.half_move(action)
            if every and len(s.step) % every == 0:  # the seed: n_loops % (5 * fps), loop end
                controller.tap(clear_decals[0])
                s.decals_cleared += 1
            if pace and t3 > slot_end:
                s.overruns += 1
                log.warning(
                    "step %d took %.1f ms (budget %.1f ms)",
                    len(s.step),
                    (t3 - t0) * 1000,
                    period * 1000,
                )
            slot = slot_end
            if pace:  # whole slots passed with no step: dropped
                slot, lost = skip_lost(slot, period, clock())
                s.dropped += lost
        else:
            s.stopped_by = f"--max-frames {max_frames}"
    except KeyboardInterrupt:
        s.stopped_by = "Ctrl+C"
    finally:
        s.released = controller.release_all()
    return s
