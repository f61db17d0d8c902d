"""Shared fixtures: a small synthetic source tree in the public layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.synth import SynthConfig, write_synthetic_tree

SMALL = SynthConfig(seed=7, frames=60, tars=2, episodes_per_tar=3, expert_episodes=2)


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic source tree: 2 tars x 3 episodes, an expert zip of 2, metadata."""
    out = tmp_path_factory.mktemp("src")
    write_synthetic_tree(out, SMALL)
    return out


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect server (SQLite) for the whole session; yields its API URL."""
    import os

    from flows.prefect_api import local_api

    home = tmp_path_factory.mktemp("prefect-home")
    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    try:
        with local_api() as url:
            yield url
    finally:
        if old is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = old
