"""An archive commits all or nothing: damage anywhere in it withholds every episode it holds."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from storage.containers import ArchiveDamagedError, MemberRef, UnsafeMemberError, iter_container
from storage.dataset import open_dataset
from storage.fs import Root
from storage.records import FormatError, PipelineState
from tasks.params import ProcessParams
from tasks.process_source import process_source
from tasks.source import list_source
from tests.hostile_archives import lying_tar

TAR = "hdf5_dm_july2021_1_to_3.tar"


def _good(synth_tree: Path, name: str) -> bytes:
    with tarfile.open(synth_tree / TAR) as tf:
        return tf.extractfile(name).read()


@pytest.fixture
def damaged_tree(synth_tree: Path, tmp_path: Path) -> Path:
    """The synthetic tree with its first tar replaced by one whose second member lies."""
    src = tmp_path / "src"
    shutil.copytree(synth_tree, src)
    good = _good(synth_tree, "hdf5_dm_july2021_1.hdf5")
    (src / TAR).write_bytes(
        lying_tar([("hdf5_dm_july2021_1.hdf5", good)], "hdf5_dm_july2021_2.hdf5", 10**12, 1 << 20)
    )
    return src


def test_damage_and_refusal_are_told_apart(tmp_path: Path) -> None:
    liar = tmp_path / "l.tar"
    liar.write_bytes(lying_tar([("a.bin", b"a" * 600)], "b.bin", 10**12, 4096))
    items = list(iter_container(liar))
    assert isinstance(items[0], MemberRef) and items[0].member == "a.bin"
    assert isinstance(items[1], ArchiveDamagedError)
    assert str(items[1]) == (
        f"{liar}: member 'b.bin' is truncated (1000000000000 bytes declared, "
        "4096 present); re-download the archive"
    )
    z = tmp_path / "z.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.bin", b"A" * 3000)
        zf.writestr("b.bin", b"B" * 3000)
    z.write_bytes(z.read_bytes()[:3200])  # cut inside b.bin: its directory is gone too
    (bad,) = list(iter_container(z))
    assert isinstance(bad, ArchiveDamagedError) and "not a readable zip" in str(bad)
    link = tmp_path / "k.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("hdf5_dm_july2021_9.hdf5")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    (refused,) = list(iter_container(link))
    assert isinstance(refused, UnsafeMemberError)
    assert not isinstance(refused, ArchiveDamagedError)  # a refusal leaves the rest usable


def test_listing_withholds_every_episode_of_a_damaged_archive(damaged_tree: Path) -> None:
    listing = list_source(str(damaged_tree))
    names = [e.episode.name for e in listing.episodes]
    assert "dm_july2021_1" not in names  # it parses, but its archive does not
    assert "dm_july2021_4" in names
    by_member = {p.member: p.reason for p in listing.problems}
    assert by_member["hdf5_dm_july2021_1.hdf5"] == (
        f"{damaged_tree / TAR}:hdf5_dm_july2021_1.hdf5: not stored, its archive is damaged "
        "(member 'hdf5_dm_july2021_2.hdf5' is truncated (1000000000000 bytes declared, 1048576 "
        "present); re-download the archive); none of the archive's episodes are stored until it "
        "reads whole"
    )
    assert "truncated" in by_member["hdf5_dm_july2021_2.hdf5"]


def test_process_stores_none_of_a_damaged_archive_and_a_rerun_fails_it_again(
    damaged_tree: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    for _ in range(2):
        summary, _records = process_source(Root(str(damaged_tree)), Root(str(out)), ProcessParams())
        ds = open_dataset(str(out))
        assert not [e for e in ds.episodes if e in ("dm_july2021_1", "dm_july2021_2")]
        rows = set(ds.catalog.to_table(["episode"]).column("episode").to_pylist())
        assert "dm_july2021_1" not in rows and "dm_july2021_4" in rows
        failed = ds.files.to_pandas().query("status == 'failed'").set_index("episode")
        assert sorted(failed.index) == ["dm_july2021_1", "dm_july2021_2"]
        assert "its archive is damaged" in failed.loc["dm_july2021_1", "reject_reason"]
        assert summary.failed == 2


def test_a_mended_archive_is_stored_whole_and_its_failures_forgotten(
    damaged_tree: Path, synth_tree: Path, tmp_path: Path
) -> None:
    out = Root(str(tmp_path / "out"))
    process_source(Root(str(damaged_tree)), out, ProcessParams())
    shutil.copy(synth_tree / TAR, damaged_tree / TAR)
    summary, _ = process_source(Root(str(damaged_tree)), out, ProcessParams())
    assert summary.failed == 0 and summary.stored - summary.skipped == 3  # the others were done
    ds = open_dataset(out)
    assert {"dm_july2021_1", "dm_july2021_2", "dm_july2021_3"} <= set(ds.episodes)
    assert (ds.files.to_pandas().status == "stored").all()


def test_odd_names_in_a_folder_and_in_a_tar_are_reported(synth_tree: Path, tmp_path: Path) -> None:
    good = _good(synth_tree, "hdf5_dm_july2021_1.hdf5")
    src = tmp_path / "src"
    src.mkdir()
    (src / "hdf5_dm_july2021_١.hdf5").write_bytes(good)  # an Arabic-Indic digit one
    (src / "README.md").write_text("not an episode")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("hdf5_dm_july2021_2.hdf5", "hdf5_dm_july2021_3.hdf5\n", "HDF5_dm_4.hdf5"):
            info = tarfile.TarInfo(name)
            info.size = len(good)
            tf.addfile(info, io.BytesIO(good))
    (src / TAR).write_bytes(buf.getvalue())
    listing = list_source(str(src))
    assert [e.episode.name for e in listing.episodes] == ["dm_july2021_2"]
    reasons = sorted(p.reason for p in listing.problems)
    assert len(reasons) == 3 and all("\n" not in r for r in reasons)
    assert any(
        r.endswith("'HDF5_dm_4.hdf5' is not an episode name (hdf5_{stub}_{n}.hdf5, ASCII); skipped")
        for r in reasons
    )
    assert any("'hdf5_dm_july2021_3.hdf5\\n' holds control" in r for r in reasons)
    assert any("'hdf5_dm_july2021_\\u0661.hdf5'" in r or "١" in r for r in reasons)


def test_pipeline_state_is_typed_keeps_failures_and_reads_the_old_form() -> None:
    old = PipelineState.read({"a.tar": "sha-a", "b.tar": "sha-b"}, "x/pipeline.json")
    assert old.done == {"a.tar": "sha-a", "b.tar": "sha-b"} and old.failed == {}
    old.mark("b.tar", "sha-b", "b.tar: unreadable tar")
    assert not old.is_done("b.tar", "sha-b") and old.is_done("a.tar", "sha-a")
    assert not old.is_done("a.tar", "sha-other")  # a changed archive is redone
    d = old.to_dict()
    assert d == {
        "format_version": 1,
        "done": {"a.tar": "sha-a"},
        "failed": {"b.tar": {"checksum": "sha-b", "reason": "b.tar: unreadable tar"}},
    }
    again = PipelineState.read(d, "x/pipeline.json")
    again.mark("b.tar", "sha-b")
    assert again.done == {"a.tar": "sha-a", "b.tar": "sha-b"} and again.failed == {}
    with pytest.raises(FormatError, match=r"x/pipeline\.json: pipeline state format version 9"):
        PipelineState.read({"format_version": 9}, "x/pipeline.json")
