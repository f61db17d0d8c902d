"""The fixed 1/fps grid that `run` and `record` keep: sleeping to a slot, counting lost ones."""

from __future__ import annotations

import time
from collections.abc import Callable


def sleep_until(
    t: float,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Sleep to time `t` of `clock`; the last few milliseconds in short sleeps, for precision."""
    while (left := t - clock()) > 0:
        sleep(min(left, 0.002) if left < 0.004 else left - 0.002)


def skip_lost(slot: float, period: float, now: float) -> tuple[float, int]:
    """After a step that ran into later slots: the slot to go on from and the whole slots lost."""
    if now <= slot + period:
        return slot, 0
    lost = int((now - slot) // period)
    return slot + lost * period, lost
