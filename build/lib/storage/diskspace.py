"""Free-space checks and the one error a full disk becomes."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class DiskFullError(OSError):
    """No space left where csdm writes: the run stops with this one line."""

    def __init__(self, path: str | Path, needed: int | None = None, free: int | None = None):
        need = f"; at least {human_bytes(needed)} more is needed" if needed else ""
        have = f" ({human_bytes(free)} free)" if free is not None else ""
        super().__init__(
            errno.ENOSPC,
            f"{path}: no space left on the device{have}{need}; free space or write "
            "elsewhere, then re-run: finished work is kept",
        )
        self.path, self.needed, self.free = str(path), needed, free

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # crosses process boundaries (Dask workers) intact
        return type(self), (self.path, self.needed, self.free)


def human_bytes(n: int) -> str:
    """`n` bytes in words a person reads at a glance: 512 B, 1.5 MB, 3.2 GB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def is_disk_full(e: BaseException) -> bool:
    """Whether an error is the filesystem saying it is full (or over quota)."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem of `path`, or of its nearest existing parent."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def check_free(path: str | Path, needed: int) -> None:
    """Refuse to start work that needs more bytes than the filesystem has."""
    free = free_bytes(path)
    if needed > free:
        raise DiskFullError(path, needed - free, free)
