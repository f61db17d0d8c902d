"""DIAMOND's own code (branch `csgo`, commit 851cefb, MIT), imported from `../shared` as it is.

Its `src/data` package is loaded without running its `__init__`, whose imports reach
`src/utils.py` and through it wandb and hydra, which the tests need not install. Only
`CSGOHdf5Dataset` needs something of `utils`: the `StateDictMixin` base, whose state-dict
helpers play no part in reading segments; a stand-in class takes its place.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "shared" / "third_party" / "diamond" / "src"
TEST_SPLIT = SRC.parent / "test_split.txt"


def available() -> bool:
    """Whether DIAMOND's code lies beside the checkout (CI lays `shared/` there)."""
    return (SRC / "data" / "dataset.py").exists()


def diamond_data() -> types.ModuleType:
    """A namespace of DIAMOND's `data` modules: Batch, BatchSampler, CSGOHdf5Dataset, ..."""
    if "utils" not in sys.modules:
        utils = types.ModuleType("utils")

        class StateDictMixin:  # stand-in: DIAMOND's adds state_dict/load_state_dict only
            pass

        utils.StateDictMixin = StateDictMixin
        sys.modules["utils"] = utils
    if "data" not in sys.modules:
        pkg = types.ModuleType("data")
        pkg.__path__ = [str(SRC / "data")]
        sys.modules["data"] = pkg
    names = ("batch", "segment", "episode", "utils", "dataset", "batch_sampler")
    mods = {n: importlib.import_module(f"data.{n}") for n in names}
    ns = types.SimpleNamespace()
    for m in mods.values():
        ns.__dict__.update({k: v for k, v in vars(m).items() if not k.startswith("_")})
    return ns
