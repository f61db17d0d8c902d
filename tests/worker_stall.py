"""Dask worker preload for crash tests: the first repack of one episode stalls after its frames.

Test infrastructure only. The stalled worker writes its pid to a signal file, so the test can
SIGKILL it at that exact point: frames written, catalog rows and record not.
"""

from __future__ import annotations

import os
import time

import tasks.repack as repack

EPISODE = os.environ.get("CSDM_TEST_STALL_EPISODE", "")
SIGNAL = os.environ.get("CSDM_TEST_STALL_SIGNAL", "")
# dask may run a preload file more than once: always wrap the original
_write_frames = getattr(repack, "_original_write_frames", repack.write_frames)
repack._original_write_frames = _write_frames


def _stalling_write_frames(layout, episode, frames, attrs, *codec):
    stored = _write_frames(layout, episode, frames, attrs, *codec)
    if episode == EPISODE and SIGNAL:
        try:
            fd = os.open(SIGNAL, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the first stalls
        except FileExistsError:
            return stored
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(600)
    return stored


repack.write_frames = _stalling_write_frames
