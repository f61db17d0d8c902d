"""Safe, extraction-free access to files inside uncompressed tars and zips.

Archives are read in place by range (`iter_tar`, `iter_zip`), never extracted to disk;
`storage.archive_stream` reads them once as they stream past.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from storage.fs import Root

_ZIP_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes, names/extra lengths last


class UnsafeMemberError(ValueError):
    """An archive member that must not be read (path escape, link, device, truncated)."""


class ArchiveDamagedError(UnsafeMemberError):
    """An archive that does not parse to its end: none of its members may be trusted.

    A refused member (a link, a path escape) leaves the others usable; a damaged archive does
    not, since what follows the damage, and so whether it ends where it claims, is unknown.
    """


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
    options: dict = field(default_factory=dict, compare=False, hash=False)  # storage options
    # a streamed member: the container's (size, checksum) as listed, instead of asking it
    listed: tuple[int, str] | None = None
    crc32: int | None = None  # a zip member's CRC-32 as the archive records it
    verified: bool = False  # its archive's bytes matched the publisher's sha256

    @property
    def label(self) -> str:
        """Human-readable location, `archive.tar:member` or the file path."""
        return f"{self.container}:{self.member}" if self.member else self.container

    @property
    def name(self) -> str:
        """Base name of the file or member."""
        return PurePosixPath(self.member or self.container).name

    @property
    def vouched(self) -> bool:
        """Whether its bytes can be checked against the publisher's (a CRC, a verified archive)."""
        return self.verified or self.crc32 is not None

    @property
    def _file(self) -> Root:
        return Root(self.container, self.options)

    def fingerprint(self) -> dict:
        """Where the bytes are and the container's size and stamp: changes when they may have."""
        info = (
            self._file.info("")
            if self.listed is None
            else dict(zip(("size", "stamp"), self.listed, strict=True))
        )
        return {
            "container": self.container,
            "member": self.member,
            "offset": self.offset,
            "size": self.size,
            "container_size": info["size"],
            "container_stamp": info["stamp"],
        }

    def open(self) -> io.BufferedReader | io.BytesIO:
        """Open for reading as a seekable binary file (a remote member: one range request)."""
        f = self._file
        if self.member is None:
            return f.open("")
        if self.compressed:
            with f.open("") as raw, zipfile.ZipFile(raw) as zf, zf.open(self.member) as m:
                return io.BytesIO(m.read())
        if not f.local:
            return io.BytesIO(f.read_bytes("", self.offset, self.offset + self.size))
        return io.BufferedReader(_ByteRange(f.path, self.offset, self.size), 1 << 20)


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


def _check_name(archive: str, name: str) -> str:
    """Reject absolute paths and `..` components; return the normalised member name."""
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeMemberError(f"{archive}: member {name!r} has an absolute path; refused")
    if ".." in parts:
        raise UnsafeMemberError(f"{archive}: member {name!r} escapes the archive ('..'); refused")
    return norm


def _tar_member(archive: object, info: tarfile.TarInfo) -> str | UnsafeMemberError | None:
    """A tar member's safe name, the reason it is refused, or None for a folder."""
    try:
        name = _check_name(archive, info.name)
    except UnsafeMemberError as e:
        return e
    if info.isdir():
        return None
    if info.issym() or info.islnk():
        return UnsafeMemberError(
            f"{archive}: member {name!r} is a link to {info.linkname!r}; refused"
        )
    if not info.isreg():
        return UnsafeMemberError(f"{archive}: member {name!r} is not a regular file")
    return name


def _zip_member(archive: object, info: zipfile.ZipInfo) -> str | UnsafeMemberError | None:
    """A zip member's safe name, the reason it is refused, or None for a folder."""
    try:
        name = _check_name(archive, info.filename)
    except UnsafeMemberError as e:
        return e
    if info.is_dir():
        return None
    ftype = stat.S_IFMT(info.external_attr >> 16)  # 0: the writer recorded no type
    if ftype == stat.S_IFLNK:
        return UnsafeMemberError(f"{archive}: member {name!r} is a symlink; refused")
    if ftype and ftype != stat.S_IFREG:
        return UnsafeMemberError(f"{archive}: member {name!r} is not a regular file")
    if info.flag_bits & 0x1:
        return UnsafeMemberError(f"{archive}: member {name!r} is encrypted")
    return name


def iter_tar(archive: Root) -> Iterator[MemberRef | UnsafeMemberError]:
    """Regular files of an uncompressed tar, or an error for each member that is refused.

    Only headers are read: a remote tar costs one small range request per member.
    """
    size = archive.info("")["size"]
    raw = archive.open("", block_size=64 << 10)
    try:
        tf = tarfile.open(fileobj=raw, mode="r:")  # noqa: SIM115 - closed by the `with` below
    except tarfile.ReadError as e:
        raw.close()
        raise ValueError(
            f"{archive}: not an uncompressed tar ({e}); csdm reads tars in place, so "
            "decompress .tar.gz/.tar.zst first"
        ) from e
    with raw, tf:
        while True:
            try:
                info = tf.next()
            except tarfile.ReadError as e:
                yield ArchiveDamagedError(f"{archive}: unreadable tar header ({e}); truncated?")
                return
            if info is None:
                return
            checked = _tar_member(archive, info)
            if checked is None:
                continue
            if isinstance(checked, UnsafeMemberError):
                yield checked
            elif info.offset_data + info.size > size:
                yield ArchiveDamagedError(
                    f"{archive}: member {checked!r} is truncated ({info.size} bytes declared, "
                    f"{max(0, size - info.offset_data)} present); re-download the archive"
                )
                return  # nothing after a truncation can be read
            else:
                yield MemberRef(
                    archive.url, checked, info.offset_data, info.size, options=archive.options
                )


def iter_zip(archive: Root) -> Iterator[MemberRef | UnsafeMemberError]:
    """Files of a zip (stored members are read in place), or an error per refused member."""
    total = archive.info("")["size"]
    raw = archive.open("", block_size=64 << 10)
    try:
        zf = zipfile.ZipFile(raw)
    except zipfile.BadZipFile as e:
        raw.close()
        raise ValueError(f"{archive}: not a readable zip ({e}); re-download it") from e
    with zf, raw:
        for info in zf.infolist():
            name = _zip_member(archive, info)
            if name is None:
                continue
            if isinstance(name, UnsafeMemberError):
                yield name
                continue
            raw.seek(info.header_offset)
            header = raw.read(_ZIP_LOCAL_HEADER.size)
            if len(header) < _ZIP_LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                yield ArchiveDamagedError(f"{archive}: member {name!r} has a bad local header")
                return
            fields = _ZIP_LOCAL_HEADER.unpack(header)
            offset = info.header_offset + _ZIP_LOCAL_HEADER.size + fields[9] + fields[10]
            stored = info.compress_type == zipfile.ZIP_STORED
            if stored and offset + info.file_size > total:
                yield ArchiveDamagedError(f"{archive}: member {name!r} is truncated")
                return
            yield MemberRef(
                archive.url,
                name,
                offset,
                info.file_size,
                compressed=not stored,
                options=archive.options,
                crc32=info.CRC,
            )


def iter_container(
    path: str | Root, options: dict | None = None
) -> Iterator[MemberRef | UnsafeMemberError]:
    """Files of a loose file, a tar, a zip, or a folder or bucket prefix of those.

    `path` is a local path or a URL; archives are opened in place, never downloaded whole.
    """
    root = path if isinstance(path, Root) else Root(str(path), dict(options or {}))
    if root.local and os.path.islink(root.path):
        yield UnsafeMemberError(f"{root}: symlink inside the source folder; refused")
        return
    if root.fs.isdir(root.path):
        if root.local:  # one listing of the tree; links are refused, not followed
            for p in sorted(Path(root.path).rglob("*")):
                rel = p.relative_to(root.path).as_posix()
                if p.is_symlink():
                    yield UnsafeMemberError(
                        f"{root.url_of(rel)}: symlink inside the source folder; refused"
                    )
                elif p.is_file():
                    yield from _iter_file(root.child(rel))
        else:
            for rel in sorted(root.find()):
                yield from _iter_file(root.child(rel))
        return
    yield from _iter_file(root)


def _iter_file(f: Root) -> Iterator[MemberRef | UnsafeMemberError]:
    try:
        if f.url.endswith(".tar"):
            yield from iter_tar(f)
        elif f.url.endswith(".zip"):
            yield from iter_zip(f)
        else:
            yield MemberRef(f.url, options=f.options)
    except (ValueError, OSError) as e:  # the archive could not be read to its end
        yield e if isinstance(e, UnsafeMemberError) else ArchiveDamagedError(str(e))
