"""A run, its checkpoint, its export and its registration living on an object store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from storage.fs import root_of
from storage.records import FormatError
from storage.registry import open_registry
from storage.run import read_metrics
from tests.training.test_train import _cfg
from training.actions import DEFAULT
from training.checkpoint import load_checkpoint
from training.evaluate import resolve_model
from training.export import export
from training.train import last_result, train


def test_a_run_trains_resumes_exports_and_registers_on_a_bucket(
    processed: Path, bucket: str, tmp_path: Path
) -> None:
    run = f"{bucket}/runs/r1"
    train(processed, tmp_path / "local", _cfg(3), quiet=True)  # the same run, on a local disk
    train(processed, run, _cfg(2), quiet=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train(processed, run, _cfg(3), quiet=True)
    train(processed, run, _cfg(3), resume=True, quiet=True)
    here, there = load_checkpoint(tmp_path / "local"), load_checkpoint(run)
    assert there.step == 3 and there.stream == here.stream
    for k in here.model:  # resumed from the bucket, bit for bit the uninterrupted run
        assert torch.equal(here.model[k], there.model[k]), k
    root = root_of(run)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and {r["format_version"] for r in rows} == {1}
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_metrics(tmp_path / "local")]
    table = list(csv.DictReader(io.StringIO(root.read_bytes("metrics.csv").decode())))
    assert [int(r["step"]) for r in table] == [1, 2, 3]
    config = json.loads(root.read_bytes("config.json"))
    assert config["format_version"] == 1 and config["steps"] == 3
    assert last_result(run).step == 3

    exported = f"{bucket}/exports/e1"
    d = export(run, exported)
    assert d["training"]["run"] == run and d["training"]["step"] == 3
    onnx = root_of(exported).read_bytes("policy.onnx")
    assert d["files"]["policy.onnx"]["size"] == len(onnx)
    reg = open_registry(f"{bucket}/models", "cs")
    v = reg.register(exported, alias="production")
    assert v.version == 1 and v.location == f"{bucket}/models/cs/v1"
    assert reg.register(exported).existing  # the same model file: no second version
    got = reg.download(reg.resolve(alias="production"), tmp_path / "pulled")
    assert (got / "policy.onnx").read_bytes() == onnx

    # the run and the export are models to evaluate, straight from the bucket
    shape = (4, DEFAULT.height, DEFAULT.width, 3)
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    as_run = resolve_model(run)
    as_export = resolve_model(exported, workdir=tmp_path / "eval")
    assert (as_run.kind, as_export.kind) == ("run", "export")
    assert as_export.source["model_sha256"] == d["files"]["policy.onnx"]["sha256"]
    np.testing.assert_allclose(as_run.play(frames), as_export.play(frames), atol=1e-4)


def test_a_later_metrics_format_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "format_version": 2}) + "\n")
    with pytest.raises(FormatError, match=r"metrics\.jsonl: a metrics row of format_version 2"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")  # before versions
    assert read_metrics(tmp_path) == [{"step": 1}]
