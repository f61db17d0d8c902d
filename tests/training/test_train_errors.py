"""`csdm train` says exactly why it cannot start, and starts nothing when it cannot."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.commit import commit_episode, withdraw_episode
from storage.dataset import open_dataset
from training.data import SamplerConfig
from training.train import TrainConfig, train

SAMPLER = SamplerConfig(window=8, jitter=4, split=None, keep_only=False)


def _cfg(**sampler) -> TrainConfig:
    return TrainConfig.preset_config("tiny", steps=1, sampler=replace(SAMPLER, **sampler))


@pytest.fixture
def copy(processed: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(processed, out)
    return out


@pytest.mark.parametrize(
    ("sampler", "says"),
    [
        ({"split": "valid"}, "--split valid: no episode has that split (this dataset has test"),
        ({"weapon": "bazooka"}, "--weapon bazooka: no frame holds it (weapons in this dataset:"),
        ({"window": 500}, "the longest episode has 60 frames, fewer than --window 500"),
    ],
)
def test_bad_selection_is_named(processed: Path, tmp_path: Path, sampler, says) -> None:
    with pytest.raises(ValueError) as err:
        train(processed, tmp_path / "run", _cfg(**sampler), quiet=True)
    assert says in str(err.value)
    assert "batch-size" not in str(err.value)
    assert not (tmp_path / "run").exists()  # no config.json for a run that never started


def test_no_kept_episodes_is_named(copy: Path, tmp_path: Path) -> None:
    ds = open_dataset(copy)
    for r in ds.state.committed.values():  # every episode re-committed as rejected
        commit_episode(ds.layout, replace(r, keep=False))
    with pytest.raises(ValueError, match=r"no kept episodes .* pass --all-episodes"):
        train(copy, tmp_path / "run", _cfg(keep_only=True), quiet=True)
    assert not open_dataset(copy).files.to_pandas().keep.any()
    assert not (tmp_path / "run" / "config.json").exists()


def test_resume_on_another_dataset_is_refused(processed: Path, copy: Path, tmp_path: Path) -> None:
    train(processed, tmp_path / "run", _cfg(), quiet=True)
    ds = open_dataset(copy)
    withdraw_episode(ds.layout, ds.episodes[0], None)
    cfg = replace(_cfg(), steps=2)
    with pytest.raises(ValueError, match="was trained on another dataset"):
        train(copy, tmp_path / "run", cfg, resume=True, quiet=True)
    train(processed, tmp_path / "run", cfg, resume=True, quiet=True)  # the same one resumes


def test_cli_missing_data_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["train", str(tmp_path / "nope"), "--run", str(tmp_path / "r")], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 2 and "not a processed dataset" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
