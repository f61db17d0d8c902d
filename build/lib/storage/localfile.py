"""Local files: written aside then renamed (the only renames outside the `Root`), read bounded."""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from pathlib import Path

TEXT_LIMIT = 16 << 20  # a split file of every public episode name is about 0.2 MB


class InputFileError(ValueError):
    """A local input that is not a regular file, too large, or not text; names the file."""


def read_regular(path: str | os.PathLike, start: int | None = 0, end: int | None = None) -> bytes:
    """Bytes `[start, end)` of a regular file (a negative start counts from its end).

    A FIFO or device is refused, never waited on: opened without blocking, then checked by
    its own descriptor (no race with a swap).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputFileError(f"{path}: not a regular file")
    with open(fd, "rb") as f:
        start = start or 0
        if start < 0:
            start = max(0, st.st_size + start)
        end = st.st_size if end is None else min(end, st.st_size)
        f.seek(start)
        return f.read(max(0, end - start))


def read_text_input(path: str | os.PathLike, what: str, limit: int = TEXT_LIMIT) -> str:
    """A small local text input (a split file): regular, at most `limit` bytes, UTF-8."""
    try:
        data = read_regular(path, 0, limit + 1)
    except InputFileError:
        raise
    except OSError as e:
        raise InputFileError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if len(data) > limit:
        raise InputFileError(f"{path}: {what} larger than {limit} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: the {what} is not UTF-8 text") from None
    if "\x00" in text:
        raise InputFileError(f"{path}: the {what} is binary, not text")
    return text


def commit_file(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put a finished local file in place under its final name, atomically."""
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """A temporary path beside `final`: renamed onto it if the block succeeds, else removed.

    For writers that need a path (torch.save, onnx, tarfile); readers of `final` see the old
    file or the new one, never a part.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        commit_file(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
