"""The test-only venv with TensorFlow and tf_keras, created on first use and then reused.

It lives in `.cache/keras-venv` (or `$CSDM_KERAS_VENV`), outside csdm's own `.venv`: csdm never
depends on TensorFlow. A stamp names the pins, so a changed pin rebuilds it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

PINS = ("tensorflow-cpu==2.21.0", "tf_keras==2.21.0", "h5py==3.14.0")
ROOT = Path(__file__).resolve().parents[2]


def install_in_background() -> subprocess.Popen | None:
    """Start the install in another process (the lock serialises it with `keras_python`)."""
    if _ready(_venv()):
        return None
    code = "from tests.keras.env import keras_python; keras_python()"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def _venv() -> Path:
    return Path(os.environ.get("CSDM_KERAS_VENV", ROOT / ".cache" / "keras-venv"))


def _ready(venv: Path) -> bool:
    stamp = venv / ".pins"
    return (
        stamp.exists() and stamp.read_text() == "\n".join(PINS) and (venv / "bin/python").exists()
    )


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
        pip = [str(python), "-m", "pip", "install", "--quiet", "--no-compile",
               "--disable-pip-version-check"]  # fmt: skip
        r = subprocess.run([*pip, *PINS], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"installing {' '.join(PINS)} into {venv} failed:\n"
                               f"{r.stderr[-3000:]}")  # fmt: skip
        stamp.write_text("\n".join(PINS))
    return python
