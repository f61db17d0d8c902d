"""Reading members in place, and refusing unsafe ones with the archive and member named."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from storage.containers import MemberRef, UnsafeMemberError, iter_container


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _split(items):
    ok = [m for m in items if isinstance(m, MemberRef)]
    bad = [str(m) for m in items if isinstance(m, UnsafeMemberError)]
    return ok, bad


def test_tar_members_read_in_place_and_unsafe_ones_refused(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 40
    tar = _tar(
        tmp_path / "a.tar",
        [
            (_info("ok/hdf5_dm_july2021_1.hdf5"), payload),
            (_info("../x"), b"escape"),
            (_info("/etc/passwd"), b"abs"),
            (_info("link", tarfile.SYMTYPE, "/etc/passwd"), None),
            (_info("hard", tarfile.LNKTYPE, "ok/hdf5_dm_july2021_1.hdf5"), None),
            (_info("fifo", tarfile.FIFOTYPE), None),
            (_info("dir", tarfile.DIRTYPE), None),
            (_info("second.bin"), b"tail"),
        ],
    )
    ok, bad = _split(list(iter_container(tar)))
    assert [m.member for m in ok] == ["ok/hdf5_dm_july2021_1.hdf5", "second.bin"]
    with ok[0].open() as f:
        assert f.read() == payload
        f.seek(1000)
        assert f.read(5) == payload[1000:1005]
        f.seek(-3, io.SEEK_END)
        assert f.read() == payload[-3:]
    assert len(bad) == 5
    assert all(str(tar) in b for b in bad)
    assert any("'../x'" in b and "escapes" in b for b in bad)
    assert any("'/etc/passwd'" in b and "absolute" in b for b in bad)
    assert any("'link'" in b and "link" in b for b in bad)
    assert any("'hard'" in b for b in bad)
    assert any("'fifo'" in b and "not a regular file" in b for b in bad)


def test_truncated_tar_reports_the_member(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "t.tar", [(_info("a.bin"), b"a" * 5000), (_info("b.bin"), b"b" * 9000)])
    data = tar.read_bytes()
    tar.write_bytes(data[: 512 + 5120 + 512 + 4000])  # cut inside b.bin's data
    ok, bad = _split(list(iter_container(tar)))
    assert [m.member for m in ok] == ["a.bin"]
    assert len(bad) == 1 and "'b.bin'" in bad[0] and "truncated" in bad[0]


def test_compressed_tar_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "c.tar"
    with tarfile.open(path, "w:gz") as tf:
        info = _info("a.bin")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    _, bad = _split(list(iter_container(path)))
    assert len(bad) == 1 and "not an uncompressed tar" in bad[0] and str(path) in bad[0]


def test_zip_stored_deflated_and_unsafe_members(tmp_path: Path) -> None:
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("set/stored.bin"), b"S" * 3000, zipfile.ZIP_STORED)
        zf.writestr(zipfile.ZipInfo("set/deflated.bin"), b"D" * 3000, zipfile.ZIP_DEFLATED)
        zf.writestr("../evil.bin", b"x")
        link = zipfile.ZipInfo("set/link")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    ok, bad = _split(list(iter_container(path)))
    assert {m.member: m.compressed for m in ok} == {
        "set/stored.bin": False,
        "set/deflated.bin": True,
    }
    for m in ok:
        with m.open() as f:
            assert f.read() == (b"S" if "stored" in m.member else b"D") * 3000
    assert len(bad) == 2
    assert any("'../evil.bin'" in b for b in bad) and any("symlink" in b for b in bad)


def test_folder_walk_opens_archives_and_refuses_symlinks(tmp_path: Path) -> None:
    _tar(tmp_path / "a.tar", [(_info("x.bin"), b"x")])
    (tmp_path / "loose.bin").write_bytes(b"l")
    (tmp_path / "sneaky").symlink_to("/etc/passwd")
    ok, bad = _split(list(iter_container(tmp_path)))
    assert sorted(m.label for m in ok) == sorted(
        [f"{tmp_path}/a.tar:x.bin", f"{tmp_path}/loose.bin"]
    )
    assert len(bad) == 1 and "sneaky" in bad[0]
