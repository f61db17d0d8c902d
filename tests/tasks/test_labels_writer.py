"""Label files appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.metadata import load_metadata
from tasks.actions.labels import LabelsWriter, label_batch
from tasks.actions.quality import QualityThresholds


def test_a_crash_leaves_no_partial_files(tmp_path: Path, synth_tree: Path) -> None:
    batch = load_metadata(synth_tree / "dataset_metadata/currvarsv2_dm_july2021_1_to_100.npy")
    labels = label_batch(batch, QualityThresholds())
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), LabelsWriter(out) as writer:
        writer.add(labels)
        raise RuntimeError("killed mid-run")
    assert list(out.iterdir()) == []
    with LabelsWriter(out) as writer:
        writer.add(labels)
        writer.add(labels)
    assert sorted(p.name for p in out.iterdir()) == ["files.parquet", "frames.parquet"]
    assert pq.read_table(out / "frames.parquet").num_rows == 2 * batch.lengths.sum()
    assert pq.read_table(out / "files.parquet").num_rows == 2 * len(batch.episodes)
