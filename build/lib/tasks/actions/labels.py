"""Label metadata files: inferred actions per frame, quality verdicts per episode (`csdm infer`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.action_space import KEYS
from storage.catalog import COUNTERS
from storage.catalog import INFER_FILES_SCHEMA as FILES_SCHEMA
from storage.catalog import INFER_FRAMES_SCHEMA as FRAMES_SCHEMA
from storage.localfile import commit_file
from storage.metadata import MetadataBatch, load_metadata
from tasks.actions.infer import InferredActions, frame_index, infer_actions
from tasks.actions.quality import QualityThresholds
from tasks.actions.targets import helper_flags


@dataclass
class Labels:
    """Labels of one metadata file: a frames table and a files table."""

    frames: pa.Table  # FRAMES_SCHEMA
    files: pa.Table  # FILES_SCHEMA


def key_matrix(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n, 11) bool membership matrix of a list<string> column of key names."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    out = np.zeros((len(keys), len(KEYS)), bool)
    code = pc.index_in(pc.list_flatten(keys), value_set=pa.array(KEYS)).to_numpy(
        zero_copy_only=False
    )
    parent = pc.list_parent_indices(keys).to_numpy()
    known = ~np.isnan(code.astype(np.float64))
    out[parent[known], code[known].astype(np.int64)] = True
    return out


def _agreement(batch: MetadataBatch, acts: InferredActions, episode: np.ndarray) -> dict:
    n_ep = len(batch.lengths)
    if batch.shipped is None:
        return {
            k: pa.nulls(n_ep, pa.float64()) for k in ("agree_keys", "agree_mouse", "agree_clicks")
        }
    ship = batch.shipped
    same_keys = (key_matrix(ship.column("ship_keys")) == acts.key_matrix).all(axis=1)
    same_mouse = np.isclose(ship.column("ship_mouse_x").to_numpy(), acts.mouse_x, 1e-9, 1e-9)
    same_mouse &= np.isclose(ship.column("ship_mouse_y").to_numpy(), acts.mouse_y, 1e-9, 1e-9)
    same_clicks = (ship.column("ship_lclick").to_numpy() == acts.lclick) & (
        ship.column("ship_rclick").to_numpy() == acts.rclick
    )

    def share(flag: np.ndarray) -> pa.Array:
        return pa.array(np.bincount(episode, weights=flag, minlength=n_ep) / batch.lengths)

    return {
        "agree_keys": share(same_keys),
        "agree_mouse": share(same_mouse),
        "agree_clicks": share(same_clicks),
    }


def label_batch(batch: MetadataBatch, thresholds: QualityThresholds) -> Labels:
    """Infer actions and quality verdicts for every episode of a loaded metadata file."""
    acts = infer_actions(batch.state, batch.lengths)
    n_ep = len(batch.episodes)
    episode, local = frame_index(batch.lengths)
    names = pa.array([e.name for e in batch.episodes])
    datasets = pa.array([e.dataset for e in batch.episodes])
    nums = np.array([e.file_num for e in batch.episodes], np.int32)
    helper = helper_flags(batch.state, batch.lengths).astype(bool)
    frames = pa.table(
        {
            "episode": names.take(episode),
            "dataset": datasets.take(episode),
            "file_num": nums[episode],
            "frame": local.astype(np.int32),
            **acts.columns(),
            "kill": helper[:, 0],
            "death": helper[:, 1],
        },
        schema=FRAMES_SCHEMA,
    )
    keep, reasons = thresholds.judge(acts.counters, batch.lengths, acts.unknown)
    ok_files = {
        "episode": names,
        "dataset": datasets,
        "file_num": nums,
        "metadata_file": [batch.source] * n_ep,
        "n_frames": batch.lengths.astype(np.int32),
        **{c: acts.counter_column(c) for c in COUNTERS},
        "keep": keep,
        "reject_reason": reasons,
        **_agreement(batch, acts, episode),
    }
    files = pa.table(ok_files, schema=FILES_SCHEMA)
    if batch.failures:
        files = pa.concat_tables([files, failed_files(batch.source, batch.failures)])
    return Labels(frames, files)


def failed_files(source: str, failures: list) -> pa.Table:
    """Files-table rows for episodes whose metadata could not be used."""
    n = len(failures)
    cols = {
        "episode": [e.name for e, _ in failures],
        "dataset": [e.dataset for e, _ in failures],
        "file_num": [e.file_num for e, _ in failures],
        "metadata_file": [source] * n,
        "n_frames": [0] * n,
        "keep": [False] * n,
        "reject_reason": [f"error: {r}" for _, r in failures],
    }
    return pa.table(
        {f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in FILES_SCHEMA}, schema=FILES_SCHEMA
    )


def label_metadata_file(path: str | Path, thresholds: QualityThresholds) -> Labels:
    """Load one metadata file (either layout) and label it."""
    return label_batch(load_metadata(path), thresholds)


class LabelsWriter:
    """Streams `frames.parquet` and `files.parquet` into `out`, one metadata file at a time.

    Both are written under temporary names and renamed on a clean close, so readers never
    see a partial file; memory holds one metadata file's frames at a time.
    """

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.paths = out / "frames.parquet", out / "files.parquet"
        self._tmp = tuple(p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in self.paths)
        self._frames = pq.ParquetWriter(self._tmp[0], FRAMES_SCHEMA, compression="zstd")
        self._files: list[pa.Table] = []

    def add(self, labels: Labels) -> None:
        """Append one metadata file's labels."""
        self._frames.write_table(labels.frames)
        self._files.append(labels.files)

    def __enter__(self) -> LabelsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._frames.close()
        if exc_type is not None:
            for t in self._tmp:
                t.unlink(missing_ok=True)
            return
        files = pa.concat_tables(self._files) if self._files else FILES_SCHEMA.empty_table()
        pq.write_table(files, self._tmp[1], compression="zstd")
        for tmp, final in zip(self._tmp, self.paths, strict=True):
            commit_file(tmp, final)


def write_labels(labels: list[Labels], out: Path) -> tuple[Path, Path]:
    """Write `frames.parquet` and `files.parquet` under `out`."""
    with LabelsWriter(out) as writer:
        for x in labels:
            writer.add(x)
    return writer.paths
