"""HDF5 episodes in the public layout: round trips from loose files, tars and zips."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from storage.containers import MemberRef, iter_container
from storage.episode import Episode, EpisodeFormatError, count_frames, read_episode, write_episode


def _episode(n: int, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        frames=rng.integers(0, 256, (n, 150, 280, 3), dtype=np.uint8),
        y=rng.random((n, 51)),
        xaux=rng.random((n, 54)),
        helperarr=rng.integers(0, 2, (n, 2)).astype(np.float64),
    )


def _assert_same(a: Episode, b: Episode) -> None:
    for part in ("frames", "y", "xaux", "helperarr"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))


def test_layout_matches_the_public_files(tmp_path: Path) -> None:
    path = tmp_path / "hdf5_dm_july2021_3.hdf5"
    write_episode(path, _episode(4))
    with h5py.File(path) as h5:
        assert len(h5.keys()) == 16
        assert h5["frame_3_x"].shape == (150, 280, 3) and h5["frame_3_x"].dtype == np.uint8
        assert h5["frame_0_y"].shape == (51,) and h5["frame_0_xaux"].shape == (54,)
        assert h5["frame_2_helperarr"].shape == (2,)
    assert not list(tmp_path.glob("*.part"))


def test_round_trip_loose_tar_and_zip(tmp_path: Path) -> None:
    ep = _episode(7)
    loose = tmp_path / "hdf5_dm_july2021_1.hdf5"
    write_episode(loose, ep)
    _assert_same(read_episode(loose), ep)
    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        tf.add(loose, arcname="inner/hdf5_dm_july2021_1.hdf5")
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.write(loose, "set/hdf5_dm_july2021_1.hdf5", compress_type=zipfile.ZIP_STORED)
        zf.write(loose, "set/hdf5_dm_july2021_2.hdf5", compress_type=zipfile.ZIP_DEFLATED)
    refs = [m for a in ("a.tar", "b.zip") for m in iter_container(tmp_path / a)]
    assert len(refs) == 3 and all(isinstance(r, MemberRef) for r in refs)
    for ref in refs:
        _assert_same(read_episode(ref), ep)
        assert count_frames(ref) == 7
    part = read_episode(refs[0], 2, 5, parts=("x", "helperarr"))
    np.testing.assert_array_equal(part["x"], ep.frames[2:5])
    np.testing.assert_array_equal(part["helperarr"], ep.helperarr[2:5])
    # nothing was extracted next to the archives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.zip", loose.name]


def test_truncated_hdf5_inside_a_tar_names_archive_and_member(tmp_path: Path) -> None:
    loose = tmp_path / "e.hdf5"
    write_episode(loose, _episode(3))
    cut = tmp_path / "hdf5_dm_july2021_9.hdf5"
    cut.write_bytes(loose.read_bytes()[:150_000])
    with tarfile.open(tmp_path / "t.tar", "w") as tf:
        tf.add(cut, arcname=cut.name)
    (ref,) = list(iter_container(tmp_path / "t.tar"))
    with pytest.raises(EpisodeFormatError) as err:
        read_episode(ref)
    assert f"{tmp_path / 't.tar'}:hdf5_dm_july2021_9.hdf5" in str(err.value)


def test_missing_part_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hdf5_x_1.hdf5"
    write_episode(path, _episode(3))
    with h5py.File(path, "a") as h5:
        del h5["frame_1_y"]
    with pytest.raises(EpisodeFormatError, match="missing dataset 'frame_1_y'"):
        read_episode(path)


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hdf5_x_1.hdf5"
    write_episode(path, _episode(2))
    with h5py.File(path, "a") as h5:
        del h5["frame_1_xaux"]
        h5["frame_1_xaux"] = np.zeros(50)
    with pytest.raises(EpisodeFormatError, match=r"frame_1_xaux has shape \(50,\)"):
        read_episode(path)
