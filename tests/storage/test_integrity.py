"""Stored chunks carry checksums: corruption is an error naming the episode, never bad frames."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.dataset import CorruptFramesError, open_dataset
from tests.conftest import process_plain
from training.data import SamplerConfig, WindowStream, build_index, load_labels
from training.train import TrainConfig, train

VICTIM = "dm_july2021_2"


def _shard(root: Path, episode: str) -> Path:
    files = [p for p in (root / "frames.zarr" / episode).rglob("*") if p.is_file()]
    (shard,) = [p for p in files if p.name != "zarr.json"]
    return shard


def _flip(path: Path, offset: int, n: int = 4) -> None:
    data = bytearray(path.read_bytes())
    for k in range(n):
        data[offset + k] ^= 0xA5
    path.write_bytes(bytes(data))


@pytest.fixture
def copy(processed: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(processed, out)
    return out


def test_a_flipped_byte_anywhere_in_a_shard_is_an_error(copy: Path) -> None:
    shard = _shard(copy, VICTIM)
    good = open_dataset(copy).frames(VICTIM)
    pristine = shard.read_bytes()
    size = len(pristine)
    # data chunks, chunk boundaries and the shard index at the end (as the probe did: 7 offsets)
    for offset in (0, 17, size // 5, size // 3, size // 2, size - 40, size - 6):
        shard.write_bytes(pristine)
        _flip(shard, offset)
        ds = open_dataset(copy)
        with pytest.raises(CorruptFramesError) as err:
            got = ds.frames(VICTIM)
            # unreachable when checksums work; shows what silently came back otherwise
            print(offset, (got != good).sum())
        msg = str(err.value)
        assert str(copy) in msg and f"episode {VICTIM}" in msg and "frames " in msg
    shard.write_bytes(pristine)
    np.testing.assert_array_equal(open_dataset(copy).frames(VICTIM), good)


def test_the_error_names_the_bad_chunks_frame_range(copy: Path) -> None:
    good = open_dataset(copy).frames(VICTIM)
    shard = _shard(copy, VICTIM)
    _flip(shard, 100)  # inside the first chunk (frames 0-15)
    ds = open_dataset(copy)
    with pytest.raises(CorruptFramesError, match="frames 0-15"):
        ds.frames(VICTIM, 10, 50)
    # the other chunk still reads, and is right
    np.testing.assert_array_equal(ds.frames(VICTIM, 16, 60), good[16:60])


def test_a_truncated_or_missing_shard_names_the_episode_and_frames(copy: Path) -> None:
    shard = _shard(copy, VICTIM)
    n = open_dataset(copy).n_frames(VICTIM)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(
        CorruptFramesError,
        match=rf"episode {VICTIM}, frames 0-{n - 1}: "
        r"corrupt chunk \(shard index",
    ):
        open_dataset(copy).frames(VICTIM, 5, 20)
    shard.unlink()
    with pytest.raises(
        CorruptFramesError,
        match=rf"frames 0-{n - 1}: corrupt chunk \(shard "
        r"missing\)",
    ):
        open_dataset(copy).frames(VICTIM, 5, 20)


def test_verify_lists_bad_episodes_and_repair_lets_process_restore_them(
    copy: Path, synth_tree: Path
) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 0, r.output
    assert "8 episode(s), 480 frames checked: 0 bad" in r.output
    _flip(_shard(copy, VICTIM), 100)
    lost = _shard(copy, "dm_july2021_5")
    lost.unlink()  # a lost shard would read back as black frames
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 1
    assert f"bad {VICTIM}: frames 0-15:" in r.output
    assert "bad dm_july2021_5: frames 0-59: shard missing" in r.output
    assert "8 episode(s), 480 frames checked: 2 bad" in r.output
    r = runner.invoke(app, ["verify", str(copy), "--episodes", "dm_july2021_1"])
    assert r.exit_code == 0 and "1 episode(s), 60 frames checked: 0 bad" in r.output
    r = runner.invoke(app, ["verify", str(copy), "--repair"])
    assert r.exit_code == 1 and "uncommitted 2 episode(s)" in r.output
    ds = open_dataset(copy)
    assert VICTIM not in ds.episodes
    files = ds.files.to_pandas().set_index("episode")
    assert files.loc[VICTIM, "status"] == "failed"
    assert "corrupt in the store" in files.loc[VICTIM, "reject_reason"]
    process_plain(synth_tree, copy)
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 0 and "0 bad" in r.output, r.output
    assert VICTIM in open_dataset(copy).episodes


CFG = SamplerConfig(window=8, jitter=4, split=None, keep_only=False)


def test_training_stops_on_a_corrupt_chunk_or_skips_the_episode(copy: Path) -> None:
    _flip(_shard(copy, VICTIM), 100)
    lab = load_labels(copy, CFG)
    victim = lab.episodes.index(VICTIM)
    stream = WindowStream(copy, build_index(lab, CFG), batch_size=2)
    with pytest.raises(CorruptFramesError, match=VICTIM):
        stream.read([(victim, 0), (0, 0)])
    other = 1 if victim != 1 else 3
    skip = WindowStream(copy, build_index(lab, CFG), batch_size=2, on_corrupt="skip")
    batch = skip.read([(victim, 0), (other, 0), (victim, 40)])  # 40: an intact chunk, same ep
    assert batch["corrupt_episodes"] == [VICTIM, VICTIM]
    assert batch["frames"].shape[0] == 1
    want = open_dataset(copy).frames(lab.episodes[other], 0, 8)
    np.testing.assert_array_equal(batch["frames"][0].numpy(), want)
    assert batch["keys"].shape[0] == 1


def test_train_refuses_bad_bytes_unless_told_to_skip(copy: Path, tmp_path: Path) -> None:
    import json

    _flip(_shard(copy, VICTIM), 100)  # frames 0-15: the episode is dropped once they fail
    cfg = TrainConfig.preset_config("tiny", steps=24, sampler=CFG, log_every=1)  # one epoch
    with pytest.raises(CorruptFramesError, match=VICTIM):
        train(copy, tmp_path / "stop", cfg, quiet=True)
    skip = TrainConfig.preset_config("tiny", steps=24, sampler=CFG, log_every=1, on_corrupt="skip")
    result = train(copy, tmp_path / "skip", skip, quiet=True)
    assert result.step == 24
    rows = [json.loads(x) for x in (tmp_path / "skip/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["corrupt_windows"] >= 4
