"""The test-only venv with TensorFlow and tf_keras, created on first use and then reused.

It lives in `.cache/keras-venv` (or `$CSDM_KERAS_VENV`), outside csdm's own `.venv`: csdm never
depends on TensorFlow. Its packages come from `requirements.lock`, hashes checked; a
stamp holds the lock's digest, so a changed lock rebuilds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = Path(__file__).with_name("requirements.lock")  # tensorflow-cpu, tf_keras, h5py: hashed


def install_in_background() -> subprocess.Popen | None:
    """Start the install in another process (the lock serialises it with `keras_python`)."""
    if _ready(_venv()):
        return None
    code = "from tests.keras.env import keras_python; keras_python()"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _venv() -> Path:
    return Path(os.environ.get("CSDM_KERAS_VENV", ROOT / ".cache" / "keras-venv"))


def _ready(venv: Path) -> bool:
    stamp = venv / ".pins"
    return stamp.exists() and stamp.read_text() == _pins() and (venv / "bin/python").exists()


def _pins() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def keras_python() -> Path:
    """The venv's python, installing the pins into it first if needed (about a minute)."""
    venv = _venv()
    python, stamp = venv / "bin" / "python", venv / ".pins"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".keras-venv.lock", "w") as lock:  # parallel test processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(venv):
            return python
        shutil.rmtree(venv, ignore_errors=True)
        base = shutil.which("python3.11") or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        # --no-compile: byte-compiling all of TensorFlow costs 15 s; what is imported compiles
        pip = [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--disable-pip-version-check",
        ]
        r = subprocess.run(
            [*pip, "--require-hashes", "-r", str(LOCK)], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise RuntimeError(f"installing {LOCK} into {venv} failed:\n{r.stderr[-3000:]}")
        stamp.write_text(_pins())
    return python
