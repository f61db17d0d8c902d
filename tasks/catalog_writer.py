"""Finish a processing run: `files.parquet`, `manifest.json` and a summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np

from storage.action_space import FPS, FRAME_SHAPE
from storage.commit import compact, load_state, remember_failure
from storage.framestore import LEGACY_CODEC
from storage.layout import OutLayout
from storage.records import EpisodeRecord, Manifest, csdm_version
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
    # every source defect and duplicate the dataset knows, this run's or earlier: named each run
    defects: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
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


def read_manifest(layout: OutLayout) -> Manifest | None:
    """OUT's manifest, or None before the first run finished."""
    d = layout.root.read_json(layout.manifest)
    return None if d is None else Manifest.from_dict(d, layout.root.url_of(layout.manifest))


def check_parameters(layout: OutLayout, parameters: dict) -> None:
    """Refuse to extend an OUT built with other parameters (splits and verdicts would mix)."""
    manifest = read_manifest(layout)
    if manifest is None:
        return
    # datasets from before the codec was a parameter hold the old format's frames
    old = {"codec": LEGACY_CODEC, **manifest.parameters}
    diff = sorted(k for k in set(old) | set(parameters) if old.get(k) != parameters.get(k))
    if diff:
        changes = ", ".join(
            f"{k}: built with {old.get(k)!r}, this run {parameters.get(k)!r}" for k in diff
        )
        raise ParametersChangedError(
            f"{layout.root.url} was built with other parameters ({changes}). Use a new OUT, the "
            "same parameters to resume, or --reprocess to re-judge and re-split every episode "
            "with the new ones (stored frames are kept unless the codec changes)"
        )


def write_manifest(
    layout: OutLayout, source: str, parameters: dict, revision: str | None = None
) -> Manifest:
    """Record a run's source and parameters (at its start too: OUT opens while it writes)."""
    previous = read_manifest(layout)
    manifest = Manifest(
        csdm_version=csdm_version(),
        sources=sorted(set(previous.sources if previous else []) | {source}),
        revision=revision or (previous.revision if previous else None),
        parameters=parameters,
        updated=datetime.now(UTC).isoformat(timespec="seconds"),
        frame_rate=FPS,
    )
    layout.root.put_json(layout.manifest, manifest.to_dict())
    return manifest


def problem_record(p: SourceProblem, defect: bool = False) -> EpisodeRecord:
    """A `files.parquet` row for a member that could not be used (`defect`: the publisher's)."""
    ep = p.episode
    reason = f"source defect: {p.reason} (the archive matches the publisher's sha256)"
    return EpisodeRecord(
        episode=ep.name if ep else None,
        dataset=ep.dataset if ep else None,
        file_num=ep.file_num if ep else None,
        split=None,
        container=p.container,
        member=p.member,
        reject_reason=reason if defect else p.reason,
        status="defect" if defect else "failed",
    )


def _where(r: EpisodeRecord) -> str:
    return f"{r.episode} ({r.container.rsplit('/', 1)[-1]}:{r.member})" if r.member else r.container


def write_catalog(
    layout: OutLayout,
    records: list[EpisodeRecord],
    source: str,
    parameters: dict,
    revision: str | None = None,
    meta_failures: list | None = None,
) -> RunSummary:
    """Remember failures, write the manifest and compact the catalog; summarise this run.

    Failures are remembered until a later run stores the episode, so running on part of a
    source never drops earlier rows. The caller holds OUT's lease (compaction needs it).
    """
    for r in records:
        if r.status in ("failed", "defect", "duplicate", "resolved") and not r.skipped:
            remember_failure(layout, r)
    records = [r for r in records if r.status != "resolved"]
    write_manifest(layout, source, parameters, revision)
    compact(layout)
    state = load_state(layout)
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
        defects=tuple(f"{_where(r)}: {r.reject_reason}" for r in state.defects()),
        duplicates=tuple(f"{r.episode}: {r.reject_reason}" for r in state.duplicates()),
        redone_episodes=tuple(f"{r.episode} ({r.redone})" for r in records if r.redone),
    )
