"""A test-only venv built once from a hashed lock, reused, and rebuilt when the lock changes.

It lives under `.cache/` (or where an environment variable says), outside csdm's `.venv`. A
stamp holds the lock's sha256; a file lock serialises the parallel test processes building it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIP = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]


class PinnedVenv:
    """`name`'s venv from `lock`, made by the interpreter `base()` finds (None: `missing`)."""

    def __init__(
        self, name: str, lock: Path, env_var: str, base: Callable[[], str | None], missing: str
    ) -> None:
        self.name, self.lock, self.env_var = name, lock, env_var
        self.base, self.missing = base, missing

    @property
    def path(self) -> Path:
        return Path(os.environ.get(self.env_var, ROOT / ".cache" / self.name))

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def pip(self) -> list[str]:
        """The venv's `pip install`, quiet."""
        return [str(self.python), *PIP]

    def ready(self) -> bool:
        """Whether the venv holds the lock's pins."""
        stamp = self.path / ".pins"
        return stamp.exists() and stamp.read_text() == self._digest() and self.python.exists()

    def _digest(self) -> str:
        return hashlib.sha256(self.lock.read_bytes()).hexdigest()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while the venv is built or changed: one test process at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def ensure(self) -> Path:
        """The venv's python with the pins installed (build it first if needed); under `locked`."""
        if self.ready():
            return self.python
        base = self.base()
        if base is None:
            raise RuntimeError(self.missing)
        shutil.rmtree(self.path, ignore_errors=True)
        subprocess.run([base, "-m", "venv", str(self.path)], check=True)
        # --no-compile: byte-compiling all of TensorFlow or torch costs seconds; what is
        # imported compiles
        r = subprocess.run(
            [*self.pip(), "--no-compile", "--require-hashes", "-r", str(self.lock)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"installing {self.lock} into {self.path} failed:\n{r.stderr[-3000:]}"
            )
        (self.path / ".pins").write_text(self._digest())
        return self.python

    def in_background(self, code: str) -> subprocess.Popen | None:
        """Run `code` (which builds the venv) in another process, unless the venv is ready."""
        if self.ready():
            return None
        return subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
