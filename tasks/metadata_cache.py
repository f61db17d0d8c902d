"""Turn a metadata file into per-episode Parquet files of inferred actions and game state."""

from __future__ import annotations

import hashlib
import os
import pickle
import posixpath
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from storage.catalog import COUNTERS, METADATA_SCHEMA, STATE_COLUMNS
from storage.diskspace import is_disk_full
from storage.fs import Root
from storage.layout import OutLayout
from storage.metadata import load_metadata
from tasks.actions.infer import infer_actions
from tasks.actions.quality import QualityThresholds

if TYPE_CHECKING:  # the Hub's client loads only where a Hub file is prepared
    from tasks.hub.transfer import HubFile, IngestPlan

STAMP_FORMAT = 1  # format_version of a metadata file's cache stamp (absent: written before it)


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


def _stamp(
    name: str, info: dict, layout: OutLayout, thresholds: QualityThresholds
) -> tuple[str, dict]:
    key = {"file": name, **info, "thresholds": asdict(thresholds)}
    return f"{layout.metadata_cache}/_{posixpath.basename(name)}.json", key


def _cached(layout: OutLayout, stamp_path: str, key: dict) -> list[MetaRecord] | None:
    """The records of an earlier preparation with the same key, if its files are all there."""
    cached = layout.root.read_json(stamp_path)
    # a stamp of another format is stale: the file is prepared again, as for another key
    if (
        cached
        and cached.get("format_version", STAMP_FORMAT) == STAMP_FORMAT
        and cached["key"] == key
    ):
        records = [MetaRecord(**r) for r in cached["records"]]
        present = set(layout.root.list(layout.metadata_cache))
        if all(r.path is None or posixpath.basename(r.path) in present for r in records):
            return records
    return None


@dataclass(frozen=True)
class MetadataFailure:
    """A metadata file that could not be used as a whole, and why (one line)."""

    path: str
    reason: str
    disk_full: bool = False


def prepare_metadata_or_failure(
    meta_path: str | Root, layout: OutLayout, thresholds: QualityThresholds
) -> list[MetaRecord] | MetadataFailure:
    """`prepare_metadata`, with an unusable file returned as a value, not raised.

    A refused or malformed file is an expected outcome: the run reports it in one line.
    """
    return _or_failure(str(meta_path), prepare_metadata, meta_path, layout, thresholds)


def prepare_hub_metadata_or_failure(
    plan: IngestPlan,
    f: HubFile,
    layout: OutLayout,
    thresholds: QualityThresholds,
    endpoint: str | None = None,
) -> list[MetaRecord] | MetadataFailure:
    """`prepare_hub_metadata`, with an unusable or unreachable file returned as a value."""
    from tasks.hub.transfer import IngestError, hub_id

    label = hub_id(plan.repo, f.path)
    args = (plan, f, layout, thresholds, endpoint)
    return _or_failure(label, prepare_hub_metadata, *args, also=(IngestError,))


def _or_failure(
    label: str, fn, *args, also: tuple[type[BaseException], ...] = ()
) -> list[MetaRecord] | MetadataFailure:
    try:
        return fn(*args)
    except (ValueError, TypeError, pickle.UnpicklingError, OSError, *also) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not text.startswith(label):
            text = f"{label}: {text}"
        return MetadataFailure(label, text, disk_full=is_disk_full(e))


def _load_as(local: str, name: str):
    """Load a local copy of metadata file `name`; errors and the batch name `name`."""
    try:
        batch = load_metadata(local)
    except (ValueError, TypeError, pickle.UnpicklingError) as e:
        raise ValueError(str(e).replace(local, name)) from None
    return replace(batch, source=name)


def _load_source(meta: Root):
    """Load a metadata file; a remote one is fetched whole first (they are ~100 MB)."""
    if meta.local:
        return load_metadata(meta.path)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, posixpath.basename(meta.url))
        meta.fs.get_file(meta.path, local)
        return _load_as(local, meta.url)


def prepare_metadata(
    meta_path: str | Root, layout: OutLayout, thresholds: QualityThresholds
) -> list[MetaRecord]:
    """Infer actions for every episode of a metadata file and cache its columns per episode.

    A second call on an unchanged file returns the cached records without reloading it.
    """
    meta = meta_path if isinstance(meta_path, Root) else Root(str(meta_path))
    stamp_path, key = _stamp(meta.url, meta.info(""), layout, thresholds)
    cached = _cached(layout, stamp_path, key)
    if cached is not None:
        return cached
    with meta.open("") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return _build(_load_source(meta), meta.url, digest, layout, thresholds, stamp_path, key)


def prepare_hub_metadata(
    plan: IngestPlan,
    f: HubFile,
    layout: OutLayout,
    thresholds: QualityThresholds,
    endpoint: str | None = None,
) -> list[MetaRecord]:
    """`prepare_metadata` of a Hub file, fetched and verified into a temporary folder.

    It is fetched only when the cache does not hold it at this checksum already.
    """
    from tasks.hub.transfer import download_file, hub_id

    name, checksum = hub_id(plan.repo, f.path), f.sha256 or f.git_oid
    stamp_path, key = _stamp(name, {"size": f.size, "checksum": checksum}, layout, thresholds)
    cached = _cached(layout, stamp_path, key)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="csdm-metadata-") as tmp:
        local = download_file(plan, f, Path(tmp), endpoint)
        batch = _load_as(str(local), name)
    return _build(batch, name, checksum, layout, thresholds, stamp_path, key)


def _build(
    batch,
    name: str,
    digest: str,
    layout: OutLayout,
    thresholds: QualityThresholds,
    stamp_path: str,
    key: dict,
) -> list[MetaRecord]:
    """Infer actions, judge and cache the columns of each episode of a loaded file."""
    acts = infer_actions(batch.state, batch.lengths)
    keep, reasons = thresholds.judge(acts.counters, batch.lengths, acts.unknown)
    cols = {
        **acts.columns(),
        **{name: batch.state.column(src) for name, src in STATE_COLUMNS.items()},
    }
    table = pa.table(cols, schema=METADATA_SCHEMA)
    records = []
    starts = np.cumsum(batch.lengths) - batch.lengths
    for i, ep in enumerate(batch.episodes):
        path = layout.episode_metadata(ep.name)
        layout.root.put_parquet(path, table.slice(int(starts[i]), int(batch.lengths[i])))
        records.append(
            MetaRecord(
                episode=ep.name,
                metadata_file=name,
                n_frames=int(batch.lengths[i]),
                counters={c: acts.counter(c, i) for c in COUNTERS},
                keep=bool(keep[i]),
                reject_reason=reasons[i],
                path=str(path),
                sha256=digest,
            )
        )
    for ep, why in batch.failures:
        records.append(
            MetaRecord(ep.name, name, reject_reason=f"metadata error: {why}", sha256=digest)
        )
    stamp = {"format_version": STAMP_FORMAT, "key": key, "records": [asdict(r) for r in records]}
    layout.root.put_json(stamp_path, stamp)
    return records
