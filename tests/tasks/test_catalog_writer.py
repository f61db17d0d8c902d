"""files.parquet covers every run so far; failures stay listed until the episode is stored."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.layout import OutLayout
from tasks.catalog_writer import check_parameters, write_catalog
from tasks.metadata_cache import write_json_atomic
from tasks.repack import EpisodeRecord


def _stored(layout: OutLayout, episode: str) -> EpisodeRecord:
    r = EpisodeRecord(episode, "dm_x", int(episode.rsplit("_", 1)[1]), "train", "a.tar",
                      f"hdf5_{episode}.hdf5", sha256="ab" * 32, n_frames=10, keep=True,
                      status="stored")  # fmt: skip
    write_json_atomic({k: v for k, v in asdict(r).items() if k != "skipped"},
                      layout.episode_record(episode))  # fmt: skip
    return r


def _failed(episode: str | None, member: str) -> EpisodeRecord:
    return EpisodeRecord(episode, "dm_x" if episode else None, None, None, "b.tar", member,
                         reject_reason="unreadable: truncated")  # fmt: skip


def test_rows_accumulate_over_partial_runs(tmp_path: Path) -> None:
    layout = OutLayout(tmp_path)
    s1 = write_catalog(layout, [_stored(layout, "dm_x_1"), _failed("dm_x_2", "hdf5_dm_x_2.hdf5"),
                                _failed(None, "../evil")], "src-a", {"p": 1})  # fmt: skip
    assert (s1.stored, s1.failed) == (1, 2)
    write_catalog(layout, [_stored(layout, "dm_x_3")], "src-b", {"p": 1})
    files = pq.read_table(layout.files_parquet).to_pandas()
    assert sorted(files.member) == ["../evil", "hdf5_dm_x_1.hdf5", "hdf5_dm_x_2.hdf5",
                                    "hdf5_dm_x_3.hdf5"]  # fmt: skip
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["sources"] == ["src-a", "src-b"] and set(manifest["episodes"]) == {
        "dm_x_1", "dm_x_3"}  # fmt: skip
    # episode 2 is fixed and stored by a later run: its failure disappears
    write_catalog(layout, [_stored(layout, "dm_x_2")], "src-b", {"p": 1})
    files = pq.read_table(layout.files_parquet).to_pandas().set_index("member")
    assert files.loc["hdf5_dm_x_2.hdf5", "status"] == "stored"
    assert (files.status == "failed").sum() == 1
    with pytest.raises(ValueError, match="other parameters"):
        check_parameters(layout, {"p": 2})
