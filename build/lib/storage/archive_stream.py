"""Archives read once, front to back, as a download streams past: nothing is stored or seeked.

`stream_tar` and `stream_zip` (with `zip_directory` read from the tail first); the in-place,
by-range readers and the member checks live in `storage.containers`.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from storage.containers import (
    _ZIP_LOCAL_HEADER,
    ArchiveDamagedError,
    UnsafeMemberError,
    _tar_member,
    _zip_member,
)

STREAM_PIECE = 4 << 20  # members are gathered in pieces: a whole-member read would copy twice
# A streamed member is held in memory; an episode is ~130 MB, so a member declaring more than
# this is refused before a byte of it is gathered (and skipped, or found lying about its size).
MAX_STREAMED_MEMBER = 2 << 30


def _too_big(archive: str, name: str, size: int) -> UnsafeMemberError | None:
    if size <= MAX_STREAMED_MEMBER:
        return None
    return UnsafeMemberError(
        f"{archive}: member {name!r} declares {size} bytes, more than the "
        f"{MAX_STREAMED_MEMBER} any episode needs; refused"
    )


@dataclass(frozen=True)
class StreamedMember:
    """A member as the archive streamed past: its name, data offset and bytes."""

    name: str
    offset: int
    data: bytes


def _gather(read: Callable[[int], bytes], size: int) -> bytes:
    pieces, got = [], 0
    while got < size:
        piece = read(min(STREAM_PIECE, size - got))
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def stream_tar(
    fileobj, archive: str, wanted: Callable[[str], bool] = lambda _n: True
) -> Iterator[StreamedMember | UnsafeMemberError]:
    """Regular files of an uncompressed tar read from a stream; unwanted ones are passed over.

    Nothing seeks backwards; a truncated or unreadable tar ends the listing with an error.
    """
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r|", bufsize=1 << 20)  # noqa: SIM115
    except tarfile.ReadError as e:
        yield ArchiveDamagedError(f"{archive}: not an uncompressed tar ({e})")
        return
    last = None  # the member being read or passed over, to name where the tar broke
    with tf:
        while True:
            try:
                info = tf.next()
                if info is None:
                    return
                last = info.name
                name = _tar_member(archive, info)
                if name is None or (isinstance(name, str) and not wanted(name)):
                    continue
                if isinstance(name, str):
                    name = _too_big(archive, name, info.size) or name
                if isinstance(name, UnsafeMemberError):
                    yield name
                    continue
                data = _gather(tf.extractfile(info).read, info.size)
            except tarfile.ReadError as e:
                where = f" in or after member {last!r}" if last is not None else ""
                yield ArchiveDamagedError(f"{archive}: unreadable tar{where} ({e}); truncated?")
                return
            if len(data) != info.size:
                yield ArchiveDamagedError(
                    f"{archive}: member {name!r} is truncated ({info.size} "
                    f"bytes declared, {len(data)} present)"
                )
                return
            yield StreamedMember(name, info.offset_data, data)


class _NeedMore(Exception):
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Tail(io.RawIOBase):
    """The last bytes of a file of known size; reading before them raises `_NeedMore`."""

    def __init__(self, tail: bytes, size: int) -> None:
        self._tail, self._size, self._pos = tail, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf) -> int:
        start = self._size - len(self._tail)
        if self._pos < start:
            raise _NeedMore(self._pos)
        chunk = self._tail[self._pos - start : self._pos - start + len(buf)]
        buf[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def zip_directory(
    read_tail: Callable[[int], bytes], size: int, archive: str
) -> tuple[list[zipfile.ZipInfo], bytes]:
    """A zip's central directory from its last bytes, fetched by `read_tail(start)`.

    Returns the member infos in file order and the tail bytes they were parsed from.
    """
    start = max(0, size - (1 << 20))
    while True:
        tail = read_tail(start)
        try:
            with zipfile.ZipFile(io.BufferedReader(_Tail(tail, size))) as zf:
                return sorted(zf.infolist(), key=lambda i: i.header_offset), tail
        except _NeedMore as e:
            if e.offset >= start:
                raise
            start = e.offset
        except zipfile.BadZipFile as e:
            raise ValueError(f"{archive}: not a readable zip ({e})") from e


def stream_zip(
    fileobj,
    archive: str,
    infos: list[zipfile.ZipInfo],
    tail: bytes,
    wanted: Callable[[str], bool] = lambda _n: True,
) -> Iterator[StreamedMember | UnsafeMemberError]:
    """Members of a zip read from a stream in file order, located by its central directory.

    Each member's CRC-32 is checked; the directory must match the bytes that stream past.
    """
    pos = 0

    def skip_to(offset: int) -> None:
        nonlocal pos
        while pos < offset:
            got = fileobj.read(min(STREAM_PIECE, offset - pos))
            if not got:
                raise EOFError(offset)
            pos += len(got)

    try:
        for info in infos:
            name = _zip_member(archive, info)
            if name is None or (isinstance(name, str) and not wanted(name)):
                continue
            if isinstance(name, str):
                name = _too_big(archive, name, max(info.file_size, info.compress_size)) or name
            if isinstance(name, UnsafeMemberError):
                yield name
                continue
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                yield UnsafeMemberError(
                    f"{archive}: member {name!r} uses compression method "
                    f"{info.compress_type}; only stored and deflated are "
                    "read"
                )
                continue
            if info.header_offset < pos:
                yield ArchiveDamagedError(f"{archive}: member {name!r} overlaps the one before")
                return
            skip_to(info.header_offset)
            header = _gather(fileobj.read, _ZIP_LOCAL_HEADER.size)
            pos += len(header)
            if len(header) < _ZIP_LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                yield ArchiveDamagedError(f"{archive}: member {name!r} has a bad local header")
                return
            fields = _ZIP_LOCAL_HEADER.unpack(header)
            skip_to(pos + fields[9] + fields[10])
            packed = _gather(fileobj.read, info.compress_size)
            pos += len(packed)
            if len(packed) != info.compress_size:
                yield ArchiveDamagedError(f"{archive}: member {name!r} is truncated")
                return
            data, rest = packed, b""
            if info.compress_type == zipfile.ZIP_DEFLATED:  # never more than it declares
                inflate = zlib.decompressobj(-15)
                data = inflate.decompress(packed, info.file_size + 1)
                rest = inflate.unconsumed_tail
            if rest or len(data) != info.file_size or zlib.crc32(data) != info.CRC:
                yield ArchiveDamagedError(f"{archive}: member {name!r} fails its CRC-32 check")
                return
            yield StreamedMember(name, pos - len(packed), data)
        _check_end(fileobj, tail)
    except (EOFError, zlib.error) as e:
        yield ArchiveDamagedError(f"{archive}: unreadable zip ({type(e).__name__}: {e})")
    except _DirectoryChanged:
        yield ArchiveDamagedError(f"{archive}: its central directory changed while it was read")


class _DirectoryChanged(Exception):
    pass


def _check_end(fileobj, tail: bytes) -> None:
    """Read the rest of the stream; it must end as `tail`, the bytes the directory came from."""
    last = b""
    while piece := fileobj.read(STREAM_PIECE):
        last = (last + piece)[-len(tail) :]
    if not tail.endswith(last):
        raise _DirectoryChanged
