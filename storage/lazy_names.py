"""Package names imported on first use: a package's `__getattr__` from its name table."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_getattr(package: str, api: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that imports `api[name]` (a module path) when `name` is asked."""

    def __getattr__(name: str) -> object:
        if name in api:
            return getattr(import_module(api[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
