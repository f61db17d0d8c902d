"""Local files written aside, then renamed: the only renames in csdm outside the `Root`."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


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
