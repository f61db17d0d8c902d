"""Shared fixtures: a small synthetic source tree in the public layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from storage.layout import episode_from_member
from tasks.synth.tree import SynthConfig, disagreements, episode_seed, write_synthetic_tree
from tests.hub_server import FakeHub, HubServer

# the same examples on every run, so CI fails only on a change; HYPOTHESIS_PROFILE=explore
# draws fresh ones to hunt
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(session, config, items) -> None:
    """Start installing the Keras and DIAMOND test venvs now, in the background, if needed.

    Each takes a minute or two; those tests run late, by when they are ready.
    """
    if any("test_keras_" in item.nodeid for item in items):
        from tests.keras.env import install_in_background

        install_in_background()
    if any("test_diamond_env" in item.nodeid for item in items):  # DIAMOND's pinned env
        from tests.diamond_env.env import install_in_background as diamond_in_background

        diamond_in_background()


SMALL = SynthConfig(seed=7, frames=60, tars=2, episodes_per_tar=3, expert_episodes=2)


def known_agreement(episode: str, which: str, cfg: SynthConfig = SMALL) -> dict[str, float]:
    """The `agree_*` values of a synthetic episode, from the labels it was shipped with changed.

    `which`: "metadata" (shipped `infer_a` against csdm's inference) or "targets" (the HDF5's
    `y` against csdm's inference).
    """
    ep = episode_from_member(f"hdf5_{episode}.hdf5")
    changed = disagreements(cfg.frames, episode_seed(cfg, ep), cfg.disagree)
    return changed.agreement(cfg.frames, which)


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
    """Process in-process (no Prefect, no Dask) for fast fixtures: the flow's own wiring."""
    from storage.fs import Root
    from tasks.params import ProcessParams
    from tasks.process_source import process_source

    process_source(
        Root(str(src)), Root(str(out)), ProcessParams(test_fraction=test_fraction, seed=1)
    )
    return out


@pytest.fixture(scope="session")
def processed(synth_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_tree` processed into the training format (a quarter of episodes in test)."""
    return process_plain(synth_tree, tmp_path_factory.mktemp("processed"))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto_server) for the session, credentials enforced.

    Its endpoint and credentials go into this process's standard AWS environment, as a
    cloud machine would have them.
    """
    import os

    from tests.s3_server import MotoServer

    with MotoServer() as endpoint:
        saved = {k: os.environ.get(k) for k in endpoint.env()}
        os.environ.update(endpoint.env())
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint, request: pytest.FixtureRequest) -> str:
    """A fresh bucket for one test, as `s3://name`."""
    import re
    import uuid

    import fsspec

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{name}-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}"


@pytest.fixture
def s3_source(synth_tree: Path, bucket: str) -> str:
    """`synth_tree` uploaded to `bucket/raw`, as a URL."""
    import fsspec

    fs = fsspec.filesystem("s3")
    for p in sorted(synth_tree.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{bucket[5:]}/raw/{p.relative_to(synth_tree).as_posix()}")
    return f"{bucket}/raw"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A local Hub-compatible server as HF_ENDPOINT, with a test token; yields its FakeHub."""
    fake = FakeHub()
    with HubServer(fake) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        # the stand-in speaks Git LFS, not Xet; the client reads these settings at import
        import huggingface_hub.constants as hf_constants

        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
        yield fake
