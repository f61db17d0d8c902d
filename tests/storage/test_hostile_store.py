"""A hostile or damaged store or command line: no path leaves OUT, no shard passes as another's.

Each test is a break found by probing csdm as a hostile user would (issue 32); each failed on
the code before it. Victims sit beside OUT and must survive; reads must fail naming the episode.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.dataset import CorruptFramesError, open_dataset
from storage.fs import Root, UnsafeKeyError
from storage.layout import UnsafeNameError, check_name

VICTIM = "dm_july2021_2"
OTHER = "dm_july2021_3"
PER_SHARD = 4  # the synthetic episodes: 60 frames, one shard of 64, chunks of 16


def _shard(root: Path, episode: str) -> Path:
    (shard,) = [
        p
        for p in (root / "frames.zarr" / episode).rglob("*")
        if p.is_file() and p.name != "zarr.json"
    ]
    return shard


@pytest.fixture
def copy(processed: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(processed, out)
    return out


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "thesis.tex").write_text("four years of work")
    return folder


def _index(data: bytes) -> tuple[bytes, np.ndarray]:
    """A shard's body and its index table (offset, length) per chunk."""
    size = 16 * PER_SHARD + 4
    return data[:-size], np.frombuffer(data[-size:-4], "<u8").reshape(PER_SHARD, 2).copy()


def _with_index(body: bytes, table: np.ndarray) -> bytes:
    raw = table.astype("<u8").tobytes()  # the index's own crc32c recomputed: it "holds"
    return body + raw + google_crc32c.value(raw).to_bytes(4, "little")


def _verify(out: Path, *args: str):
    return CliRunner().invoke(app, ["verify", str(out), *args])


# --- 1. no name leaves its root ----------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["../../victim", "../frames.zarr", "../actions.zarr", "/etc", "a/b", "..", "x\n", "CON"]
)
def test_names_that_would_leave_their_folder_are_refused(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        check_name(name)


def test_a_key_with_dotdot_never_reaches_the_filesystem(tmp_path: Path) -> None:
    root = Root(str(tmp_path / "out"))
    for key in ("../victim", "a/../../victim", "/etc/passwd"):
        with pytest.raises(UnsafeKeyError):
            root.delete_tree(key)


@pytest.mark.parametrize("name", ["../../victim", "../frames.zarr", "../actions.zarr"])
def test_verify_repair_of_a_name_outside_the_dataset_deletes_nothing(
    copy: Path, victim: Path, name: str
) -> None:
    (copy.parent / "victim2").mkdir()
    r = _verify(copy, "--episodes", name, "--repair")
    assert r.exit_code == 2, r.output
    assert "not stored episode(s)" in r.output and "Traceback" not in r.output
    assert (victim / "thesis.tex").read_text() == "four years of work"
    assert (copy.parent / "victim2").is_dir()
    ds = open_dataset(copy)
    assert len(ds.episodes) == 8
    assert ds.frames(ds.episodes[0], 0, 4).shape == (4, 150, 280, 3)
    assert not (copy / "victim2").exists()


def test_a_hostile_catalog_cannot_steer_a_repair_outside_out(copy: Path, victim: Path) -> None:
    files = next((copy / "catalog").glob("files-*.parquet"))
    table = pq.read_table(files)
    records = table.column("record").to_pylist()
    hostile = json.loads(records[0])
    hostile["episode"] = "../../victim"
    records[0] = json.dumps(hostile)
    pq.write_table(
        table.set_column(table.schema.get_field_index("record"), "record", pa.array(records)), files
    )
    (copy / "frames.zarr" / VICTIM / "zarr.json").write_text("{}")  # one bad episode to repair
    r = _verify(copy, "--repair")
    assert r.exit_code == 1
    assert (victim / "thesis.tex").exists()
    assert f"bad {VICTIM}:" in r.output and "uncommitted 1 episode(s)" in r.output


def test_a_view_name_outside_views_is_refused(copy: Path) -> None:
    from storage.layout import OutLayout
    from storage.sidearrays import view_key

    with pytest.raises(UnsafeNameError):
        view_key(OutLayout.at(copy), "../../x", VICTIM)


# --- 3. every shard proves which episode it is -------------------------------------------------
def test_another_episodes_shard_in_its_place_fails_naming_the_episode(copy: Path) -> None:
    shutil.copyfile(_shard(copy, OTHER), _shard(copy, VICTIM))
    with pytest.raises(CorruptFramesError, match=rf"episode {VICTIM}.*not this episode's shard"):
        open_dataset(copy).frames(VICTIM, 0, 16)
    r = _verify(copy)
    assert r.exit_code == 1 and f"bad {VICTIM}: frames 0-59:" in r.output, r.output
    assert f"bad {OTHER}" not in r.output


def test_an_index_entry_pointing_at_another_chunk_fails(copy: Path) -> None:
    shard = _shard(copy, VICTIM)
    body, table = _index(shard.read_bytes())
    table[1] = table[0]  # chunk 1 served by chunk 0's bytes, every checksum intact
    shard.write_bytes(_with_index(body, table))
    ds = open_dataset(copy)
    with pytest.raises(CorruptFramesError, match=VICTIM):
        ds.frames(VICTIM, 16, 32)
    r = _verify(copy)
    assert r.exit_code == 1 and f"bad {VICTIM}" in r.output


def test_a_chunk_swapped_in_from_another_episode_fails(copy: Path) -> None:
    """Even with an index that matches (a forger's), the chunk's own binding catches it."""
    from storage.commit import load_state
    from storage.layout import OutLayout

    ours, theirs = _shard(copy, VICTIM), _shard(copy, OTHER)
    body, table = _index(ours.read_bytes())
    other_body, other_table = _index(theirs.read_bytes())
    off, n = (int(v) for v in other_table[2])
    body = body + other_body[off : off + n]
    table[2] = (len(body) - n, n)
    ours.write_bytes(_with_index(body, table))
    # let the index through (as if its binding had been forged), so the chunk's is what fails
    record = load_state(OutLayout.at(copy)).committed[VICTIM]
    ds = open_dataset(copy)
    reader = ds.reader(VICTIM)
    reader.binding = type(reader.binding)(
        (int.from_bytes(ours.read_bytes()[-4:], "little"),), reader.binding.chunks
    )
    assert record.chunk_crc32c
    out = np.empty((16, 150, 280, 3), np.uint8)
    ds.frames(VICTIM, 0, 16, out=out)  # an untouched chunk still reads
    with pytest.raises(
        CorruptFramesError, match=rf"{VICTIM}, frames 32-47.*not this episode's chunk"
    ):
        ds.frames(VICTIM, 32, 48)


def test_a_hub_or_bucket_serving_the_wrong_object_is_caught(copy: Path, monkeypatch) -> None:
    """A store that answers every shard request with another episode's shard."""
    wrong = _shard(copy, OTHER).read_bytes()
    ds = open_dataset(copy)
    reader = ds.reader(VICTIM)

    def serve(_s, start, end):
        data = np.frombuffer(wrong, np.uint8)
        start = len(data) + start if start is not None and start < 0 else start or 0
        return data[start : len(data) if end is None else end]

    monkeypatch.setattr(reader, "_fetch", serve)
    with pytest.raises(CorruptFramesError, match=VICTIM):
        ds.frames(VICTIM, 0, 60)


# --- geometry, indexes and non-regular files ---------------------------------------------------
def _edit_meta(out: Path, edit) -> None:
    path = out / "frames.zarr" / VICTIM / "zarr.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(edit(meta)))


def _chunks(meta: dict, shard, chunk) -> dict:
    meta["chunk_grid"]["configuration"]["chunk_shape"][0] = shard
    meta["codecs"][0]["configuration"]["chunk_shape"][0] = chunk
    return meta


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda m: _chunks(m, -256, -16), "not a whole number from 1"),
        (lambda m: _chunks(m, 64, 0), "not a whole number from 1"),
        (lambda m: {**m, "shape": [2**40, 150, 280, 3]}, "exceeds"),
        (lambda m: {**m, "shape": [48, 150, 280, 3]}, "the record says 60"),
        (lambda m: [1, 2, 3], "not an object"),
        (lambda m: 1.5, "not an object"),
    ],
)
def test_bad_geometry_is_one_error_not_black_frames(copy: Path, edit, why: str) -> None:
    _edit_meta(copy, edit)
    with pytest.raises(CorruptFramesError, match=why):
        open_dataset(copy).frames(VICTIM, 0, 48)
    r = _verify(copy)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert sum(line.startswith("bad ") for line in r.output.splitlines()) == 1, r.output


def test_a_zarr_json_that_is_not_json_is_one_error(copy: Path) -> None:
    (copy / "frames.zarr" / VICTIM / "zarr.json").write_bytes(b"\x00garbage{")
    with pytest.raises(CorruptFramesError, match="not valid JSON"):
        open_dataset(copy).frames(VICTIM, 0, 4)
    assert _verify(copy).exit_code == 1


@pytest.mark.parametrize("entry", [(1 << 40, 100), (2**64 - 1, 2**64 - 1)])
def test_an_index_past_the_end_or_marked_empty_fails_reader_and_verify(
    copy: Path, entry: tuple[int, int]
) -> None:
    shard = _shard(copy, VICTIM)
    body, table = _index(shard.read_bytes())
    table[1] = entry
    shard.write_bytes(_with_index(body, table))
    with pytest.raises(CorruptFramesError, match=VICTIM):
        open_dataset(copy).frames(VICTIM, 0, 60)
    r = _verify(copy)
    assert r.exit_code == 1 and f"bad {VICTIM}" in r.output and "0 bad" not in r.output


def _finishes(fn, seconds: float = 120):
    """Run `fn` in a thread; a hang guard, not a timing assertion."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except Exception as e:
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.parametrize("kind", ["devzero", "fifo", "directory"])
def test_a_shard_that_is_no_regular_file_is_refused_without_reading_it(
    copy: Path, kind: str
) -> None:
    shard = _shard(copy, VICTIM)
    shard.unlink()
    if kind == "devzero":
        shard.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(shard)
    else:
        shard.mkdir()

    def read():
        with pytest.raises(CorruptFramesError, match=f"{VICTIM}.*not a regular file"):
            open_dataset(copy).frames(VICTIM, 0, 16)
        return _verify(copy)

    r = _finishes(read)
    assert r.exit_code == 1 and "not a regular file" in r.output


@pytest.mark.parametrize("kind", ["fifo", "devzero", "binary"])
def test_split_files_are_read_only_from_small_regular_text_files(
    copy: Path, tmp_path: Path, kind: str
) -> None:
    from storage.localfile import InputFileError, read_text_input

    path = tmp_path / "split.txt"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(Path("/bin/ls").read_bytes()[:4096])
    with pytest.raises(InputFileError, match=str(path)):
        _finishes(lambda: read_text_input(path, "split file"))
    r = _finishes(
        lambda: CliRunner().invoke(
            app,
            ["export-diamond", str(copy), str(tmp_path / "dest"), "--test-split", str(path)],
        )
    )
    assert r.exit_code == 2 and str(path) in r.output and "Traceback" not in r.output, r.output


def test_training_that_skips_every_episode_ends_in_one_line(copy: Path, tmp_path: Path) -> None:
    from training.data import SamplerConfig
    from training.train import TrainConfig, train

    for ep in open_dataset(copy).episodes:
        shard = _shard(copy, ep)
        data = bytearray(shard.read_bytes())
        for off, _n in _index(bytes(data))[1].tolist():  # every chunk of every episode
            data[off + 8] ^= 0xA5
        shard.write_bytes(bytes(data))
    sampler = SamplerConfig(window=8, jitter=4, split=None, keep_only=False)
    cfg = TrainConfig.preset_config("tiny", steps=50, sampler=sampler, on_corrupt="skip")
    with pytest.raises(CorruptFramesError, match="no good episode left to train on"):
        _finishes(lambda: train(copy, tmp_path / "run", cfg, quiet=True), 300)


def test_a_view_size_beyond_the_memory_bound_is_refused_up_front(copy: Path) -> None:
    r = CliRunner().invoke(app, ["views", str(copy), "--size", "4096x4096"])
    assert r.exit_code == 2 and "GiB bound" in r.output and "Traceback" not in r.output
    assert not (copy / "views").exists()


def test_a_truncated_json_file_names_itself(tmp_path: Path) -> None:
    from storage.fs import CorruptFileError

    (tmp_path / "manifest.json").write_text('{"format_version": 3, "sour')
    with pytest.raises(CorruptFileError, match=rf"{tmp_path}/manifest.json: not valid JSON"):
        Root(str(tmp_path)).read_json("manifest.json")
    r = CliRunner().invoke(app, ["query", str(tmp_path), "select 1"])
    assert r.exit_code == 2 and "manifest.json: not valid JSON" in r.output
