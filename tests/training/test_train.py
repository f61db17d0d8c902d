"""The training loop: learning, checkpoints, exact resume, metrics files, DDP under torchrun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.checkpoint import load_checkpoint
from training.data import SamplerConfig
from training.loss import make_targets, seed_loss
from training.model import PRESETS, Policy
from training.train import METRIC_NAMES, TrainConfig, train

SAMPLER = SamplerConfig(window=8, jitter=4, split=None, keep_only=False)


def _cfg(steps: int, **kw) -> TrainConfig:
    return TrainConfig.preset_config(
        "tiny", **{"steps": steps, "sampler": SAMPLER, "log_every": 1, **kw}
    )


def test_the_loss_goes_down_on_a_fixed_batch(processed: Path) -> None:
    from training.data import WindowStream, build_index, load_labels

    idx = build_index(load_labels(processed, SAMPLER), SAMPLER)
    batch = WindowStream(processed, idx, 2).read([(0, 0), (1, 8)])
    torch.manual_seed(0)
    model = Policy(replace(PRESETS["tiny"], dropout=0.0, recurrent_dropout=0.0, drop_connect=0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    targets = make_targets(batch)
    losses = []
    for _ in range(25):
        loss = seed_loss(model(batch["frames"])[0], targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_resume_continues_exactly(processed: Path, tmp_path: Path) -> None:
    # the test split: 12 windows, 3 batches of 4 per epoch, so the resume crosses an epoch
    cross = {"batch_size": 4, "sampler": replace(SAMPLER, split="test")}
    train(processed, tmp_path / "a", _cfg(4, **cross), quiet=True)
    train(processed, tmp_path / "b", _cfg(2, **cross), quiet=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train(processed, tmp_path / "b", _cfg(4, **cross), quiet=True)
    train(processed, tmp_path / "b", _cfg(4, **cross), resume=True, quiet=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a.step == b.step == 4 and a.stream == b.stream
    assert a.stream["epoch"] == 1 and a.stream["cursor"] == 1
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    with open(tmp_path / "b" / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == [1, 2, 3, 4]
    assert set(METRIC_NAMES) <= set(table[0])
    ref = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref]
    assert all(0 <= r["wasd_acc"] <= 1 and r["value_mse"] >= 0 for r in rows)
    with pytest.raises(ValueError, match="seed, batch size and ranks were"):
        train(
            processed,
            tmp_path / "b",
            _cfg(6, **{**cross, "batch_size": 3}),
            resume=True,
            quiet=True,
        )
    with pytest.raises(ValueError, match=r"another network or sampler \(window 8 -> 6"):
        train(
            processed,
            tmp_path / "b",
            replace(_cfg(6, **cross), sampler=replace(SAMPLER, window=6)),
            resume=True,
            quiet=True,
        )


@pytest.mark.slow
def test_two_ranks_under_torchrun(processed: Path, tmp_path: Path) -> None:
    """As the train flow runs it: every rank reads one resolved config file, not flags."""
    from training.resolve import resolve_config, write_config_file

    cfg = resolve_config(
        sampler={"window": 8, "split": None, "keep_only": False}, log_every=1, workers=0, steps=3
    )
    config = write_config_file(cfg, tmp_path / "config.json")
    csdm = str(Path(sys.executable).with_name("csdm"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node=2",
            "--no-python",
            "--",
            csdm,
            "train",
            str(processed),
            "--run",
            str(tmp_path / "ddp"),
            "--steps",
            "3",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    ck = load_checkpoint(tmp_path / "ddp")
    assert ck.world == 2 and ck.step == 3 and len(ck.rng) == 2
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # one writer: rank 0
    assert rows[-1]["frames"] == 3 * 2 * 8 * 2  # steps x batch x window x ranks
