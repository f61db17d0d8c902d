"""The rename-free commit protocol and the compacted catalog, on a local folder."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from storage.catalog import FRAMES_SCHEMA
from storage.commit import commit_episode, compact, load_state, withdraw_episode
from storage.layout import OutLayout
from storage.records import EpisodeRecord, FormatError
from tasks.catalog_writer import check_parameters, read_manifest, write_catalog


def _rows(layout: OutLayout, episode: str, n: int = 3, mark: int = 0) -> str:
    """Frames rows of an episode (mouse_x carries `mark`, to tell versions apart)."""
    cols = {f.name: pa.nulls(n, f.type) for f in FRAMES_SCHEMA}
    cols.update(
        dataset=pa.array(["dm_x"] * n),
        episode=pa.array([episode] * n),
        file_num=pa.array([1] * n, pa.int32()),
        frame=pa.array(range(n), pa.int32()),
        split=pa.array(["train"] * n),
        mouse_x=pa.array([float(mark)] * n, pa.float32()),
    )
    for f in FRAMES_SCHEMA:
        if f.type == pa.bool_() and not f.nullable:
            cols[f.name] = pa.array([False] * n)
        elif f.name == "mouse_y":
            cols[f.name] = pa.array([0.0] * n, pa.float32())
    key = layout.new_frames_file(episode)
    layout.root.put_parquet(key, pa.table(cols, schema=FRAMES_SCHEMA))
    return key


def _store(layout: OutLayout, episode: str, mark: int = 0) -> EpisodeRecord:
    r = EpisodeRecord(
        episode,
        "dm_x",
        int(episode.rsplit("_", 1)[1]),
        "train",
        "a.tar",
        f"hdf5_{episode}.hdf5",
        sha256=f"{mark:064d}",
        n_frames=3,
        keep=True,
        status="stored",
        frames_file=_rows(layout, episode, mark=mark),
    )
    commit_episode(layout, r)
    return r


def _failed(episode: str | None, member: str) -> EpisodeRecord:
    return EpisodeRecord(
        episode,
        "dm_x" if episode else None,
        None,
        None,
        "b.tar",
        member,
        reject_reason="unreadable: truncated",
    )


def _marks(layout: OutLayout) -> dict[str, float]:
    from storage.dataset import FramesCatalog

    t = FramesCatalog(*load_state(layout).frames_sources(layout)).to_table(["episode", "mouse_x"])
    assert len(set(t.column("episode").to_pylist())) * 3 == t.num_rows  # no episode twice
    return dict(zip(t.column("episode").to_pylist(), t.column("mouse_x").to_pylist(), strict=False))


def test_rows_accumulate_over_partial_runs(tmp_path: Path) -> None:
    layout = OutLayout.at(str(tmp_path))
    s1 = write_catalog(
        layout,
        [_store(layout, "dm_x_1"), _failed("dm_x_2", "hdf5_dm_x_2.hdf5"), _failed(None, "../evil")],
        "src-a",
        {"p": 1},
    )
    assert (s1.stored, s1.failed) == (1, 2)
    write_catalog(layout, [_store(layout, "dm_x_3")], "src-b", {"p": 1})
    files = load_state(layout).files_table().to_pandas()
    assert sorted(files.member) == [
        "../evil",
        "hdf5_dm_x_1.hdf5",
        "hdf5_dm_x_2.hdf5",
        "hdf5_dm_x_3.hdf5",
    ]
    assert read_manifest(layout).sources == ["src-a", "src-b"]
    assert sorted(load_state(layout).committed) == ["dm_x_1", "dm_x_3"]
    # episode 2 is fixed and stored by a later run: its failure disappears
    write_catalog(layout, [_store(layout, "dm_x_2")], "src-b", {"p": 1})
    files = load_state(layout).files_table().to_pandas().set_index("member")
    assert files.loc["hdf5_dm_x_2.hdf5", "status"] == "stored"
    assert (files.status == "failed").sum() == 1
    with pytest.raises(ValueError, match="other parameters"):
        check_parameters(layout, {"p": 2})


def test_an_episode_is_visible_only_once_its_record_is_written(tmp_path: Path) -> None:
    layout = OutLayout.at(str(tmp_path))
    _rows(layout, "dm_x_1")  # frames rows written, then a crash before the record
    assert load_state(layout).committed == {} and _marks(layout) == {}
    _store(layout, "dm_x_2")
    assert _marks(layout) == {"dm_x_2": 0.0}
    compact(layout)  # debris without a record is dropped
    assert layout.root.list(layout.pending_frames) == []
    assert _marks(layout) == {"dm_x_2": 0.0}


def test_redoing_a_compacted_episode_hides_the_old_rows_at_every_step(tmp_path: Path) -> None:
    layout = OutLayout.at(str(tmp_path))
    for i in (1, 2, 3):
        _store(layout, f"dm_x_{i}")
    index = compact(layout)
    assert index.generation == 1 and index.episodes == 3 and len(index.frames_parts) == 1
    assert layout.root.list(layout.records) == []  # folded in
    withdraw_episode(layout, "dm_x_2", None)  # the redo starts: hidden, not half-visible
    assert _marks(layout) == {"dm_x_1": 0.0, "dm_x_3": 0.0}
    _store(layout, "dm_x_2", mark=7)  # committed again with new rows
    assert _marks(layout) == {"dm_x_1": 0.0, "dm_x_2": 7.0, "dm_x_3": 0.0}
    index = compact(layout)
    assert index.generation == 2 and layout.root.list(layout.uncommitted) == []
    assert _marks(layout) == {"dm_x_1": 0.0, "dm_x_2": 7.0, "dm_x_3": 0.0}
    # generations before the previous one are deleted
    compact(layout)
    names = layout.root.list("catalog")
    assert not [n for n in names if n.startswith(("frames-000001", "files-000001"))]


def test_a_record_of_another_version_is_refused_by_name(tmp_path: Path) -> None:
    layout = OutLayout.at(str(tmp_path))
    r = _store(layout, "dm_x_1")
    layout.root.put_json(layout.episode_record("dm_x_1"), {**r.to_dict(), "format_version": 99})
    with pytest.raises(
        FormatError, match=r"_episodes/dm_x_1.json: episode record format version 99"
    ):
        load_state(layout)
