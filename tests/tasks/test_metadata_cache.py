"""Metadata files are inferred once per change, and cached per episode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tasks.metadata_cache as mc
from storage.catalog import METADATA_SCHEMA
from storage.layout import OutLayout
from tasks.actions.quality import QualityThresholds


def test_cache_is_reused_until_the_file_changes(synth_tree: Path, tmp_path: Path, monkeypatch):
    meta = synth_tree / "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy"
    layout = OutLayout.at(tmp_path)
    first = mc.prepare_metadata(meta, layout, QualityThresholds())
    assert [r.episode for r in first] == [f"dm_july2021_{i}" for i in range(1, 7)]
    table = layout.root.read_parquet(first[1].path)
    assert table.schema == METADATA_SCHEMA and table.num_rows == first[1].n_frames

    def no_reload(path):
        raise AssertionError("reloaded an unchanged metadata file")

    monkeypatch.setattr(mc, "load_metadata", no_reload)
    assert mc.prepare_metadata(meta, layout, QualityThresholds()) == first
    st = meta.stat()
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    try:
        with pytest.raises(AssertionError, match="reloaded"):
            mc.prepare_metadata(meta, layout, QualityThresholds())
    finally:
        os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
