"""Safe, extraction-free access to files inside uncompressed tars and zips."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_ZIP_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes, names/extra lengths last


class UnsafeMemberError(ValueError):
    """An archive member that must not be read (path escape, link, device, truncated)."""


@dataclass(frozen=True)
class MemberRef:
    """A readable file: a loose file, or a byte range inside an archive.

    Small and picklable, so it can travel between processes in place of the data.
    """

    container: str
    member: str | None = None  # None for a loose file
    offset: int = 0
    size: int = -1  # -1: the whole loose file
    compressed: bool = False  # a deflated zip member: read through zipfile

    @property
    def label(self) -> str:
        """Human-readable location, `archive.tar:member` or the file path."""
        return f"{self.container}:{self.member}" if self.member else self.container

    @property
    def name(self) -> str:
        """Base name of the file or member."""
        return PurePosixPath(self.member).name if self.member else Path(self.container).name

    def fingerprint(self) -> dict:
        """Where the bytes are and the container's size and mtime: changes when they may have."""
        st = Path(self.container).stat()
        return {"container": self.container, "member": self.member, "offset": self.offset,
                "size": self.size, "container_size": st.st_size,
                "container_mtime_ns": st.st_mtime_ns}  # fmt: skip

    def open(self) -> io.BufferedReader | io.BytesIO:
        """Open for reading as a seekable binary file."""
        if self.member is None:
            return open(self.container, "rb")
        if self.compressed:
            with zipfile.ZipFile(self.container) as zf, zf.open(self.member) as f:
                return io.BytesIO(f.read())
        return io.BufferedReader(_ByteRange(self.container, self.offset, self.size), 1 << 20)


class _ByteRange(io.RawIOBase):
    """A read-only window `[offset, offset+size)` of a file, seekable like a file."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._start, self._size, self._pos = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(memoryview(buf)[:n])
        self._pos += got
        return got

    def readall(self) -> bytes:
        """The rest of the range in one read (RawIOBase's default loops in 8 KB steps)."""
        self._f.seek(self._start + self._pos)
        data = self._f.read(max(0, self._size - self._pos))
        self._pos += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def _check_name(archive: Path, name: str) -> str:
    """Reject absolute paths and `..` components; return the normalised member name."""
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeMemberError(f"{archive}: member {name!r} has an absolute path; refused")
    if ".." in parts:
        raise UnsafeMemberError(f"{archive}: member {name!r} escapes the archive ('..'); refused")
    return norm


def iter_tar(archive: Path) -> Iterator[MemberRef | UnsafeMemberError]:
    """Regular files of an uncompressed tar, or an error for each member that is refused."""
    size = archive.stat().st_size
    try:
        tf = tarfile.open(archive, mode="r:")  # noqa: SIM115 - closed by the `with` below
    except tarfile.ReadError as e:
        raise ValueError(
            f"{archive}: not an uncompressed tar ({e}); csdm reads tars in place, so "
            "decompress .tar.gz/.tar.zst first"
        ) from e
    with tf:
        while True:
            try:
                info = tf.next()
            except tarfile.ReadError as e:
                yield UnsafeMemberError(f"{archive}: unreadable tar header ({e}); truncated?")
                return
            if info is None:
                return
            try:
                name = _check_name(archive, info.name)
            except UnsafeMemberError as e:
                yield e
                continue
            if info.isdir():
                continue
            if info.issym() or info.islnk():
                yield UnsafeMemberError(
                    f"{archive}: member {name!r} is a link to {info.linkname!r}; refused"
                )
            elif not info.isreg():
                yield UnsafeMemberError(f"{archive}: member {name!r} is not a regular file")
            elif info.offset_data + info.size > size:
                yield UnsafeMemberError(
                    f"{archive}: member {name!r} is truncated ({info.size} bytes declared, "
                    f"{max(0, size - info.offset_data)} present); re-download the archive"
                )
                return  # nothing after a truncation can be read
            else:
                yield MemberRef(str(archive), name, info.offset_data, info.size)


def iter_zip(archive: Path) -> Iterator[MemberRef | UnsafeMemberError]:
    """Files of a zip (stored members are read in place), or an error per refused member."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{archive}: not a readable zip ({e}); re-download it") from e
    with zf, open(archive, "rb") as raw:
        for info in zf.infolist():
            try:
                name = _check_name(archive, info.filename)
            except UnsafeMemberError as e:
                yield e
                continue
            if info.is_dir():
                continue
            ftype = stat.S_IFMT(info.external_attr >> 16)  # 0: the writer recorded no type
            if ftype == stat.S_IFLNK:
                yield UnsafeMemberError(f"{archive}: member {name!r} is a symlink; refused")
                continue
            if ftype and ftype != stat.S_IFREG:
                yield UnsafeMemberError(f"{archive}: member {name!r} is not a regular file")
                continue
            if info.flag_bits & 0x1:
                yield UnsafeMemberError(f"{archive}: member {name!r} is encrypted")
                continue
            raw.seek(info.header_offset)
            header = raw.read(_ZIP_LOCAL_HEADER.size)
            if len(header) < _ZIP_LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                yield UnsafeMemberError(f"{archive}: member {name!r} has a bad local header")
                continue
            fields = _ZIP_LOCAL_HEADER.unpack(header)
            offset = info.header_offset + _ZIP_LOCAL_HEADER.size + fields[9] + fields[10]
            stored = info.compress_type == zipfile.ZIP_STORED
            if stored and offset + info.file_size > archive.stat().st_size:
                yield UnsafeMemberError(f"{archive}: member {name!r} is truncated")
                continue
            yield MemberRef(str(archive), name, offset, info.file_size, compressed=not stored)


def iter_container(path: Path) -> Iterator[MemberRef | UnsafeMemberError]:
    """Files of a loose file, a tar, a zip, or a folder of those (archives are opened)."""
    path = Path(path)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_symlink():
                yield UnsafeMemberError(f"{p}: symlink inside the source folder; refused")
            elif p.is_file():
                yield from iter_container(p)
        return
    try:
        if path.suffix == ".tar":
            yield from iter_tar(path)
        elif path.suffix == ".zip":
            yield from iter_zip(path)
        else:
            yield MemberRef(str(path))
    except (ValueError, OSError) as e:
        yield e if isinstance(e, UnsafeMemberError) else UnsafeMemberError(str(e))
