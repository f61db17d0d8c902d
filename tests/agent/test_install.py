"""Installing ./agent from its lock into a fresh venv brings none of the pipeline's heavy parts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {
    "torch",
    "prefect",
    "dask",
    "distributed",
    "zarr",
    "pyarrow",
    "pandas",
    "h5py",
    "huggingface-hub",
    "duckdb",
    "typer",
}


def test_the_agent_declares_no_heavy_dependency() -> None:
    project = tomllib.loads((ROOT / "agent" / "pyproject.toml").read_text())["project"]
    names = {
        re.split(r"[<>=!~; \[]", d, maxsplit=1)[0].lower().replace("_", "-")
        for d in project["dependencies"]
    }
    assert names == {"numpy", "onnxruntime", "onnxruntime-directml", "mss"}
    assert {d for extra in project["optional-dependencies"].values() for d in extra} == {
        "h5py>=3.10,<3.17"
    }


@pytest.mark.slow
def test_fresh_locked_install_is_slim_and_complete(tmp_path: Path) -> None:
    """The agent's lock (hashes checked) then the agent itself with no resolving of its own."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = str(venv / "bin" / "pip")
    for args in (
        ["--require-hashes", "-r", str(ROOT / "agent" / "requirements.lock")],
        ["--no-deps", str(ROOT / "agent")],
    ):
        r = subprocess.run(
            [pip, "install", "--quiet", *args], capture_output=True, text=True, timeout=900
        )
        assert r.returncode == 0, r.stderr[-3000:]
    check = subprocess.run([pip, "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout  # the lock covers every dependency
    listed = subprocess.run(
        [pip, "list", "--format", "json"], capture_output=True, text=True, check=True
    ).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert {"csdm-agent", "numpy", "onnxruntime", "mss", "h5py"} <= names
    assert not names & (HEAVY - {"h5py"}), names & HEAVY  # h5py: recording and replay only
    help_ = subprocess.run(
        [str(venv / "bin" / "csdm-agent"), "run", "--help"], capture_output=True, text=True
    )
    assert help_.returncode == 0 and "--dry-run" in help_.stdout
