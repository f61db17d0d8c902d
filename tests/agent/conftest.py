"""A tiny policy trained, exported and registered once for the agent tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def registered(processed: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'run', 'export', 'registry'}: a 3-step tiny run, its export, registered as cs v1."""
    from storage.registry import open_registry
    from training.data import SamplerConfig
    from training.export import export
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("agent-model")
    sampler = SamplerConfig(window=8, jitter=4, split=None, keep_only=False)
    train(
        processed,
        root / "run",
        TrainConfig.preset_config("tiny", steps=3, sampler=sampler),
        quiet=True,
    )
    export(root / "run", root / "export")
    open_registry(root / "registry", "cs").register(root / "export", alias="production")
    return {
        "run": root / "run",
        "export": root / "export",
        "registry": root / "registry",
        "data": processed,
    }
