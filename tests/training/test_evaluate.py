"""`csdm eval`: scores against an independent restatement, both runtimes, the CLI and the gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import training.evaluate as ev
from storage.evaluation import EvalReport
from storage.registry import open_registry
from tests.training import seed_training_reference as ref
from training.checkpoint import load_checkpoint
from training.data import SamplerConfig, load_labels
from training.export import export, policy_from_checkpoint
from training.model import probabilities
from training.train import TrainConfig, train

CSDM = str(Path(sys.executable).with_name("csdm"))


@pytest.fixture(scope="module")
def trained(processed: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = tmp_path_factory.mktemp("eval") / "run"
    sampler = SamplerConfig(window=8, jitter=4, split=None, keep_only=False)
    train(processed, run, TrainConfig.preset_config("tiny", steps=4, sampler=sampler), quiet=True)
    export(run, run / "export")
    return run, run / "export"


def _reference(run: Path, processed: Path) -> list[dict]:
    """Per test episode: one torch pass over the whole episode, scored with the seed's loops."""
    model = policy_from_checkpoint(load_checkpoint(run))
    from storage.dataset import open_dataset

    ds, lab = open_dataset(processed), load_labels(processed, SamplerConfig(split="test"))
    rows = []
    for i, name in enumerate(lab.episodes):
        s = slice(lab.offsets[i], lab.offsets[i + 1])
        with torch.no_grad():
            p = probabilities(model(torch.from_numpy(ds.frames(name))[None])[0])[0].numpy()
        y = np.concatenate(
            [lab.keys[s], lab.clicks[s], np.eye(23)[lab.mouse_x[s]], np.eye(15)[lab.mouse_y[s]]], 1
        )
        t = ref.generator_targets(y, np.stack([lab.kill[s], lab.death[s]], 1))
        on = p[:, :13] > 0.5
        v, r = p[:, 51], t[:, 51]
        rows.append(
            {
                "episode": name,
                "frames": len(p),
                "wasd_acc": np.mean(on[:, 0:4] == t[:, 0:4]),
                "jump_acc": np.mean(on[:, 4] == t[:, 4]),
                "other_keys_acc": np.mean(on[:, 5:11] == t[:, 5:11]),
                "lclick_acc": np.mean(on[:, 11] == t[:, 11]),
                "rclick_acc": np.mean(on[:, 12] == t[:, 12]),
                "mouse_x_acc": np.mean(p[:, 13:36].argmax(1) == t[:, 13:36].argmax(1)),
                "mouse_y_acc": np.mean(p[:, 36:51].argmax(1) == t[:, 36:51].argmax(1)),
                "value_mse": 100 * np.mean((r[:-1] + ref.GAMMA * v[1:] - v[:-1]) ** 2),
                "lclick_true": t[:, 11].astype(bool),
                "lclick_pred": on[:, 11],
            }
        )
    return rows


def test_scores_match_an_independent_restatement(trained, processed: Path, monkeypatch) -> None:
    run, exported = trained
    monkeypatch.setattr(ev, "CHUNK", 16)  # 60-frame episodes cross chunks: state carried
    report = ev.evaluate(
        [ev.resolve_model(str(run)), ev.resolve_model(str(exported))], processed, "test"
    )
    want = _reference(run, processed)
    assert report.episodes == len(want) >= 2 and report.frames == sum(w["frames"] for w in want)
    torch_eval, onnx_eval = report.models
    assert (torch_eval.kind, onnx_eval.kind) == ("run", "export")
    for got, w in zip(torch_eval.episodes, want, strict=True):
        assert got["episode"] == w["episode"] and got["frames"] == w["frames"]
        for k in ref_keys():
            assert got[k] == pytest.approx(w[k], abs=1e-5), k
    n = np.array([w["frames"] for w in want])
    acc = np.average([w["mouse_x_acc"] for w in want], weights=n)
    assert torch_eval.metrics["mouse_x_acc"] == pytest.approx(acc, abs=1e-6)
    cm = np.array(torch_eval.confusion["mouse_x"])
    assert cm.sum() == report.frames and np.trace(cm) / cm.sum() == pytest.approx(acc, abs=1e-6)
    true = np.concatenate([w["lclick_true"] for w in want])
    pred = np.concatenate([w["lclick_pred"] for w in want])
    tp, fp, fn = (true & pred).sum(), (~true & pred).sum(), (true & ~pred).sum()
    f1 = torch_eval.per_key["lclick"]
    assert f1["support"] == true.sum()
    assert f1["f1"] == (pytest.approx(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else None)
    seven = [torch_eval.metrics[k] for k in ref_keys() if k.endswith("_acc")]
    assert torch_eval.metrics["seed_mean"] == pytest.approx(np.mean(seven))
    # the ONNX step loop scores the same frames alike (a probability at 0.5 may tip one frame)
    for k, v in torch_eval.metrics.items():
        assert onnx_eval.metrics[k] == pytest.approx(v, abs=2 / report.frames + 1e-4), k


def ref_keys() -> list[str]:
    return [
        "wasd_acc",
        "jump_acc",
        "other_keys_acc",
        "lclick_acc",
        "rclick_acc",
        "mouse_x_acc",
        "mouse_y_acc",
        "value_mse",
    ]


def test_cli_writes_json_and_html_and_resolves_registry_refs(
    trained, processed: Path, tmp_path: Path
) -> None:
    run, exported = trained
    open_registry(tmp_path / "reg", "cs").register(exported, alias="production")
    out = tmp_path / "ev"
    r = subprocess.run(
        [
            CSDM,
            "eval",
            str(run),
            str(processed),
            "--compare",
            "cs@production",
            "--registry",
            str(tmp_path / "reg"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = EvalReport.from_dict(json.loads((out / "eval.json").read_text()))
    assert [m.kind for m in report.models] == ["run", "registry"]
    assert report.models[1].source["version"] == 1 and report.split == "test"
    assert "seed_mean" in r.stdout and "cs@production" in r.stdout
    page = (out / "index.html").read_text()
    assert "Per key F1" in page and "Mouse-bin confusion" in page
    assert (out / "metrics.png").stat().st_size > 1000
    assert len(list(out.glob("confusion_*.png"))) == 2
    bad = subprocess.run(
        [CSDM, "eval", str(tmp_path / "nothing"), str(processed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "not a run folder" in bad.stderr
    assert "Traceback" not in bad.stderr
    none = subprocess.run(
        [CSDM, "eval", str(run), str(processed), "--split", "nosuch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert none.returncode == 2 and "--split nosuch: no episode of" in none.stderr
    assert "has that split (it has test, train; or pass --split all)" in none.stderr
    assert "0/?" not in none.stderr and "Traceback" not in none.stderr  # checked before any work
    index = tmp_path / "reg" / "cs" / "index.json"
    index.write_text(index.read_text().replace('"production": 1', '"production": 7'))
    gone = subprocess.run(
        [CSDM, "eval", "cs@production", str(processed), "--registry", str(tmp_path / "reg")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gone.returncode == 2 and "Traceback" not in gone.stderr, gone.stderr
    assert "index.json points alias 'production' at '7', which is not a version" in gone.stderr


def test_the_gate_needs_a_strictly_better_model(trained, processed: Path, tmp_path: Path) -> None:
    _, exported = trained
    reg = str(tmp_path / "reg")
    passed, report = ev.gate(exported, str(processed), reg, "cs")
    assert passed and len(report.models) == 1  # nothing in production yet
    open_registry(reg, "cs").register(exported, alias="production")
    passed, report = ev.gate(exported, str(processed), reg, "cs")
    assert not passed and report.models[0].metrics == report.models[1].metrics  # a tie
    # nothing to evaluate on: a first model still registers, but never past a baseline
    with pytest.raises(ev.EvalError, match="--split nosuch: no episode of"):
        ev.gate(exported, str(processed), reg, "cs", split="nosuch")
    assert ev.gate(exported, str(processed), str(tmp_path / "empty"), "cs", split="nosuch") == (
        True,
        None,
    )
    with pytest.raises(ev.EvalError, match="no metric 'accuracy'"):
        ev.gate(exported, str(processed), reg, "cs", metric="accuracy")
    assert ev.better({"value_mse": 1.0}, {"value_mse": 2.0}, "value_mse")
    assert not ev.better({"seed_mean": 0.5}, {"seed_mean": 0.6}, "seed_mean")
    with pytest.raises(ev.EvalError, match="no metric 'accuracy'"):
        ev.better({"seed_mean": 1.0}, {"seed_mean": 1.0}, "accuracy")
