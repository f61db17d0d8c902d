"""A shared run folder cannot run code: checkpoints load as tensors and plain data only."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint
from training.train import TrainConfig, save_untrained, train

CSDM = str(Path(sys.executable).with_name("csdm"))


class _Payload:
    """Unpickling this calls os.system: what a hostile ckpt.pt would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(run: Path, marker: Path) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "ckpt.pt"
    torch.save({"model": {}, "config": {}, "x": _Payload(marker)}, ckpt)
    return ckpt


def test_a_reduce_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = _hostile(tmp_path / "run", marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "run")
    assert str(ckpt) in str(err.value) and "nothing in it was run" in str(err.value)
    assert not marker.exists()


def test_the_payload_really_runs_under_a_full_unpickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = _hostile(tmp_path / "run", marker)
    with zipfile.ZipFile(ckpt) as z:  # the file's own pickle stream, as a full unpickle reads it
        stream = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    pickle.loads(stream)
    assert marker.exists()


def test_resume_refuses_a_hostile_checkpoint(processed: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _hostile(tmp_path / "run", marker)
    cfg = TrainConfig.preset_config("tiny", steps=1)
    with pytest.raises(CheckpointError, match=r"ckpt\.pt"):
        train(processed, tmp_path / "run", cfg, resume=True, quiet=True)
    assert not marker.exists()


def test_cli_export_and_resume_print_one_line(processed: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _hostile(tmp_path / "run", marker)
    run = str(tmp_path / "run")
    for args in (
        ["export", run, "--out", str(tmp_path / "exp")],
        ["train", str(processed), "--run", run, "--resume"],
    ):
        r = subprocess.run(
            [CSDM, *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert r.returncode == 2, r.stderr
        assert "refused" in r.stderr and "Traceback" not in r.stderr
        assert not marker.exists()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage/ckpt.pt").write_bytes(b"\x00not a checkpoint" * 50)
    r = subprocess.run(
        [CSDM, "export", str(tmp_path / "garbage"), "--out", str(tmp_path / "e2")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "garbage/ckpt.pt" in r.stderr and "Traceback" not in r.stderr


def test_real_checkpoints_still_load(tmp_path: Path) -> None:
    save_untrained(tmp_path / "run", "tiny")
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 0 and ckpt.config["preset"] == "tiny"
    pickle.dumps(ckpt.config)  # plain data
