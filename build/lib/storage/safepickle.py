"""Load `.npy` files whose payload is a pickle, admitting only data types, never code."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

_BUILTINS = "set frozenset list dict tuple bytearray bytes str int float complex bool".split()
# (module, name) pairs a data-only pickle may reference. numpy 1.x writes `numpy.core.*`,
# numpy 2.x `numpy._core.*`; both are folded to the latter before the check.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol-2 pickles spell bytes this way
    }
    | {("builtins", name) for name in _BUILTINS}
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced something other than plain data."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        canonical = (
            "numpy._core" + module[len("numpy.core") :]
            if module.startswith("numpy.core")
            else module
        )
        if (canonical, name) in _ALLOWED:
            return super().find_class(canonical, name)
        raise UnsafePickleError(
            f"{self._source}: refused to load '{module}.{name}': the file may carry code. "
            "Only numpy arrays, scalars and builtin containers are admitted; "
            "do not open this file with np.load(allow_pickle=True)."
        )


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle `data` admitting only numpy arrays/scalars and builtin containers."""
    return _DataOnlyUnpickler(io.BytesIO(data), source).load()


def load_npy(path: str | Path) -> Any:
    """Read a `.npy` file; object arrays are unpickled with the data-only unpickler."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = npy_format.read_array_header_1_0(f)
            else:
                _, _, dtype = npy_format.read_array_header_2_0(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a .npy file ({e})") from e
        if not dtype.hasobject:
            f.seek(0)
            return npy_format.read_array(f, allow_pickle=False)
        try:
            obj = _DataOnlyUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: truncated or corrupt pickle payload ({e})") from e
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"{path}: pickle payload is {type(obj).__name__}, not an array")
    return obj
