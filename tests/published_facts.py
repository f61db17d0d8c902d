"""A source that reproduces what others found in the real Hub files (issue 33).

From the synthetic tree: both expert members cut to 55% inside a zip whose CRCs are valid (as
expert 90 and 96 are on the Hub), episode 4 byte-identical to episode 3 in another tar (the
three twins at tar boundaries), and the first tar's members in the real tar's order, the
last-numbered first.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

EXPERT_ZIP = "dataset_dm_expert_dust2.zip"
DEFECTS = ("dm_july2021_expert_1", "dm_july2021_expert_2")
TWIN, FIRST = "dm_july2021_4", "dm_july2021_3"


def _members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def _write_tar(tar: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def truncate_in_zip(zip_path: Path, names: tuple[str, ...], share: float = 0.55) -> None:
    """Cut the named episodes' files short inside the zip; the zip's CRCs are of the cut bytes."""
    with zipfile.ZipFile(zip_path) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            if any(name.endswith(f"hdf5_{n}.hdf5") for n in names):
                data = data[: int(len(data) * share)]
            zf.writestr(name, data)


def published_facts_source(synth_tree: Path, dest: Path) -> Path:
    """A copy of `synth_tree` with the real data's defects, twins and member order."""
    shutil.copytree(synth_tree, dest)
    truncate_in_zip(dest / EXPERT_ZIP, DEFECTS)
    first = dest / "hdf5_dm_july2021_1_to_3.tar"
    one = _members(first)
    _write_tar(first, sorted(one.items(), reverse=True))  # ..._3.hdf5 first, as on the Hub
    later = dest / "hdf5_dm_july2021_4_to_6.tar"
    two = _members(later)
    two[f"hdf5_{TWIN}.hdf5"] = one[f"hdf5_{FIRST}.hdf5"]
    _write_tar(later, sorted(two.items()))
    return dest
