"""The `csdm` console script end to end, as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.synth import reference as ref
from tasks.synth.tree import save_legacy_npy

CSDM = [str(Path(sys.executable).with_name("csdm"))]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}  # keep rich from wrapping messages mid-word
    return subprocess.run(
        [*CSDM, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.slow
def test_synth_then_infer_writes_the_documented_tables(tmp_path: Path) -> None:
    src = tmp_path / "src"
    r = _run(
        "synth",
        str(src),
        "--seed",
        "5",
        "--frames",
        "50",
        "--tars",
        "1",
        "--episodes-per-tar",
        "6",
        "--expert-episodes",
        "1",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (src / "hdf5_dm_july2021_1_to_6.tar").is_file()
    r = _run("infer", str(src), "--out", str(tmp_path / "labels"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    files = pq.read_table(tmp_path / "labels/files.parquet").to_pandas().set_index("episode")
    frames = pq.read_table(tmp_path / "labels/frames.parquet").to_pandas()
    assert sorted(files.index) == sorted(
        [f"dm_july2021_{i}" for i in range(1, 7)] + ["dm_july2021_expert_1"]
    )
    assert len(frames) == 7 * 50 and (files["n_frames"] == 50).all()
    # the episode kinds the synthesiser cycles through are judged as the seed would
    assert not files.loc["dm_july2021_3", "keep"]  # idle
    assert "vel_static" in files.loc["dm_july2021_3", "reject_reason"]
    assert not files.loc["dm_july2021_6", "keep"]  # third-person spectating
    assert "obs_count" in files.loc["dm_july2021_6", "reject_reason"]
    assert files.loc["dm_july2021_1", "keep"] and files.loc["dm_july2021_expert_1", "keep"]
    # values equal the per-frame reference run over the same metadata
    from storage.safepickle import load_npy

    meta = load_npy(src / "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy").item()
    states = [meta[f"file_num4_frame_{i}"][0] for i in range(50)]
    want, counters = ref.infer_episode(states)
    got = frames[frames.episode == "dm_july2021_4"].sort_values("frame")
    assert [list(k) for k in got.infer_keys] == [w[0] for w in want]
    np.testing.assert_array_equal(got.infer_mouse_x, [w[1] for w in want])
    for c, v in counters.items():
        assert files.loc["dm_july2021_4", c] == v
    assert "quality per dataset" in r.stdout and "rejected dm_july2021_3" in r.stdout


def test_bad_files_are_reported_and_the_rest_goes_on(tmp_path: Path, synth_tree: Path) -> None:
    meta = tmp_path / "meta"
    shutil.copytree(synth_tree / "dataset_metadata", meta)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    save_legacy_npy(meta / "currvarsv2_dm_nuke_expert_1_to_100.npy", {"file_num1_frame_0": Evil()})
    (meta / "currvarsv2_dm_mirage_expert_1_to_100.npy").write_bytes(b"\x93NUMPY garbage")
    r = _run("infer", str(meta), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 1
    assert "currvarsv2_dm_nuke_expert_1_to_100.npy" in r.stderr and "may carry code" in r.stderr
    assert "currvarsv2_dm_mirage_expert_1_to_100.npy" in r.stderr
    assert "2 file(s) could not be read" in r.stderr
    assert not marker.exists()
    files = pq.read_table(tmp_path / "out/files.parquet")
    assert files.num_rows == 8  # the good files were labelled and written
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    r = _run("infer", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "no such file or folder" in r.stderr


def test_codec_and_disagree_options_reach_their_parameters(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.cli_common import CodecChoice, _process_params
    from storage.metadata import load_metadata
    from tasks.actions.labels import label_batch
    from tasks.actions.quality import QualityThresholds

    args = {"split_file": None, "test_fraction": 0.0, "seed": 0, "codec": CodecChoice("jpegxl")}
    assert _process_params(args).codec == "jpegxl"
    runner = CliRunner()
    r = runner.invoke(app, ["process", str(tmp_path), str(tmp_path / "o"), "--codec", "gif"])
    assert r.exit_code == 2 and "gradient-zstd" in r.output
    r = runner.invoke(
        app,
        [
            "synth",
            str(tmp_path / "s"),
            "--frames",
            "30",
            "--tars",
            "1",
            "--episodes-per-tar",
            "1",
            "--expert-episodes",
            "0",
            "--disagree",
            "0.1",
        ],
    )
    assert r.exit_code == 0, r.output
    meta = load_metadata(tmp_path / "s/dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy")
    files = label_batch(meta, QualityThresholds()).files.to_pandas()
    for col in ("agree_keys", "agree_clicks", "agree_mouse"):  # 3 of 30 frames changed per kind
        assert files.loc[0, col] == pytest.approx(1 - 3 / 30)
