"""Downloads from a local Hub-compatible server through the real huggingface_hub client."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.hub.transfer import (
    MANIFEST,
    IngestError,
    check_disk,
    download_file,
    load_manifest,
    patterns_for,
    pending,
    plan_ingest,
    record_verified,
    select,
)
from tests.hub_server import FakeHub, Faults, HubServer

REPO = "TeaPearce/CounterStrike_Deathmatch"


def _files(seed: int = 0) -> dict[str, bytes]:
    rnd = os.urandom if seed < 0 else (lambda n: bytes((i * 7 + seed) % 251 for i in range(n)))
    return {
        "README.md": b"# the dataset\n",
        "hdf5_dm_july2021_1_to_200.tar": rnd(700_000),
        "hdf5_dm_july2021_201_to_400.tar": rnd(500_001),
        "dataset_dm_expert_dust2.zip": rnd(120_000),
        "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy": rnd(60_000),
        "dataset_metadata/currvarsv2_dm_july2021_expert_1_to_100.npy": rnd(30_000),
        "trained_models/ak47_sub_55k_drop_d4.h5": rnd(40_000),
    }


@pytest.fixture
def hub():
    fake = FakeHub()
    fake.commit(REPO, _files())
    with HubServer(fake) as server:
        yield fake, server.endpoint


def _fetch(plan, dest: Path, endpoint: str) -> list[Path]:
    todo = pending(plan, dest)
    check_disk(dest, todo)
    got = [download_file(plan, f, dest, endpoint=endpoint, backoff=0.01) for f in todo]
    record_verified(plan, dest, todo)
    return got


def test_select_and_subsets() -> None:
    paths = sorted(_files())
    assert select(paths, patterns_for([], ["metadata"]), []) == [
        "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy",
        "dataset_metadata/currvarsv2_dm_july2021_expert_1_to_100.npy",
    ]
    assert select(paths, ["*expert*"], ["*.zip"]) == [
        "dataset_metadata/currvarsv2_dm_july2021_expert_1_to_100.npy"
    ]  # `*` matches across `/`
    assert select(paths, patterns_for([], ["dm_scraped"]), []) == [
        "hdf5_dm_july2021_1_to_200.tar",
        "hdf5_dm_july2021_201_to_400.tar",
    ]
    with pytest.raises(ValueError, match="unknown subset"):
        patterns_for([], ["dust3"])


def test_plan_resolves_revision_sizes_and_checksums(hub) -> None:
    fake, endpoint = hub
    plan = plan_ingest(REPO, "main", ["*.tar", "README.md"], endpoint=endpoint)
    assert plan.commit == fake.branches[REPO]["main"]
    by = {f.path: f for f in plan.files}
    assert by["hdf5_dm_july2021_1_to_200.tar"].size == 700_000
    assert by["hdf5_dm_july2021_1_to_200.tar"].sha256 is not None
    assert by["README.md"].sha256 is None  # not in LFS: verified by git blob id
    with pytest.raises(IngestError, match="no file matches"):
        plan_ingest(REPO, "main", ["*.parquet"], endpoint=endpoint)
    with pytest.raises(IngestError, match="nope"):
        plan_ingest(REPO, "nope", [], endpoint=endpoint)
    with pytest.raises(IngestError, match="someone/else"):
        plan_ingest("someone/else", "main", [], endpoint=endpoint)


def test_download_resumes_retries_and_verifies(hub, tmp_path: Path) -> None:
    fake, endpoint = hub
    big, small = "hdf5_dm_july2021_1_to_200.tar", "dataset_dm_expert_dust2.zip"
    fake.faults[big] = Faults(drop_after=300_000, unavailable=1)
    fake.faults[small] = Faults(corrupt=1)
    plan = plan_ingest(REPO, "main", [big, small, "README.md"], endpoint=endpoint)
    _fetch(plan, tmp_path, endpoint)
    files = _files()
    for p in (big, small, "README.md"):
        assert (tmp_path / p).read_bytes() == files[p]
    ranges = [r for m, path, r in fake.requests if path.endswith(big) and m == "GET"]
    resumed = [int(r[6:-1]) for r in ranges if r]
    assert None in ranges and resumed and 0 < resumed[0] <= 300_000  # resumed after the drop
    gets = [path for m, path, _ in fake.requests if m == "GET" and path.endswith(small)]
    assert len(gets) == 2  # the corrupted copy was refused and fetched again
    assert not list(tmp_path.rglob("*.part"))
    assert load_manifest(tmp_path)["commit"] == plan.commit


def test_persistent_corruption_fails_clearly_and_keeps_nothing(hub, tmp_path: Path) -> None:
    fake, endpoint = hub
    name = "dataset_dm_expert_dust2.zip"
    fake.faults[name] = Faults(corrupt=100)
    plan = plan_ingest(REPO, "main", [name], endpoint=endpoint)
    with pytest.raises(IngestError, match=f"{name}: checksum mismatch after 2 retries"):
        download_file(plan, plan.files[0], tmp_path, endpoint=endpoint, retries=2, backoff=0.01)
    assert not (tmp_path / name).exists()


def test_incremental_runs_transfer_only_what_changed(hub, tmp_path: Path) -> None:
    fake, endpoint = hub
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    assert len(_fetch(plan, tmp_path, endpoint)) == 7
    fake.requests.clear()
    assert _fetch(plan_ingest(REPO, "main", [], endpoint=endpoint), tmp_path, endpoint) == []
    assert not [r for r in fake.requests if "/resolve/" in r[1]]
    changed = _files()
    changed["dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy"] = b"new" * 20_000
    changed["hdf5_dm_july2021_401_to_600.tar"] = b"t" * 50_000
    new_sha = fake.commit(REPO, changed)
    plan2 = plan_ingest(REPO, "main", [], endpoint=endpoint)
    assert plan2.commit == new_sha
    got = _fetch(plan2, tmp_path, endpoint)
    assert sorted(p.name for p in got) == [
        "currvarsv2_dm_july2021_1_to_100.npy",
        "hdf5_dm_july2021_401_to_600.tar",
    ]
    manifest = load_manifest(tmp_path)
    assert manifest["commit"] == new_sha and len(manifest["files"]) == 8
    assert (tmp_path / MANIFEST).exists()


def test_disk_check_says_how_much_is_needed(hub, tmp_path: Path, monkeypatch) -> None:
    _, endpoint = hub
    plan = plan_ingest(REPO, "main", ["*.tar"], endpoint=endpoint)

    class Usage:
        free = 1000

    monkeypatch.setattr("tasks.hub.transfer.shutil.disk_usage", lambda p: Usage)
    with pytest.raises(IngestError, match=r"needs [0-9.]+ [kMG]?B more, only 1.0 kB free"):
        check_disk(tmp_path, pending(plan, tmp_path))


def test_unsafe_repo_paths_are_refused(hub, tmp_path: Path) -> None:
    fake, endpoint = hub
    fake.commit(REPO, {"../escape.bin": b"x" * 20})
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    with pytest.raises(IngestError, match="unsafe repo path"):
        pending(plan, tmp_path)


def test_an_html_answer_is_a_clear_error(hub) -> None:
    fake, endpoint = hub
    fake.html = True
    with pytest.raises(IngestError, match="not the expected JSON"):
        plan_ingest(REPO, "main", [], endpoint=endpoint)


def test_server_speaks_the_hub_protocol_to_the_real_client(hub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    fake, endpoint = hub
    api = HfApi(endpoint=endpoint, token=False)
    info = api.get_paths_info(
        REPO, ["README.md", "hdf5_dm_july2021_1_to_200.tar"], repo_type="dataset", revision="main"
    )
    assert sorted(i.path for i in info) == ["README.md", "hdf5_dm_july2021_1_to_200.tar"]
    url = hf_hub_url(
        REPO,
        "hdf5_dm_july2021_1_to_200.tar",
        repo_type="dataset",
        revision="main",
        endpoint=endpoint,
    )
    meta = get_hf_file_metadata(url, token=False)
    assert meta.commit_hash == fake.branches[REPO]["main"] and meta.size == 700_000
    assert meta.etag == next(i for i in info if i.path.endswith(".tar")).lfs.sha256
