"""The data-only unpickler admits numpy data and builtin containers, and nothing else."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from storage.safepickle import UnsafePickleError, load_npy, loads
from tasks.synth.tree import save_legacy_npy


def _save_object(path: Path, obj: object, legacy_names: bool = False) -> Path:
    if legacy_names:  # what numpy 1.x wrote, as in the public metadata files
        save_legacy_npy(path, obj)
        assert b"numpy.core.multiarray" in path.read_bytes()
        return path
    arr = np.empty((), dtype=object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)
    assert b"numpy._core" in path.read_bytes()
    return path


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_calling_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _save_object(tmp_path / "currvarsv2_x_1_to_100.npy", {"k": [_Evil(marker)]})
    with pytest.raises(UnsafePickleError) as err:
        load_npy(path)
    msg = str(err.value)
    assert str(path) in msg and "may carry code" in msg and "system" in msg
    assert not marker.exists()
    # the same file really would have run the command under plain np.load
    np.load(path, allow_pickle=True)
    assert marker.exists()


def test_other_globals_refused() -> None:
    for payload in (pickle.dumps(print), pickle.dumps(Path("/x")), pickle.dumps(slice)):
        with pytest.raises(UnsafePickleError):
            loads(payload)


@pytest.mark.parametrize("legacy", [False, True])
def test_numpy_data_round_trips_with_both_module_names(tmp_path: Path, legacy: bool) -> None:
    obj = {
        "file_num1_frame_0": [
            {"gsi_health": 100, "vel_mag": np.float64(3.5), "ammo": np.int32(7), "s": {1, 2}},
            [["w", "space"], -12.5, 3.0, 0, 1],
            np.array([1.0, 0.0]),
        ],
        "t": (1, 2.0, "x", b"raw", None, True),
    }
    got = load_npy(_save_object(tmp_path / "m.npy", obj, legacy_names=legacy)).item()
    row = got["file_num1_frame_0"]
    assert row[0]["vel_mag"] == 3.5 and isinstance(row[0]["vel_mag"], np.float64)
    assert row[0]["ammo"] == 7 and row[0]["s"] == {1, 2}
    np.testing.assert_array_equal(row[2], [1.0, 0.0])
    assert got["t"] == (1, 2.0, "x", b"raw", None, True)


def test_plain_arrays_load_without_pickle(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), np.arange(6).reshape(2, 3))


def test_truncated_and_foreign_files_name_the_file(tmp_path: Path) -> None:
    path = _save_object(tmp_path / "t.npy", {"a": list(range(1000))})
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(ValueError, match=r"t\.npy: truncated or corrupt"):
        load_npy(path)
    (tmp_path / "x.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"x\.npy: not a \.npy file"):
        load_npy(tmp_path / "x.npy")
