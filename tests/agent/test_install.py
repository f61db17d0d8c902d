"""Installing ./agent into a fresh venv brings none of the pipeline's heavy packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "prefect", "dask", "distributed", "zarr", "pyarrow", "pandas", "h5py",
         "huggingface-hub", "duckdb", "typer"}  # fmt: skip


@pytest.mark.slow
def test_fresh_install_is_slim(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = str(venv / "bin" / "pip")
    r = subprocess.run([pip, "install", "--quiet", str(ROOT / "agent")], capture_output=True,
                       text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    listed = subprocess.run([pip, "list", "--format", "json"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert {"csdm-agent", "numpy", "onnxruntime", "mss"} <= names
    assert not names & HEAVY, names & HEAVY
    help_ = subprocess.run([str(venv / "bin" / "csdm-agent"), "run", "--help"],
                           capture_output=True, text=True)  # fmt: skip
    assert help_.returncode == 0 and "--dry-run" in help_.stdout
