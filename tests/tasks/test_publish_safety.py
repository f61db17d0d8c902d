"""Publishing never deletes what csdm did not write, nor copies a local loss to the Hub."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from storage.dataset import open_dataset
from storage.hub_repo import HubError, api, parse_target
from tasks.publish import PUBLISHED, publish
from tests.hub_server import FakeHub

REPO = "team/multi"


def _head(hub: FakeHub) -> dict[str, bytes]:
    return hub.repos[REPO][hub.branches[REPO]["main"]]


def _foreign(path: str = "keep/important.txt") -> None:
    """Someone else's file, committed to the repo before csdm publishes there."""
    hf = api("hf_test_token")
    hf.create_repo(REPO, repo_type="dataset", exist_ok=True)
    hf.upload_file(
        path_or_fileobj=b"not csdm's", path_in_repo=path, repo_id=REPO, repo_type="dataset"
    )


@pytest.fixture
def out(processed: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(processed, dest)
    return dest


def test_a_folder_in_the_repo_is_honoured_and_nothing_outside_it_touched(
    hub: FakeHub, out: Path
) -> None:
    _foreign()
    _foreign("README.md")
    target, under = parse_target(f"hf://datasets/{REPO}/csdm-sub")
    assert under == "csdm-sub"
    s = publish(out, target, under=under)
    files = _head(hub)
    assert files["keep/important.txt"] == b"not csdm's" and files["README.md"] == b"not csdm's"
    assert "manifest.json" not in files and "csdm-sub/manifest.json" in files
    assert not [k for k in files if not k.startswith(("csdm-sub/", "keep/", "README.md", "."))]
    assert (files["csdm-sub/manifest.json"]) == (out / "manifest.json").read_bytes()
    remote = open_dataset(f"hf://datasets/{REPO}/csdm-sub")
    ep = remote.episodes[0]
    assert (remote.frames(ep, 0, 8) == open_dataset(out).frames(ep, 0, 8)).all()
    # a later publish that deletes (an episode withdrawn) deletes only csdm's own objects
    record = json.loads(files[f"csdm-sub/{PUBLISHED}"])
    assert "manifest.json" in record["keys"] and "keep/important.txt" not in record["keys"]
    shutil.rmtree(out / "actions.zarr" / ep)
    (out / "catalog" / "views.json").write_text(json.dumps({"views": []}))
    again = publish(out, target, under=under, allow_deletions=True)
    files = _head(hub)
    assert again.deleted >= 1 and f"csdm-sub/actions.zarr/{ep}/zarr.json" not in files
    assert files["keep/important.txt"] == b"not csdm's" and s.commit != again.commit


def test_at_the_repo_root_files_csdm_did_not_publish_survive(hub: FakeHub, out: Path) -> None:
    _foreign()
    target, _ = parse_target(f"hf://datasets/{REPO}")
    publish(out, target)
    publish(out, target)  # a republish, with the record of what it put there
    assert _head(hub)["keep/important.txt"] == b"not csdm's"


def test_a_local_loss_is_refused_before_it_reaches_the_hub(hub: FakeHub, out: Path) -> None:
    target, _ = parse_target(f"hf://datasets/{REPO}")
    publish(out, target)
    before = dict(_head(hub))
    ep = open_dataset(out).episodes[1]
    (shard,) = [
        p for p in (out / "frames.zarr" / ep).rglob("*") if p.is_file() and p.name != "zarr.json"
    ]
    shard.unlink()
    with pytest.raises(HubError, match=r"shard missing.*csdm verify .* --repair.*--allow-del"):
        publish(out, target)
    assert _head(hub) == before  # nothing deleted, nothing committed
    remote = open_dataset(f"hf://datasets/{REPO}")
    assert remote.frames(ep, 0, 60).shape[0] == 60  # readers of the Hub copy still read it


def test_an_expired_lease_does_not_block_a_publish_and_a_live_one_does(
    hub: FakeHub, out: Path
) -> None:
    lease = {
        "format_version": 1,
        "owner": "x",
        "host": "h",
        "pid": 1,
        "acquired": 0.0,
        "expires": 120.0,  # 1970
    }
    (out / ".lease.json").write_text(json.dumps(lease))
    target, _ = parse_target(f"hf://datasets/{REPO}")
    publish(out, target)
    lease["expires"] = time.time() + 3600
    (out / ".lease.json").write_text(json.dumps(lease))
    with pytest.raises(HubError, match=r"run x \(pid 1 on h\).*holds it"):
        publish(out, target)


@pytest.mark.parametrize(
    "url", ["hf://datasets/team/../x", "hf://datasets/team/x/../y", "hf://datasets/-team/x"]
)
def test_a_malformed_target_is_refused_before_any_work(url: str) -> None:
    with pytest.raises(HubError, match=r"not a valid repo id|may not hold '\.\.'"):
        parse_target(url)


def test_an_old_huggingface_hub_is_one_line_naming_the_fix(monkeypatch) -> None:
    """A reader in DIAMOND's environment (huggingface_hub 0.17) reads folders, not hf://."""
    import huggingface_hub

    from storage.dataset import DatasetFormatError

    monkeypatch.setattr(huggingface_hub, "__version__", "0.17.2")
    with pytest.raises(DatasetFormatError, match=r"needs huggingface_hub>=2\.0, .* has 0\.17\.2"):
        open_dataset("hf://datasets/team/cs-dm")
