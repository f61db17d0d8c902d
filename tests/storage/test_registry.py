"""The local model registry: versions, aliases, immutability and verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.registry import Registry, RegistryError, RootSite, file_entry, open_registry


def _export(folder: Path, payload: bytes) -> Path:
    """A minimal export folder: a model file and a descriptor listing its checksum."""
    folder.mkdir(parents=True)
    (folder / "policy.onnx").write_bytes(payload)
    d = {
        "format": "csdm-policy",
        "format_version": 1,
        "model": "policy.onnx",
        "opset": 17,
        "action_space": {},
        "fps": 16,
        "input": {},
        "state": [],
        "outputs": [],
        "files": {"policy.onnx": file_entry(folder / "policy.onnx")},
    }
    (folder / "policy.json").write_text(json.dumps(d))
    return folder


def test_versions_aliases_and_latest(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "reg", "cs")
    assert isinstance(reg, Registry) and isinstance(reg.site, RootSite)
    with pytest.raises(RegistryError, match="no versions registered yet"):
        reg.resolve()
    v1 = reg.register(_export(tmp_path / "e1", b"one"), alias="production")
    v2 = reg.register(_export(tmp_path / "e2", b"two"))
    assert (v1.version, v2.version) == (1, 2)
    assert reg.resolve().version == 2
    assert reg.resolve(alias="production").version == 1
    assert (Path(reg.resolve(version=1).location) / "policy.onnx").read_bytes() == b"one"
    reg.set_alias("production", 2)
    assert reg.resolve(alias="production").version == 2
    with pytest.raises(RegistryError, match="no version 7"):
        reg.resolve(version=7)
    with pytest.raises(RegistryError, match="no alias 'staging'"):
        reg.resolve(alias="staging")
    index = json.loads((tmp_path / "reg" / "cs" / "index.json").read_text())
    assert [v["version"] for v in index["versions"]] == [1, 2]
    manifest = json.loads((tmp_path / "reg" / "cs" / "v1" / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"policy.onnx", "policy.json"}
    # versions are immutable: read-only files, never rewritten by later registrations
    assert (tmp_path / "reg" / "cs" / "v1" / "policy.onnx").stat().st_mode & 0o222 == 0


def test_tampering_is_refused(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "reg", "cs")
    e = _export(tmp_path / "e", b"weights")
    (e / "policy.onnx").write_bytes(b"weightz")  # the export no longer matches its descriptor
    with pytest.raises(RegistryError, match=r"policy\.onnx: sha256 does not match policy\.json"):
        reg.register(e)
    assert not (tmp_path / "reg" / "cs" / "v1").exists()
    v = reg.register(_export(tmp_path / "ok", b"weights"))
    target = Path(v.location) / "policy.onnx"
    target.chmod(0o644)
    target.write_bytes(b"evil!!!")
    with pytest.raises(
        RegistryError, match=r"v1/policy\.onnx: sha256 does not match MANIFEST\.json"
    ):
        reg.resolve()
    (Path(v.location) / "policy.json").chmod(0o644)
    (Path(v.location) / "policy.json").unlink()
    with pytest.raises(RegistryError, match=r"policy\.json: listed in MANIFEST\.json but missing"):
        reg.resolve()


def test_bad_names_and_incomplete_exports(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="one path component"):
        open_registry(tmp_path, "../x")
    with pytest.raises(RegistryError, match="not a complete export"):
        open_registry(tmp_path / "reg", "cs").register(tmp_path)
    with pytest.raises(RegistryError, match="expected hf://owner/repo"):
        open_registry("hf://justone", "cs")


def test_a_consistent_rewrite_and_an_interrupted_registration(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "reg", "cs")
    v = Path(reg.register(_export(tmp_path / "e", b"weights")).location)
    for f in v.iterdir():
        f.chmod(0o644)
    # model, descriptor and manifest rewritten to agree with each other: the index disagrees
    (v / "policy.onnx").write_bytes(b"other weights")
    d = json.loads((v / "policy.json").read_text())
    d["files"]["policy.onnx"] = file_entry(v / "policy.onnx")
    (v / "policy.json").write_text(json.dumps(d))
    files = {n: file_entry(v / n) for n in ("policy.onnx", "policy.json")}
    (v / "MANIFEST.json").write_text(json.dumps({"files": files}))
    with pytest.raises(RegistryError, match=r"MANIFEST\.json: does not match the registry index"):
        reg.resolve()
    # a crash between the rename and the index write left v2 unlisted: the next one is v3
    (tmp_path / "reg" / "cs" / "v2").mkdir()
    assert reg.register(_export(tmp_path / "e3", b"three")).version == 3
    assert not list((tmp_path / "reg" / "cs").glob(".staging-*"))
    assert reg.resolve().version == 3


def test_the_same_export_twice_is_one_version(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "reg", "cs")
    e = _export(tmp_path / "e", b"weights")
    assert reg.register(e).version == 1
    again = reg.register(e, alias="production")
    assert (again.version, again.existing) == (1, True)
    assert reg.resolve(alias="production").version == 1
    assert [v["version"] for v in reg.index()["versions"]] == [1]
    copy = _export(tmp_path / "copy", b"weights")  # the same model file from elsewhere
    assert reg.register(copy).existing
    assert not (tmp_path / "reg" / "cs" / "v2").exists()


def _edit_index(reg: Path, edit) -> None:
    p = reg / "cs" / "index.json"
    index = json.loads(p.read_text())
    edit(index)
    p.write_text(json.dumps(index))


# hand edits of index.json, each refused in one line before any path is built from it
# a table: case -> (edit, message), one row each
HOSTILE_INDEXES = {
    "alias to a missing version": (lambda i: i["aliases"].update(production=7),
                                   "points alias 'production' at '7'"),
    "a path for a version": (lambda i: i["versions"][0].update(version="../../../tmp"),
                             "lists version '../../../tmp'"),
    "a boolean version": (lambda i: i["versions"][0].update(version=True), "lists version 'True'"),
    "a repeated version": (lambda i: i["versions"].append(dict(i["versions"][0])),
                           "lists version '1'"),
    "no versions list": (lambda i: i.update(versions={"1": {}}), "no list of versions"),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE_INDEXES)
def test_hand_edited_indexes_are_refused_in_one_line(tmp_path: Path, case: str) -> None:
    reg = open_registry(tmp_path / "reg", "cs")
    reg.register(_export(tmp_path / "e1", b"one"), alias="production")
    edit, message = HOSTILE_INDEXES[case]
    _edit_index(tmp_path / "reg", edit)
    for call in (
        lambda: reg.resolve(alias="production"),
        lambda: reg.resolve(),
        lambda: reg.register(_export(tmp_path / "e2", b"two")),
    ):
        with pytest.raises(RegistryError, match=r"index\.json") as err:
            call()
        assert message in str(err.value) and "\n" not in str(err.value)
        assert str(tmp_path / "reg" / "cs") in str(err.value)
    assert not (tmp_path / "reg" / "cs" / "v2").exists()


def test_aliases_are_names(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "reg", "cs")
    v = reg.register(_export(tmp_path / "e1", b"one"))
    for bad in ("../x", "", "a/b", "1st", "é", "x" * 65, "prod\n"):
        with pytest.raises(RegistryError, match="an alias is a name"):
            reg.register(
                _export(tmp_path / f"e-{len(bad)}-{ord(bad[:1] or 'a')}", b"two"), alias=bad
            )
        with pytest.raises(RegistryError, match="an alias is a name"):
            reg.set_alias(bad, v.version)
    assert [x["version"] for x in reg.index()["versions"]] == [1] and reg.index()["aliases"] == {}
    reg.set_alias("prod-2.b_c", 1)
    assert reg.resolve(alias="prod-2.b_c").version == 1


class FakeTime:
    """A clock that only moves when slept on; `on_sleep` runs at each sleep."""

    def __init__(self, on_sleep=None) -> None:
        self.now, self.slept, self.on_sleep = 1_000_000.0, [], on_sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s
        if self.on_sleep:
            self.on_sleep(len(self.slept))


def test_an_object_store_registration_waits_for_a_held_lease(tmp_path: Path) -> None:
    from storage.fs import root_of
    from storage.lease import DatasetLease, LeaseHeldError, LeaseSite

    site = LeaseSite(root_of(str(tmp_path / "reg")), "cs/.lease.json")
    other = DatasetLease(site, renew=False)
    other.acquire()  # another registration, mid-way
    t = FakeTime(lambda n: other.release() if n == 5 else None)
    reg = open_registry(str(tmp_path / "reg"), "cs", lease_wait=60, clock=t.clock, sleep=t.sleep)
    assert reg.register(_export(tmp_path / "e1", b"one")).version == 1
    assert t.slept == [1.0] * 5  # it polled until the holder finished, then registered
    # a holder that stays: after the bound, one line naming it and the wait
    other = DatasetLease(site, renew=False)
    other.acquire()
    t = FakeTime()
    reg = open_registry(str(tmp_path / "reg"), "cs", lease_wait=10, clock=t.clock, sleep=t.sleep)
    with pytest.raises(LeaseHeldError, match=rf"being written by run {other.owner} \(pid") as err:
        reg.register(_export(tmp_path / "e2", b"two"))
    assert "(waited 10 s)" in str(err.value) and sum(t.slept) == 10
    assert [v["version"] for v in reg.index()["versions"]] == [1]
