"""The registry in a Hugging Face model repo, against the local Hub-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.registry import RegistryError, open_registry
from storage.registry_hub import HubSite
from tests.hub_server import FakeHub
from tests.storage.test_registry import _export


def test_versions_are_commits_with_tags(hub: FakeHub, tmp_path: Path) -> None:
    reg = open_registry("hf://team/policies", "cs")
    assert isinstance(reg.site, HubSite)
    v1 = reg.register(_export(tmp_path / "e1", b"one"), alias="production")
    v2 = reg.register(_export(tmp_path / "e2", b"two"))
    assert (v1.version, v2.version) == (1, 2)
    assert v2.location == "hf://team/policies/cs/v2"
    refs = hub.branches["team/policies"]
    assert {"cs-v1", "cs-v2", "main"} <= set(refs) and refs["cs-v1"] != refs["cs-v2"]
    head = hub.repos["team/policies"][refs["main"]]
    assert {"cs/index.json", "cs/v1/policy.onnx", "cs/v2/MANIFEST.json"} <= set(head)
    index = json.loads(head["cs/index.json"])
    assert index["aliases"] == {"production": 1} and len(index["versions"]) == 2
    assert reg.resolve().version == 2 and reg.resolve(alias="production").version == 1
    got = reg.download(reg.resolve(alias="production"), tmp_path / "pulled")
    assert (got / "policy.onnx").read_bytes() == b"one"
    reg.set_alias("production", 2)
    assert reg.resolve(alias="production").version == 2
    # a version's tag pins its files even after later commits
    assert (reg.download(v1, tmp_path / "again") / "policy.onnx").read_bytes() == b"one"


def test_a_tampered_download_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    reg = open_registry("hf://team/policies", "cs")
    v = reg.register(_export(tmp_path / "e1", b"one"))
    sha = hub.branches["team/policies"]["cs-v1"]
    hub.repos["team/policies"][sha]["cs/v1/policy.onnx"] = b"two"  # altered on the server
    with pytest.raises(RegistryError, match="sha256 does not match"):
        reg.download(v, tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()  # nothing unverified is left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]
