"""DIAMOND's own code (branch `csgo`, commit 851cefb, MIT), imported from `../shared` as it is.

Its `src/data` package is loaded without running its `__init__`, whose imports reach
`src/utils.py` and through it wandb and hydra, which the tests need not install. Only
`CSGOHdf5Dataset` needs something of `utils`: the `StateDictMixin` base, whose state-dict
helpers play no part in reading segments; a stand-in class takes its place.
"""

from __future__ import annotations

import importlib
import importlib.util
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


def world_model_env() -> types.ModuleType:
    """DIAMOND's `envs.world_model_env`, for its spawn loader (`make_generator_init`).

    Its model imports reach two more names of `utils` and torcheval, used only in training:
    stand-ins take their place.
    """
    sys.modules["data"].Batch = getattr(sys.modules.get("data"), "Batch", None) or (
        diamond_data().Batch
    )
    utils = sys.modules["utils"]
    if not hasattr(utils, "LossAndLogs"):
        utils.LossAndLogs = tuple
        utils.init_lstm = lambda *args, **kwargs: None
    if importlib.util.find_spec("torcheval") is None:  # its reward model's training metric
        for name in ("torcheval", "torcheval.metrics", "torcheval.metrics.functional"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["torcheval.metrics.functional"].multiclass_confusion_matrix = None
    if str(SRC) not in sys.path:
        sys.path.append(str(SRC))  # coroutines, models: after everything installed
    if "diamond_world_model_env" not in sys.modules:  # not through `envs`, which needs Atari
        spec = importlib.util.spec_from_file_location(
            "diamond_world_model_env", SRC / "envs" / "world_model_env.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["diamond_world_model_env"] = module
    return sys.modules["diamond_world_model_env"]
