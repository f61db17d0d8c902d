"""`import-keras` on the seed's real Keras files, each edited into a network csdm must refuse.

All variants are imported in one child process under a 3 GiB address-space limit, the real
model first: that control shows the limit leaves room for a true import, and an allocation
sized by the file before its check (1.3 GB for 3,000 ConvLSTM filters, 2.5 GB for a
25,000 x 25,000 kernel) fails the test with a MemoryError instead of a refusal.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.slow
CSDM = str(Path(sys.executable).with_name("csdm"))
LIMIT = 3 << 30
# imports each PREFIX, printing one JSON line per try: the error's type and text, or "ok"
CHILD = """
import json, sys, shutil
from training.keras_import import import_keras
for prefix in sys.argv[1:]:
    shutil.rmtree(prefix + ".run", ignore_errors=True)
    try:
        import_keras(prefix, prefix + ".run")
        print(json.dumps([prefix, "ok", ""]), flush=True)
    except Exception as e:
        print(json.dumps([prefix, type(e).__name__, str(e)]), flush=True)
"""


def _outer(a: dict) -> list[dict]:
    return a["config"]["layers"]


def _trunk(a: dict) -> list[dict]:
    return _outer(a)[1]["config"]["layer"]["config"]["layers"]


def _lstm(a: dict) -> dict:
    return next(x for x in _outer(a) if x["class_name"] == "ConvLSTM2D")["config"]


def _rewire(layers: list[dict], old: str, new: str) -> None:
    for x in layers:
        for node in x["inbound_nodes"]:
            for entry in node:
                if entry[0] == old:
                    entry[0] = new


CODE = (
    "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAfABkARQAUwApAk7pAgAAAKkAKQHaAXhyAgAAAHICAAAA"
    "+gg8c3RyaW5nPtoIPGxhbWJkYT4BAAAA8wAAAAA="
)  # marshalled `lambda x: x * 2`


def _lambda(src: str) -> dict:
    """A Lambda whose function is marshalled bytecode (never run: the import must refuse it)."""
    return {
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "trainable": True,
            "dtype": "float32",
            "function": [CODE, None, None],
            "function_type": "lambda",
            "module": "__main__",
            "output_shape": None,
            "output_shape_type": "raw",
            "output_shape_module": None,
            "arguments": {},
        },
        "inbound_nodes": [[[src, 0, 0, {}]]],
    }


def lambda_before_heads(a: dict) -> None:
    flat = _outer(a)[3]["config"]["name"]
    _rewire(_outer(a), flat, "lambda")
    _outer(a).insert(4, _lambda(flat))


def lambda_in_trunk(a: dict) -> None:
    i = next(i for i, x in enumerate(_trunk(a)) if x["config"]["name"] == "block3a_project_bn")
    _rewire(_trunk(a), "block3a_project_bn", "lambda")
    _trunk(a).insert(i + 1, _lambda("block3a_project_bn"))


def unknown_after_output(a: dict) -> None:
    concat = _outer(a)[-1]["config"]["name"]
    _outer(a).append(
        {
            "class_name": "Mystery",
            "config": {"name": "mystery"},
            "inbound_nodes": [[[concat, 0, 0, {}]]],
        }
    )
    a["config"]["output_layers"] = [["mystery", 0, 0]]


def setting(get: Callable[[dict], dict], key: str, value: object) -> Callable[[dict], None]:
    def edit(a: dict) -> None:
        get(a)[key] = value

    return edit


def _concat(a: dict) -> dict:
    return _outer(a)[-1]["config"]


def _se(a: dict) -> dict:
    return next(x for x in _trunk(a) if x["config"]["name"] == "block4b_se_reduce")["config"]


FILTERS = "csdm represents only an integer from 1 to 1024"
VARIANTS: dict[str, tuple[Callable[[dict], None], str]] = {
    "lambda_before_heads": (lambda_before_heads, "layer 'lambda' is a Lambda"),
    "lambda_in_trunk": (lambda_in_trunk, "layer 'lambda' is a Lambda"),
    "unknown_after_output": (unknown_after_output, "layer 'mystery' (Mystery) follows"),
    "go_backwards": (setting(_lstm, "go_backwards", True), "has go_backwards=True; csdm"),
    "return_sequences": (setting(_lstm, "return_sequences", False), "return_sequences=False"),
    "concat_axis": (setting(_concat, "axis", 1), "(Concatenate) has axis=1"),
    "groups": (setting(_se, "groups", 2), "'block4b_se_reduce' (Conv2D) has groups=2"),
    "new_setting": (setting(_lstm, "recurrent_scale", 2.0), "sets recurrent_scale=2.0, which"),
    "kernel_huge": (setting(_lstm, "kernel_size", [10**6, 10**6]), "kernel_size=[1000000"),
    **{
        f"filters_{v!r}": (setting(_lstm, "filters", v), f"filters={v}; {FILTERS}")
        for v in (10**12, 10**6, 3000, "256", 256.5, -5, True)
    },
}


def _write(keras_model: Path, tmp_path: Path, name: str, text: str) -> str:
    prefix = tmp_path / name
    Path(f"{prefix}.json").write_text(text)
    shutil.copy(keras_model / "seed_model.h5", f"{prefix}.h5")
    return str(prefix)


def _huge_kernel(prefix: str, dtype: str = "f4", shape: tuple = (25_000, 25_000)) -> None:
    """Swap the ConvLSTM kernel for an unwritten chunked dataset: a small file, a huge read."""
    with h5py.File(f"{prefix}.h5", "r+") as f:
        g = f["conv_lstm2d"]
        name = next(str(n) for n in g.attrs["weight_names"] if "/kernel" in str(n))
        del g[name]
        g.create_dataset(name, shape=shape, dtype=dtype, chunks=True, compression="gzip")


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def test_every_hostile_variant_is_refused_in_one_line_within_a_memory_limit(
    keras_model: Path, tmp_path: Path
) -> None:
    real = json.loads((keras_model / "seed_model.json").read_text())
    want = {_write(keras_model, tmp_path, "real", json.dumps(real)): ("ok", "")}
    for name, (edit, message) in VARIANTS.items():
        arch = copy.deepcopy(real)
        edit(arch)
        want[_write(keras_model, tmp_path, name, json.dumps(arch))] = ("KerasImportError", message)
    deep = _write(keras_model, tmp_path, "deep", "[" * 200_000 + "]" * 200_000)
    want[deep] = ("KerasImportError", "deep.json: not a Keras architecture JSON (nested too")
    big = _write(keras_model, tmp_path, "big", json.dumps({"pad": "x" * (5 << 20)}))
    want[big] = ("KerasImportError", f"big.json: {(5 << 20) + 11} bytes, more than the")
    huge = _write(keras_model, tmp_path, "huge_kernel", json.dumps(real))
    _huge_kernel(huge)
    want[huge] = (
        "KerasImportError",
        "huge_kernel.h5: layer 'conv_lstm2d' holds kernel of "
        "shape (25000, 25000), csdm expects (3, 3, 112, 1024)",
    )
    ints = _write(keras_model, tmp_path, "int_kernel", json.dumps(real))
    _huge_kernel(ints, "i8", (3, 3, 112, 1024))
    want[ints] = ("KerasImportError", "'conv_lstm2d' holds kernel as int64, not floats")
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}  # fewer reservations
    r = subprocess.run(
        [sys.executable, "-c", CHILD, *want],
        capture_output=True,
        text=True,
        preexec_fn=_limited,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = {p: (kind, text) for p, kind, text in map(json.loads, r.stdout.splitlines())}
    assert got[next(iter(want))] == ("ok", ""), "the real model must import under the limit"
    for prefix, (kind, message) in want.items():
        assert got[prefix][0] == kind and message in got[prefix][1], (prefix, got[prefix])
        assert "\n" not in got[prefix][1] and len(got[prefix][1]) < 400
        if kind != "ok":
            assert not Path(f"{prefix}.run").exists()


def test_the_cli_refuses_in_one_line(keras_model: Path, tmp_path: Path) -> None:
    arch = json.loads((keras_model / "seed_model.json").read_text())
    lambda_before_heads(arch)
    prefix = _write(keras_model, tmp_path, "m", json.dumps(arch))
    r = subprocess.run(
        [CSDM, "import-keras", prefix, "--run", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "m.json: layer 'lambda' is a Lambda" in lines[0], r.stderr
    assert not np.any([p.name == "ckpt.pt" for p in tmp_path.rglob("*")])
