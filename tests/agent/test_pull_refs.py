"""`csdm-agent pull` on a registry whose index was edited by hand: one line, nothing pulled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from csdm_agent.artifact import VerificationError
from csdm_agent.pull import pull

from storage.registry import open_registry
from tests.storage.test_registry import HOSTILE_INDEXES, _edit_index, _export

AGENT = str(Path(sys.executable).with_name("csdm-agent"))


@pytest.mark.parametrize("case", HOSTILE_INDEXES)
def test_pull_refuses_a_hand_edited_index(tmp_path: Path, case: str) -> None:
    open_registry(tmp_path / "reg", "cs").register(
        _export(tmp_path / "e", b"one"), alias="production"
    )
    edit, _ = HOSTILE_INDEXES[case]
    _edit_index(tmp_path / "reg", edit)
    for kw in ({"alias": "production"}, {}):
        with pytest.raises(VerificationError, match=r"index\.json") as err:
            pull(str(tmp_path / "reg"), "cs", tmp_path / "dest", **kw)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").rglob("v*"))


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    open_registry(tmp_path / "reg", "cs").register(
        _export(tmp_path / "e", b"one"), alias="production"
    )
    _edit_index(tmp_path / "reg", HOSTILE_INDEXES["alias to a missing version"][0])
    r = subprocess.run(
        [
            AGENT,
            "pull",
            "--registry",
            str(tmp_path / "reg"),
            "--name",
            "cs",
            "--alias",
            "production",
            "--dest",
            str(tmp_path / "dest"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "points alias 'production' at '7'" in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1
    assert json.loads((tmp_path / "reg" / "cs" / "index.json").read_text())["aliases"]
