"""The small things a new user meets first: version, help, synth into a used folder, view."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()
COMMANDS = sorted(get_command(app).commands)


def test_version() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"csdm {version('csdm')}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_explained_and_fits_80_columns(name: str) -> None:
    cmd = get_command(app).commands[name]
    for p in cmd.params:
        assert getattr(p, "help", None), f"csdm {name}: {p.name} has no help"
    r = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0
    wide = [line for line in r.output.splitlines() if len(line) > 80]
    assert not wide, wide


def test_train_help_shows_the_presets_defaults() -> None:
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    text = " ".join(r.output.split())
    assert "(default: tiny 2, paper 1)" in text and "(default: tiny 16, paper 96)" in text


def test_synth_refuses_a_used_folder_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "src"
    args = [
        "synth",
        str(out),
        "--frames",
        "8",
        "--tars",
        "2",
        "--episodes-per-tar",
        "1",
        "--expert-episodes",
        "0",
    ]
    assert runner.invoke(app, args).exit_code == 0
    tars = sorted(p.name for p in out.glob("*.tar"))
    assert tars == ["hdf5_dm_july2021_1_to_1.tar", "hdf5_dm_july2021_2_to_2.tar"]
    fewer = [
        "synth",
        str(out),
        "--frames",
        "8",
        "--tars",
        "1",
        "--episodes-per-tar",
        "2",
        "--expert-episodes",
        "0",
    ]
    r = runner.invoke(app, fewer)
    assert r.exit_code == 2 and "already holds a source tree" in r.output and "--force" in r.output
    r = runner.invoke(app, [*fewer, "--force"])
    assert r.exit_code == 0, r.output
    # no stale tar of the earlier tree is left to collide with the new one's episodes
    assert sorted(p.name for p in out.glob("*.tar")) == ["hdf5_dm_july2021_1_to_2.tar"]


def test_view_past_the_end_says_so(processed: Path, tmp_path: Path) -> None:
    args = [
        "view",
        str(processed),
        "dm_july2021_1",
        "--start",
        "50",
        "--count",
        "20",
        "--out",
        str(tmp_path / "v.png"),
    ]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 2
    assert "frames 50-69 run past its last frame 59" in r.output and "--count 10" in r.output
    assert not (tmp_path / "v.png").exists()
