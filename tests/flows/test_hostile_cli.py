"""Mistaken or hostile input on the command line and in registries: one line naming the thing.

Each case is a traceback or a misleading line found by a hostile probe (issue 32, items 11-13).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import fsspec
import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.registry import RegistryError, open_registry
from tests.hub_server import FakeHub
from tests.storage.test_registry import _export


def _one_line(r, code: int = 2) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output, r.output
    return r.output


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    f = tmp_path / "afile"
    f.write_text("a file, not a folder")
    return f


@pytest.mark.parametrize(
    "args",
    [["query", "{f}", "select 1"], ["verify", "{f}"], ["compact", "{f}"], ["synth", "{f}"]],
)
def test_a_file_where_a_folder_should_be_is_one_line(afile: Path, args: list[str]) -> None:
    r = CliRunner().invoke(app, [a.format(f=afile) for a in args])
    assert f"{afile}: not a folder" in _one_line(r)


def test_process_into_a_file_is_one_line(synth_tree: Path, afile: Path) -> None:
    r = CliRunner().invoke(app, ["process", str(synth_tree), str(afile)])
    assert f"{afile}: not a folder" in _one_line(r)


def test_a_binary_split_file_is_refused_before_anything_is_written(
    synth_tree: Path, tmp_path: Path
) -> None:
    binary = tmp_path / "split.bin"
    binary.write_bytes(Path("/bin/ls").read_bytes()[:2048])
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["process", str(synth_tree), str(out), "--split-file", str(binary)])
    assert f"{binary}: the split file is not UTF-8 text" in _one_line(r)
    assert not out.exists()


def test_export_dest_that_is_a_file_or_inside_out_is_refused(
    processed: Path, afile: Path, tmp_path: Path
) -> None:
    r = CliRunner().invoke(app, ["export-diamond", str(processed), str(afile)])
    assert f"{afile}: not a folder" in _one_line(r)
    out = tmp_path / "ds"
    shutil.copytree(processed, out)
    r = CliRunner().invoke(app, ["export-diamond", str(out), str(out / "diamond")])
    assert "inside the dataset" in _one_line(r)
    assert not (out / "diamond").exists()


def test_a_truncated_lease_names_its_file(processed: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    shutil.copytree(processed, out)
    (out / ".lease.json").write_text('{"owner": "x", "ho')
    r = CliRunner().invoke(app, ["compact", str(out)])
    assert f"{out}/.lease.json: not valid JSON" in _one_line(r)


# --- registries --------------------------------------------------------------------------------
def test_an_object_store_download_names_the_registry_and_takes_only_listed_files(
    bucket: str, tmp_path: Path
) -> None:
    reg = open_registry(f"{bucket}/reg", "cs")
    reg.register(_export(tmp_path / "e1", b"one"))
    fs = fsspec.filesystem("s3")
    fs.pipe_file(f"{bucket[5:]}/reg/cs/v1/planted.sh", b"rm -rf /")
    fs.pipe_file(f"{bucket[5:]}/reg/cs/v1/sub/x.bin", b"nested")
    got = reg.download(reg.resolve(), tmp_path / "pulled")
    assert sorted(p.name for p in got.iterdir()) == ["MANIFEST.json", "policy.json", "policy.onnx"]
    fs.pipe_file(f"{bucket[5:]}/reg/cs/v1/policy.onnx", b"two")  # same size, other bytes
    with pytest.raises(RegistryError) as err:
        reg.download(reg.resolve(), tmp_path / "again")
    assert f"{bucket}/reg/cs/v1/policy.onnx: sha256 does not match" in str(err.value)
    assert ".tmp" not in str(err.value) and not (tmp_path / "again").exists()


def test_concurrent_registers_into_the_hub_all_land(hub: FakeHub, tmp_path: Path) -> None:
    exports = [_export(tmp_path / f"e{i}", f"model {i}".encode()) for i in range(3)]
    results: dict[int, object] = {}

    def register(i: int) -> None:
        reg = open_registry("hf://team/policies", "cs")
        reg.sleep = lambda s: None  # retried at once: the test waits for no clock
        try:
            results[i] = reg.register(exports[i]).version
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=register, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [1, 2, 3], results
    index = open_registry("hf://team/policies", "cs").index()
    assert [v["version"] for v in index["versions"]] == [1, 2, 3]


# --- the agent's pull ----------------------------------------------------------------------------
def _pull_error(registry: str, dest: Path) -> str:
    from csdm_agent.artifact import VerificationError
    from csdm_agent.pull import pull

    with pytest.raises(VerificationError) as err:
        pull(registry, "cs", dest)
    return str(err.value)


def test_pull_tells_a_missing_folder_from_a_bad_index(tmp_path: Path) -> None:
    err = _pull_error(str(tmp_path / "nowhere"), tmp_path / "d")
    assert "no such registry folder" in err and "is not JSON" not in err
    err = _pull_error("s3://bucket/reg", tmp_path / "d")
    assert "folder or hf://owner/repo only" in err and "is not JSON" not in err
    (tmp_path / "reg" / "cs").mkdir(parents=True)
    err = _pull_error(str(tmp_path / "reg"), tmp_path / "d")
    assert "index.json: missing (is 'cs' registered here?)" in err
    (tmp_path / "reg" / "cs" / "index.json").write_text("{not json")
    assert "index.json is not JSON" in _pull_error(str(tmp_path / "reg"), tmp_path / "d")


def test_pull_from_the_hub_says_what_is_wrong(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    from csdm_agent.pull import pull

    assert "no such repo" in _pull_error("hf://team/missing", tmp_path / "d")
    reg = open_registry("hf://team/policies", "cs")
    reg.register(_export(tmp_path / "e1", b"one"))
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    err = _pull_error("hf://team/policies", tmp_path / "d")
    assert "HF_TOKEN" in err and "hf_wrong" not in err and "is not JSON" not in err
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    art = pull("hf://team/policies", "cs", tmp_path / "d")
    assert json.loads((art.folder / "MANIFEST.json").read_text())["files"]
