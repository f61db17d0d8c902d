"""The seed's Keras model, built once per session for the import tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tasks.synth.frames import render
from tasks.synth.players import simulate
from tests.keras.env import keras_python

SCRIPT = Path(__file__).parents[1] / "keras" / "seed_model.py"


@pytest.fixture(scope="session")
def keras_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PREFIX files of the seed's model and its stateful twin, plus Keras' outputs."""
    out = tmp_path_factory.mktemp("keras")
    np.save(out / "frames.npy", render(simulate(16, 3), seed=3))
    subprocess.run(
        [str(keras_python()), str(SCRIPT), str(out / "frames.npy"), str(out)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return out
