"""DIAMOND's pinned environment for tests: Python 3.10, torch 2.4.1, numpy 1.26.0, h5py 3.11.0.

Built on first use in `.cache/diamond-venv` (or `$CSDM_DIAMOND_VENV`) from
`requirements.lock`, hashes checked, and rebuilt when the lock changes; csdm's reader is then
installed into it from this checkout, without its dependencies (the lock holds them), as a
DIAMOND user would install it. About 5 GB: torch 2.4.1 brings CUDA's libraries, unused here.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.pinned_venv import PinnedVenv

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("in_diamond_env.py")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def _python310() -> str | None:
    # pyenv's own interpreter first: its `python3.10` shim fails unless 3.10 is selected
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
    return found[-1] if found else shutil.which("python3.10")


VENV = PinnedVenv(
    "diamond-venv",
    Path(__file__).with_name("requirements.lock"),
    "CSDM_DIAMOND_VENV",
    _python310,
    "DIAMOND's environment needs Python 3.10 (pyenv install 3.10)",
)


def install_in_background() -> subprocess.Popen | None:
    """Start building the venv in another process (the lock serialises it with `python`)."""
    return VENV.in_background("from tests.diamond_env.env import diamond_python; diamond_python()")


@functools.cache  # once per test process: the checkout does not change under a session
def diamond_python() -> Path:
    """The venv's python with the lock's pins and this checkout's csdm reader installed."""
    with VENV.locked():
        python = VENV.ensure()
        # the reader as it is now in this checkout, its dependencies from the lock; built from
        # a copy, so that setuptools' build folders never land in the checkout
        with tempfile.TemporaryDirectory(prefix="csdm-src-") as tmp:
            for name in ("pyproject.toml", "README.md", "storage", "tasks", "flows", "training"):
                src = ROOT / name
                if src.is_dir():
                    shutil.copytree(src, Path(tmp) / name, ignore=_SKIP)
                else:
                    shutil.copy(src, Path(tmp) / name)
            r = subprocess.run(
                [*VENV.pip(), "--no-deps", "--force-reinstall", tmp],
                capture_output=True,
                text=True,
            )
    if r.returncode != 0:
        raise RuntimeError(f"installing csdm's reader into {VENV.path} failed:\n{r.stderr[-3000:]}")
    return python


def run(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    """Run `in_diamond_env.py` (or a script given first) in the pinned env; its stdout."""
    python = diamond_python()
    argv = (
        [str(python), *args]
        if args and args[0].endswith(".py")
        else [str(python), str(SCRIPT), *args]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    r = subprocess.run(
        argv, cwd=cwd, input=stdin, capture_output=True, text=True, env=env, timeout=900
    )
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv[1:3])} failed in DIAMOND's env:\n{r.stderr[-4000:]}")
    return r.stdout
