"""Make sure a Prefect API is reachable before a flow runs on Dask workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until `url/health` answers; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"no Prefect API at {url} after {timeout:.0f} s")


@contextmanager
def local_api() -> Iterator[str]:
    """Use PREFECT_API_URL when set; else run Prefect's local server (SQLite) for the duration.

    Dask worker processes inherit PREFECT_API_URL, so they all report to this one server
    instead of each starting a temporary server of their own.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    prefect = Path(sys.executable).with_name("prefect")
    # No telemetry: the server would otherwise try to reach Prefect's analytics service.
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    # A supervisor in its own session outlives a SIGKILL of our process group, sees that we
    # are gone and stops the server with its whole group: no orphaned server, ever.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.prefect_api", str(os.getpid()), *server],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        wait_healthy(url, proc=proc)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        _flush_logs()  # while the server still listens: else "Error logging to API" at exit
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _flush_logs() -> None:
    """Send queued run logs and events, then stop sending: the server is about to go away."""
    import logging

    try:
        from prefect.logging.handlers import APILogHandler
    except ImportError:
        return
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {
        h for lg in loggers for h in getattr(lg, "handlers", []) if isinstance(h, APILogHandler)
    }
    for h in handlers:
        with contextlib.suppress(Exception):  # best effort: log lines, the outcome is known
            h.flush()
        h.setLevel(logging.CRITICAL + 1)
    with contextlib.suppress(Exception):  # events too: else they need a server at exit
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)


def supervise(parent: int, command: list[str], poll: float = 0.5) -> int:
    """Run `command` until it exits, we are told to stop, or `parent` dies; then stop it all.

    The command runs in this process's group, which the caller made a new session, so
    stopping it means signalling that group: the server and any process it started.
    """
    child = subprocess.Popen(command)
    stop = False

    def on_term(signum, frame) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stop and child.poll() is None and _alive(parent):
        time.sleep(poll)
    if child.poll() is None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgrp(), signal.SIGKILL)
    return child.returncode or 0


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (and is ours to signal); a zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): kill(0) said it exists


if __name__ == "__main__":
    sys.exit(supervise(int(sys.argv[1]), sys.argv[2:]))
