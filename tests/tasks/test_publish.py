"""`csdm publish` against the local Hub stand-in, with the real huggingface_hub client."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from storage.dataset import DatasetFormatError, open_dataset
from storage.hub_repo import HubError, parse_target
from tasks.publish import PUBLISHED, CommitPacer, HubLimits, publish
from tests.conftest import process_plain
from tests.hub_server import FakeHub

URL = "hf://datasets/team/cs-dm"
LATER = "hdf5_dm_july2021_4_to_6.tar"  # held back from the first version, added by a refresh


def _source(synth_tree: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(synth_tree, src)
    (src / LATER).rename(tmp_path / LATER)
    return src


def _state(ds) -> dict:
    """What a reader sees: every episode's frames digest and the catalog's rows."""
    frames = {
        e: hashlib.sha256(ds.frames(e, 0, ds.n_frames(e)).tobytes()).hexdigest()
        for e in ds.episodes
    }
    files = ds.files.select(["episode", "split", "keep", "n_frames"]).to_pylist()
    n = ds.catalog.to_table(columns=["episode"]).num_rows
    return {"frames": frames, "files": sorted(files, key=lambda r: r["episode"]), "rows": n}


def _head_files(hub: FakeHub) -> dict[str, bytes]:
    repo = "team/cs-dm"
    return hub.repos[repo][hub.branches[repo]["main"]]


def test_publish_read_back_republish_refresh_and_readers_mid_publish(
    hub: FakeHub, synth_tree: Path, tmp_path: Path
) -> None:
    src = _source(synth_tree, tmp_path)
    out = process_plain(src, tmp_path / "out")
    (out / ".cache" / "metadata").mkdir(parents=True, exist_ok=True)
    (out / ".cache" / "metadata" / "x.json").write_text("{}")  # never published
    (out / "frames.zarr" / ".stray.tmp").write_bytes(b"half")
    target, _ = parse_target(URL)
    s = publish(out, target, limits=HubLimits(files_per_commit=10))
    assert s.commits == len(hub.commits) >= 3 and s.unchanged == 0
    files = _head_files(hub)
    assert not [k for k in files if k.startswith(".cache") or k.endswith(".tmp")]
    assert {"README.md", "LICENSE.md", "manifest.json", "catalog/index.json"} <= set(files)
    for key, data in files.items():  # every object bit-exact
        if key not in ("README.md", "LICENSE.md", ".gitattributes", PUBLISHED):
            assert data == (out / key).read_bytes(), key
    # the objects that commit the dataset came in the last commit, after every frame
    last = hub.commits[-1]
    earlier = hub.repos["team/cs-dm"][hub.commits[-2][1]]
    assert "manifest.json" not in earlier and "catalog/index.json" not in earlier
    assert last[1] == s.commit
    old = _state(open_dataset(out))
    remote = open_dataset(URL)
    assert remote.commit == s.commit and _state(remote) == old

    # an unchanged dataset: nothing uploaded, no commit
    before, puts = len(hub.commits), sum(1 for r in hub.requests if r[0] == "PUT")
    again = publish(out, target)
    assert (again.commits, again.uploaded, again.commit) == (0, 0, s.commit)
    assert len(hub.commits) == before
    assert sum(1 for r in hub.requests if r[0] == "PUT") == puts

    # a refresh adds three episodes; a reader between any two commits sees old or new
    (tmp_path / LATER).rename(src / LATER)
    process_plain(src, out)
    new = _state(open_dataset(out))
    assert new != old and set(old["frames"]) < set(new["frames"])
    seen = []

    class ReadingPacer(CommitPacer):
        def __call__(self) -> None:
            seen.append(_state(open_dataset(URL)))
            super().__call__()

    lfs_before = set(hub.lfs)
    s2 = publish(out, target, limits=HubLimits(files_per_commit=4), pacer=ReadingPacer(100))
    seen.append(_state(open_dataset(URL)))
    assert s2.commits >= 3 and len(seen) == s2.commits + 1
    assert all(x == old for x in seen[:-1]) and seen[-1] == new
    # only what changed went up: the refreshed catalog and the three new episodes' objects
    uploaded = set(hub.lfs) - lfs_before
    shard = (out / "frames.zarr" / "dm_july2021_1" / "c").rglob("*")
    assert not {hashlib.sha256(p.read_bytes()).hexdigest() for p in shard if p.is_file()} & uploaded
    assert s2.unchanged > 0 and s2.uploaded < len(_head_files(hub))
    assert set(_head_files(hub)) - {".gitattributes", "README.md", "LICENSE.md", PUBLISHED} == {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and ".cache" not in p.parts and not p.name.startswith(".")
    }
    # a revision pinned before the refresh still reads the old dataset
    assert _state(open_dataset(f"{URL}@{s.commit}")) == old


def test_an_interrupted_publish_resumes(hub: FakeHub, processed: Path, tmp_path: Path) -> None:
    target, _ = parse_target(URL)
    hub.fail_commits.append(1)  # the second commit fails: the first batch is in
    with pytest.raises(HubError, match="run the publish again to resume") as err:
        publish(processed, target, limits=HubLimits(files_per_commit=8))
    assert "\n" not in str(err.value) and "hf_test_token" not in str(err.value)
    with pytest.raises(DatasetFormatError, match=r"manifest\.json: missing"):
        open_dataset(URL)  # half-published: no dataset yet, never a partial one
    first = set(_head_files(hub))
    s = publish(processed, target, limits=HubLimits(files_per_commit=8))
    assert s.unchanged == len(first) - 1  # what the first batch sent is not sent again
    assert _state(open_dataset(URL)) == _state(open_dataset(processed))


def test_tokens_and_namespaces_are_refused_in_one_line(
    hub: FakeHub, processed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, _ = parse_target(URL)
    monkeypatch.setenv("HF_TOKEN", "hf_read_token")
    with pytest.raises(HubError, match="the token is read-only; publishing needs a write token"):
        publish(processed, target)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    foreign, _ = parse_target("hf://datasets/someone-else/cs")
    with pytest.raises(HubError, match="cannot write to namespace 'someone-else'") as err:
        publish(processed, foreign)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError, match="the Hub refused the token"):
        publish(processed, target)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hugging Face token; set HF_TOKEN"):
        publish(processed, target)
    assert "team/cs-dm" not in hub.repos and "someone-else/cs" not in hub.repos
    assert "hf_test_token" not in str(err.value)


def test_up_front_refusals(hub: FakeHub, processed: Path, tmp_path: Path) -> None:
    target, _ = parse_target(URL)
    with pytest.raises(HubError, match=r"\.zarr: 9 entries, more than the Hub's 3 per folder"):
        publish(processed, target, limits=HubLimits(entries_per_folder=3))
    out = tmp_path / "out"
    shutil.copytree(processed, out)
    (out / "catalog" / "_episodes").mkdir(exist_ok=True)
    (out / "catalog" / "_episodes" / "x.json").write_text("{}")
    with pytest.raises(HubError, match="since the last compaction; run `csdm compact"):
        publish(out, target)
    assert not hub.commits
    with pytest.raises(HubError, match="expected hf://datasets/ORG/NAME"):
        parse_target("hf://team/cs")


def test_the_card_parses_and_points_the_viewer_at_the_catalog(
    hub: FakeHub, processed: Path
) -> None:
    target, _ = parse_target(URL)
    publish(processed, target, private=True)
    assert "team/cs-dm" in hub.private
    files = _head_files(hub)
    text = files["README.md"].decode()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "other" and meta["license_link"] in files
    assert "commercial" in files["LICENSE.md"].decode() and "commercial" in text
    configs = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert set(configs) == {"frames", "files"}
    for name, data_files in configs.items():
        matched = {k for k in files for d in data_files if fnmatch.fnmatch(k, d["path"])}
        index = json.loads((processed / "catalog" / "index.json").read_text())
        want = set(index["frames_parts"] if name == "frames" else [index["files_part"]])
        assert matched == want and matched
    ds = open_dataset(processed)
    frames = sum(ds.files.column("n_frames").to_pylist())
    assert f"{frames:,} frames" in text and "hf://datasets/team/cs-dm" in text


def test_reading_in_place_records_the_commit(hub: FakeHub, processed: Path, tmp_path: Path) -> None:
    from tests.training.test_train import _cfg
    from training.evaluate import evaluate, resolve_model
    from training.train import train

    target, _ = parse_target(URL)
    s = publish(processed, target)
    train(URL, tmp_path / "run", _cfg(2), quiet=True)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == {"root": URL, "commit": s.commit}
    report = evaluate([resolve_model(str(tmp_path / "run"))], f"{URL}@main", split="test")
    assert report.data_commit == s.commit
    window = open_dataset(URL).frames(open_dataset(URL).episodes[0], 3, 99)
    assert np.array_equal(
        window, open_dataset(processed).frames(open_dataset(processed).episodes[0], 3, 99)
    )


def test_a_hub_dataset_is_read_only_and_a_missing_one_is_one_line(hub: FakeHub) -> None:
    from storage.fs import Root, StorageAccessError

    root = Root(f"{URL}@main")
    for write in (lambda: root.put_bytes("x", b"1"), lambda: root.delete("x")):
        with pytest.raises(StorageAccessError, match=r"read-only to csdm; .* `csdm publish` it"):
            write()
    with pytest.raises(DatasetFormatError, match="no such dataset repo") as err:
        open_dataset("hf://datasets/team/missing")
    assert "\n" not in str(err.value) and not hub.commits
