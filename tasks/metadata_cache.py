"""Turn a metadata file into per-episode Parquet files of inferred actions and game state."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.catalog import COUNTERS, METADATA_SCHEMA, STATE_COLUMNS
from storage.checksums import sha256_file
from storage.diskspace import is_disk_full
from storage.layout import OutLayout
from storage.metadata import load_metadata
from tasks.infer import infer_actions
from tasks.quality import QualityThresholds


@dataclass(frozen=True)
class MetaRecord:
    """What the metadata says about one episode; `path` holds its per-frame columns."""

    episode: str
    metadata_file: str
    n_frames: int = 0
    counters: dict[str, int] | None = None
    keep: bool = False
    reject_reason: str | None = None
    path: str | None = None  # None: the metadata of this episode is unusable (see reason)
    sha256: str | None = None  # of the metadata file: a changed file redoes its episodes


def _stamp(meta_path: Path, layout: OutLayout, thresholds: QualityThresholds) -> tuple[Path, dict]:
    st = meta_path.stat()
    key = {"file": str(meta_path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "thresholds": asdict(thresholds)}  # fmt: skip
    return layout.metadata_cache / f"_{meta_path.name}.json", key


@dataclass(frozen=True)
class MetadataFailure:
    """A metadata file that could not be used as a whole, and why (one line)."""

    path: str
    reason: str
    disk_full: bool = False


def prepare_metadata_or_failure(
    meta_path: str | Path, layout: OutLayout, thresholds: QualityThresholds
) -> list[MetaRecord] | MetadataFailure:
    """`prepare_metadata`, with an unusable file returned as a value, not raised.

    A refused or malformed file is an expected outcome: the run reports it in one line.
    """
    try:
        return prepare_metadata(meta_path, layout, thresholds)
    except (ValueError, TypeError, pickle.UnpicklingError, OSError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not text.startswith(str(meta_path)):
            text = f"{meta_path}: {text}"
        return MetadataFailure(str(meta_path), text, disk_full=is_disk_full(e))


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write Parquet under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:  # a full disk must not leave a partial file behind
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(obj: object, path: Path) -> None:
    """Write JSON under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def prepare_metadata(
    meta_path: str | Path, layout: OutLayout, thresholds: QualityThresholds
) -> list[MetaRecord]:
    """Infer actions for every episode of a metadata file and cache its columns per episode.

    A second call on an unchanged file returns the cached records without reloading it.
    """
    meta_path = Path(meta_path)
    stamp_path, key = _stamp(meta_path, layout, thresholds)
    if stamp_path.exists():
        cached = json.loads(stamp_path.read_text())
        if cached["key"] == key and all(
            r["path"] is None or Path(r["path"]).exists() for r in cached["records"]
        ):
            return [MetaRecord(**r) for r in cached["records"]]
    digest = sha256_file(meta_path)
    batch = load_metadata(meta_path)
    acts = infer_actions(batch.state, batch.lengths)
    keep, reasons = thresholds.judge(acts.counters, batch.lengths)
    cols = {
        **acts.columns(),
        **{name: batch.state.column(src) for name, src in STATE_COLUMNS.items()},
    }
    table = pa.table(cols, schema=METADATA_SCHEMA)
    records = []
    starts = np.cumsum(batch.lengths) - batch.lengths
    for i, ep in enumerate(batch.episodes):
        path = layout.episode_metadata(ep.name)
        write_parquet_atomic(table.slice(int(starts[i]), int(batch.lengths[i])), path)
        records.append(
            MetaRecord(
                episode=ep.name,
                metadata_file=str(meta_path),
                n_frames=int(batch.lengths[i]),
                counters={c: int(acts.counters[c][i]) for c in COUNTERS},
                keep=bool(keep[i]),
                reject_reason=reasons[i],
                path=str(path),
                sha256=digest,
            )
        )
    for ep, why in batch.failures:
        records.append(MetaRecord(ep.name, str(meta_path), reject_reason=f"metadata error: {why}",
                                  sha256=digest))  # fmt: skip
    write_json_atomic({"key": key, "records": [asdict(r) for r in records]}, stamp_path)
    return records
