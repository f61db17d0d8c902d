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
