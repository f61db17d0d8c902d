"""Finish a processing run: `files.parquet`, `manifest.json` and a summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version

import numpy as np
import pyarrow as pa

from storage.action_space import FRAME_SHAPE
from storage.catalog import FILES_SCHEMA
from storage.layout import FORMAT_VERSION, OutLayout
from tasks.metadata_cache import write_json_atomic, write_parquet_atomic
from tasks.repack import EpisodeRecord
from tasks.source import SourceProblem

FRAME_BYTES = int(np.prod(FRAME_SHAPE))


@dataclass(frozen=True)
class RunSummary:
    """Counts of one run."""

    episodes: int
    stored: int
    skipped: int
    kept: int
    rejected: int
    failed: int
    raw_bytes: int
    stored_bytes: int


def check_parameters(layout: OutLayout, parameters: dict) -> None:
    """Refuse to extend an OUT built with other parameters (splits and verdicts would mix)."""
    if not layout.manifest.exists():
        return
    old = json.loads(layout.manifest.read_text()).get("parameters", {})
    diff = {k for k in set(old) | set(parameters) if old.get(k) != parameters.get(k)}
    if diff:
        raise ValueError(
            f"{layout.root} was built with other parameters ({', '.join(sorted(diff))}: "
            f"{ {k: old.get(k) for k in sorted(diff)} }); use a new OUT folder, or the same "
            "parameters to resume"
        )


def problem_record(p: SourceProblem) -> EpisodeRecord:
    """A `files.parquet` row for a member that could not be used."""
    ep = p.episode
    return EpisodeRecord(
        episode=ep.name if ep else None,
        dataset=ep.dataset if ep else None,
        file_num=ep.file_num if ep else None,
        split=None,
        container=p.container,
        member=p.member,
        reject_reason=p.reason,
    )


def write_catalog(
    layout: OutLayout, records: list[EpisodeRecord], source: str, parameters: dict
) -> RunSummary:
    """Write `files.parquet` and `manifest.json` from this run's records."""
    rows = [r.row() for r in sorted(records, key=lambda r: (r.episode or "", r.container))]
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=FILES_SCHEMA), layout.files_parquet)
    stored = [r for r in records if r.status == "stored"]
    manifest = {
        "format_version": FORMAT_VERSION,
        "csdm_version": version("csdm"),
        "source": source,
        "revision": None,  # known when the source came from the Hub (ingest)
        "parameters": parameters,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "episodes": {r.episode: r.sha256 for r in sorted(stored, key=lambda r: r.episode)},
    }
    write_json_atomic(manifest, layout.manifest)
    return RunSummary(
        episodes=len(records),
        stored=len(stored),
        skipped=sum(r.skipped for r in records),
        kept=sum(r.keep for r in stored),
        rejected=sum(not r.keep for r in stored),
        failed=sum(r.status == "failed" for r in records),
        raw_bytes=sum(int(r.n_frames or 0) * FRAME_BYTES for r in stored),
        stored_bytes=sum(int(r.stored_bytes or 0) for r in stored),
    )
