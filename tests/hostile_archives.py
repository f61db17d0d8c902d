"""Archives that lie: built byte by byte, since tarfile refuses to write a lie itself."""

from __future__ import annotations

import io
import tarfile


def lying_tar(good: list[tuple[str, bytes]], liar: str, declared: int, carried: int) -> bytes:
    """A tar of `good` members, then `liar`'s header declaring `declared` bytes, `carried` present.

    The tar ends there, with no end-of-archive blocks: a reader reaches the end mid-member.
    """
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
    for name, data in good:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    head = buf.getvalue()  # the members so far, without the closing blocks `close` would add
    info = tarfile.TarInfo(liar)
    info.size = declared
    return head + info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + b"\x5a" * carried
