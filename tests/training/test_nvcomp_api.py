"""csdm's nvCOMP calls against the real nvCOMP 6 wheel's signatures, on a machine with no GPU.

The wheel imports without a device (its library loads; CUDA is only needed once a call runs),
so each overload csdm relies on is read from the wheel's own signatures and matched with the
calls `training/device_decode.py` makes, argument by argument. Nothing is mocked.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / ".cache" / "nvcomp-site"
REQS = ROOT / "tests" / "nvcomp" / "requirements.txt"

PROBE = """
import json
from nvidia import nvcomp
print(json.dumps({
    "version": nvcomp.__version__,
    "as_arrays": nvcomp.as_arrays.__doc__,
    "decode": nvcomp.Codec.decode.__doc__,
    "init": nvcomp.Codec.__init__.__doc__,
    "uncomp": nvcomp.Codec.get_uncomp_buffer_size.__doc__,
    "raw": hasattr(nvcomp.BitstreamKind, "RAW"),
}))
"""


@pytest.fixture(scope="module")
def wheel() -> dict:
    stamp = SITE / ".requirements"
    if not stamp.exists() or stamp.read_text() != REQS.read_text():
        r = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes",
             "--upgrade", "--target", str(SITE), "-r", str(REQS)],
            capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            pytest.fail(f"could not install nvCOMP's wheel: {r.stderr[-2000:]}")
        stamp.write_text(REQS.read_text())
    r = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SITE), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-2000:]  # libnvcomp.so.6 found: the import works
    return json.loads(r.stdout)


def _calls() -> dict[str, list[ast.Call]]:
    """The nvCOMP calls in `_nvcomp_decompress`, by the name called."""
    tree = ast.parse((ROOT / "training" / "device_decode.py").read_text())
    fn = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.name == "_nvcomp_decompress"
    )
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.setdefault(node.func.attr, []).append(node)
    return calls


def test_the_batch_calls_match_nvcomp_6s_overloads(wheel) -> None:
    assert wheel["version"].startswith("6.") and wheel["raw"]
    calls = _calls()
    # as_arrays(buffer, offsets, sizes, cuda_stream=...): the one-buffer overload, twice
    assert (
        "as_arrays(buffer: object, offsets: list[int], sizes: list[int], cuda_stream: int = 0)"
        in wheel["as_arrays"]
    )
    for call in calls["as_arrays"]:
        assert len(call.args) == 3 and [k.arg for k in call.keywords] == ["cuda_stream"]
    # decode(srcs: BatchArray, ..., out=BatchArray): never a Python list
    assert "srcs: nvidia.nvcomp.nvcomp_impl.BatchArray" in wheel["decode"]
    assert "out: object = None" in wheel["decode"]
    (decode,) = calls["decode"]
    assert len(decode.args) == 1 and [k.arg for k in decode.keywords] == ["out"]
    assert isinstance(decode.args[0], ast.Name) and decode.args[0].id == "srcs"
    # Codec(**kwargs): each keyword csdm passes is one the wheel documents
    (codec,) = calls["Codec"]
    for k in codec.keywords:
        assert f"{k.arg}:" in wheel["init"], k.arg
    assert {k.arg for k in codec.keywords} >= {"algorithm", "bitstream_kind", "cuda_stream"}
    # the decompressed size of one Array of the batch
    assert (
        "get_uncomp_buffer_size(self: nvidia.nvcomp.nvcomp_impl.Codec, "
        "source: nvidia.nvcomp.nvcomp_impl.Array) -> int" in wheel["uncomp"]
    )
