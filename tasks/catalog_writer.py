"""Finish a processing run: `files.parquet`, `manifest.json` and a summary."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
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
    failures: tuple[str, ...] = ()  # "episode or member: reason", every failed one
    metadata_failures: tuple[str, ...] = ()  # "file: reason"
    redone_episodes: tuple[str, ...] = ()  # "episode (what changed)"

    @property
    def redone(self) -> int:
        """Episodes rebuilt because their inputs changed."""
        return len(self.redone_episodes)

    def counts(self) -> dict[str, int]:
        """The numbers alone (for tables)."""
        ints = {k: v for k, v in asdict(self).items() if isinstance(v, int)}
        return {**ints, "redone": self.redone, "metadata_failed": len(self.metadata_failures)}


class ParametersChangedError(ValueError):
    """OUT was built with other parameters than this run's."""


def check_parameters(layout: OutLayout, parameters: dict) -> None:
    """Refuse to extend an OUT built with other parameters (splits and verdicts would mix)."""
    if not layout.manifest.exists():
        return
    old = json.loads(layout.manifest.read_text()).get("parameters", {})
    diff = sorted(k for k in set(old) | set(parameters) if old.get(k) != parameters.get(k))
    if diff:
        changes = ", ".join(
            f"{k}: built with {old.get(k)!r}, this run {parameters.get(k)!r}" for k in diff
        )
        raise ParametersChangedError(
            f"{layout.root} was built with other parameters ({changes}). Use a new OUT, the "
            "same parameters to resume, or --reprocess to re-judge and re-split every episode "
            "with the new ones (stored frames are kept)"
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


def _failure_key(r: EpisodeRecord) -> str:
    if r.episode:
        return r.episode
    return "member-" + hashlib.sha1(f"{r.container}:{r.member}".encode()).hexdigest()[:16]


def _read_records(folder) -> list[EpisodeRecord]:
    return [EpisodeRecord(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]


def write_catalog(
    layout: OutLayout,
    records: list[EpisodeRecord],
    source: str,
    parameters: dict,
    revision: str | None = None,
    meta_failures: list | None = None,
) -> RunSummary:
    """Write `files.parquet` and `manifest.json` over every run so far, and summarise this one.

    Completed episodes come from their records; failures are remembered in `_failed/` until a
    later run stores the episode, so running on part of a source never drops earlier rows.
    """
    for r in records:
        if r.status == "failed":
            write_json_atomic(r.stored(), layout.failure_record(_failure_key(r)))
        elif r.episode:
            layout.failure_record(r.episode).unlink(missing_ok=True)
    stored_all = _read_records(layout.records)
    done = {r.episode for r in stored_all}
    failed_all = [r for r in _read_records(layout.failures) if r.episode not in done]
    rows = [r.row() for r in sorted(stored_all + failed_all,
                                    key=lambda r: (r.episode or "", r.container))]  # fmt: skip
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=FILES_SCHEMA), layout.files_parquet)
    previous = json.loads(layout.manifest.read_text()) if layout.manifest.exists() else {}
    manifest = {
        "format_version": FORMAT_VERSION,
        "csdm_version": version("csdm"),
        "sources": sorted(set(previous.get("sources", [])) | {source}),
        "revision": revision or previous.get("revision"),  # the Hub commit, when from the Hub
        "parameters": parameters,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "episodes": {r.episode: r.sha256 for r in sorted(stored_all, key=lambda r: r.episode)},
    }
    write_json_atomic(manifest, layout.manifest)
    stored = [r for r in records if r.status == "stored"]
    return RunSummary(
        episodes=len(records),
        stored=len(stored),
        skipped=sum(r.skipped for r in records),
        kept=sum(r.keep for r in stored),
        rejected=sum(not r.keep for r in stored),
        failed=sum(r.status == "failed" for r in records),
        raw_bytes=sum(int(r.n_frames or 0) * FRAME_BYTES for r in stored),
        stored_bytes=sum(int(r.stored_bytes or 0) for r in stored),
        failures=tuple(
            f"{r.episode or r.member or r.container}: {r.reject_reason}"
            for r in records
            if r.status == "failed"
        ),
        metadata_failures=tuple(f.reason for f in meta_failures or []),
        redone_episodes=tuple(f"{r.episode} ({r.redone})" for r in records if r.redone),
    )
