"""The test-only venv with TensorFlow and tf_keras, created on first use and then reused.

It lives in `.cache/keras-venv` (or `$CSDM_KERAS_VENV`), outside csdm's own `.venv`: csdm never
depends on TensorFlow. Its packages come from `requirements.lock`, hashes checked; a
stamp holds the lock's digest, so a changed lock rebuilds it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.pinned_venv import PinnedVenv

VENV = PinnedVenv(
    "keras-venv",
    Path(__file__).with_name("requirements.lock"),  # tensorflow-cpu, tf_keras, h5py: hashed
    "CSDM_KERAS_VENV",
    lambda: shutil.which("python3.11") or sys.executable,
    "the keras venv needs a Python 3.11",
)


def install_in_background() -> subprocess.Popen | None:
    """Start the install in another process (the lock serialises it with `keras_python`)."""
    return VENV.in_background("from tests.keras.env import keras_python; keras_python()")


def keras_python() -> Path:
    """The venv's python, installing the pins into it first if needed (about a minute)."""
    with VENV.locked():
        return VENV.ensure()
