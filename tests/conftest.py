"""Shared fixtures: a small synthetic source tree in the public layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.synth import SynthConfig, write_synthetic_tree
from tests.hub_server import FakeHub, HubServer

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
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        # Prefect may have read its settings at import, before this server existed: flows run
        # in the test process must use it too, not start a temporary server of their own.
        with local_api() as url, temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        if old is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = old


def process_plain(src: Path, out: Path, test_fraction: float = 0.25) -> Path:
    """The process flow's steps as plain calls (no Prefect, no Dask) for fast fixtures."""
    from flows.process import ProcessParams
    from storage.layout import OutLayout
    from tasks.catalog_writer import write_catalog
    from tasks.metadata_cache import prepare_metadata
    from tasks.repack import repack_episode
    from tasks.source import list_source

    params = ProcessParams(test_fraction=test_fraction, seed=1)
    layout, splits = OutLayout(out), params.splits()
    listing = list_source(src)
    meta = {r.episode: r for p in listing.metadata
            for r in prepare_metadata(p, layout, params.thresholds())}  # fmt: skip
    records = [repack_episode(e, out, meta.get(e.episode.name), splits.split_of(e.episode.name))
               for e in listing.episodes]  # fmt: skip
    write_catalog(layout, records, str(src), params.recorded())
    return out


@pytest.fixture(scope="session")
def processed(synth_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_tree` processed into the training format (a quarter of episodes in test)."""
    return process_plain(synth_tree, tmp_path_factory.mktemp("processed"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A local Hub-compatible server as HF_ENDPOINT, with a test token; yields its FakeHub."""
    fake = FakeHub()
    with HubServer(fake) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield fake
