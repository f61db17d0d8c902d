"""The `process` flow: a source tree in the public layout to Zarr frames + a Parquet catalog."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner
from pydantic import BaseModel, Field

from flows.report_artifacts import publish_report
from storage.diskspace import DiskFullError, check_free
from storage.framestore import sweep_leftovers
from storage.layout import OutLayout, metadata_dataset
from tasks.catalog_writer import RunSummary, check_parameters, problem_record, write_catalog
from tasks.metadata_cache import MetadataFailure, MetaRecord, prepare_metadata_or_failure
from tasks.quality import QualityThresholds
from tasks.repack import EpisodeRecord, repack_episode
from tasks.source import SourceEpisode, SourceListing, list_source
from tasks.splits import SplitSpec, read_split_file


class ProcessParams(BaseModel):
    """Parameters that shape the output; a resumed run must use the same ones."""

    test_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of episodes put in the test split (0 to 1)."
    )
    seed: int = Field(0, ge=0, description="Seed of the hash that assigns episodes to splits.")
    split_file: str = Field(
        "",
        description="File naming the test episodes, one per line (e.g. DIAMOND's "
        "diamond_test_split.txt); overrides the test fraction. Empty: none.",
    )
    dead_skipped: int = Field(
        200, ge=0, description="Reject an episode with more dead frames than this."
    )
    ram_gsi_disagree_hp: int = Field(
        20, ge=0, description="Reject above this many frames where RAM and GSI health disagree."
    )
    ram_gsi_disagree_ammo: int = Field(
        20, ge=0, description="Reject above this many frames where RAM and GSI ammo disagree."
    )
    obs_count: int = Field(
        0, ge=0, description="Reject above this many frames spectating another player."
    )
    mouse_static: int = Field(
        650, ge=0, description="Reject above this many frames without mouse movement."
    )
    vel_static: int = Field(
        350, ge=0, description="Reject above this many frames without player movement."
    )
    per_frames: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="The limits above are per this many frames (the seed's 1000-frame files); "
        "0 makes them absolute counts.",
    )

    def thresholds(self) -> QualityThresholds:
        """The quality limits."""
        return QualityThresholds(
            dead_skipped=self.dead_skipped,
            ram_gsi_disagree_hp=self.ram_gsi_disagree_hp,
            ram_gsi_disagree_ammo=self.ram_gsi_disagree_ammo,
            obs_count=self.obs_count,
            mouse_static=self.mouse_static,
            vel_static=self.vel_static,
            per_frames=self.per_frames or None,
        )

    def splits(self) -> SplitSpec:
        """The split rule."""
        if self.split_file:
            return read_split_file(self.split_file)
        return SplitSpec(test_fraction=self.test_fraction, seed=self.seed)

    def quality(self) -> dict:
        """The parameters that decide an episode's verdict (recorded with each episode)."""
        return self.model_dump(exclude={"test_fraction", "seed", "split_file"})

    def recorded(self) -> dict:
        """What the manifest records and a resumed run must match."""
        d = self.model_dump()
        if self.split_file:
            d["split_file"] = str(Path(self.split_file).resolve())
        return d


def dask_runner(workers: int | None = None, scheduler: str | None = None) -> DaskTaskRunner:
    """An existing cluster at `scheduler` (or $CSDM_DASK_SCHEDULER), else a local one.

    The local cluster has one single-threaded worker process per core.
    """
    scheduler = scheduler or os.environ.get("CSDM_DASK_SCHEDULER")
    if scheduler:
        return DaskTaskRunner(address=scheduler)
    n = workers or os.cpu_count() or 1
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": n,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",
        }
    )


@task(name="list-source")
def list_source_task(src: str) -> SourceListing:
    """List episodes, metadata files and problems of the source."""
    return list_source(src)


@task(name="prepare-metadata", retries=1, retry_delay_seconds=2)
def prepare_metadata_task(
    path: Path, out: str, thresholds: QualityThresholds
) -> list[MetaRecord] | MetadataFailure:
    """Infer actions for one metadata file and cache them per episode."""
    return prepare_metadata_or_failure(path, OutLayout(Path(out)), thresholds)


@task(name="repack-episode", retries=1, retry_delay_seconds=2)  # idempotent: resumes
def repack_task(
    src: SourceEpisode, out: str, meta: MetaRecord | None, split: str, quality: dict
) -> EpisodeRecord:
    """Store one episode's frames and catalog rows; a full disk is returned, not raised."""
    try:
        return repack_episode(src, out, meta, split, quality)
    except DiskFullError as e:  # a value, so the run stops with one line, not a traceback
        return e


def _covers(path: Path, ep: SourceEpisode) -> bool:
    """Whether a `currvarsv2_{stub}{a}_to_{b}.npy` file holds this episode's metadata."""
    named = metadata_dataset(path.name)
    if named is None:
        return False
    dataset, first, last = named
    return dataset == ep.episode.dataset and first <= ep.episode.file_num <= last


def _needed_metadata(listing: SourceListing, pending: list[SourceEpisode]) -> list[Path]:
    return [p for p in listing.metadata if any(_covers(p, e) for e in pending)]


def _report(records: list[EpisodeRecord], summary: RunSummary) -> None:
    bad = [r for r in records if r.status == "failed" or not r.keep]
    create_table_artifact(
        key="rejected-and-failed-episodes",
        table=[
            {
                "episode": r.episode,
                "status": r.status,
                "reason": r.reject_reason,
                "location": f"{r.container}:{r.member}" if r.member else r.container,
            }
            for r in bad
        ],
        description=f"{summary.failed} failed, {summary.rejected} rejected of {summary.episodes}",
    )
    create_table_artifact(key="process-summary", table=[summary.counts()])


def _submit(runner: TaskRunner | None, task_, **params):
    """Submit to `runner`, or to the flow's own task runner when None."""
    return runner.submit(task_, params) if runner else task_.submit(**params)


def prepare_all_metadata(
    paths: list[Path],
    out: str,
    thresholds: QualityThresholds,
    episodes: list[SourceEpisode],
    runner: TaskRunner | None = None,
    failures: list[MetadataFailure] | None = None,
) -> dict[str, MetaRecord]:
    """Infer actions for metadata files in parallel; a file that fails marks its episodes.

    Files that could not be used are appended to `failures`.
    """
    meta: dict[str, MetaRecord] = {}
    futures = {
        _submit(runner, prepare_metadata_task, path=p, out=out, thresholds=thresholds): p
        for p in paths
    }
    for fut in as_completed(list(futures)):
        path = futures[fut]
        try:
            result = fut.result()
        except Exception as e:  # crashed on a worker
            result = MetadataFailure(str(path), f"{type(e).__name__}: {e}")
        if isinstance(result, MetadataFailure):  # unusable as a whole: say so per episode
            if result.disk_full:
                raise DiskFullError(out)
            if failures is not None:
                failures.append(result)
            why = f"metadata file unusable: {result.reason}"
            for ep in filter(lambda ep: _covers(path, ep), episodes):
                meta[ep.episode.name] = MetaRecord(ep.episode.name, str(path), reject_reason=why)
        else:
            meta.update({r.episode: r for r in result})
    return meta


def submit_repacks(
    episodes: list[SourceEpisode],
    out: str,
    meta: dict[str, MetaRecord],
    params: ProcessParams,
    runner: TaskRunner | None = None,
) -> dict:
    """One repack task per episode (on `runner`, default the flow's); futures -> episode."""
    splits, quality = params.splits(), params.quality()
    return {
        _submit(runner, repack_task, src=e, out=out, meta=meta.get(e.episode.name),
                split=splits.split_of(e.episode.name), quality=quality): e
        for e in episodes
    }  # fmt: skip


def collect_records(futures: dict, splits: SplitSpec, tick=None) -> list[EpisodeRecord]:
    """Records of finished repack tasks; a crashed task becomes a failed record."""
    records = []
    for fut in as_completed(list(futures)):
        try:
            record = fut.result()
        except Exception as e:  # a crash in one episode never stops the others
            src_ep = futures[fut]
            why = f"crashed: {type(e).__name__}: {e}"
            record = EpisodeRecord.failed(src_ep, splits.split_of(src_ep.episode.name), why)
        if isinstance(record, DiskFullError):  # every other episode would fail alike: stop
            for other in futures:  # those not started yet never start
                wrapped = getattr(other, "wrapped_future", None)
                if wrapped is not None:
                    wrapped.cancel()
            raise record
        records.append(record)
        if tick:
            tick()
    return records


class NoEpisodesError(ValueError):
    """A source with nothing csdm can process."""


EXPECTED = (
    "expected hdf5_{stub}{n}.hdf5 episodes, loose or in .tar/.zip archives, and "
    "dataset_metadata/currvarsv2_*.npy, as on the Hub"
)


def estimate_bytes(layout: OutLayout, episodes: list[SourceEpisode]) -> int:
    """Bytes the episodes will take once stored: their source size times the ratio seen so far.

    Before anything is stored, 0.8 is assumed: real frames compress at least 1.3x.
    """
    raw = sum(max(e.ref.size, 0) for e in episodes)
    done = [json.loads(p.read_text()) for p in list(layout.records.glob("*.json"))[:200]]
    ratio = sum(r["stored_bytes"] or 0 for r in done) / max(sum(r["size"] or 0 for r in done), 1)
    return int(raw * (ratio if done and ratio > 0 else 0.8))


@flow(name="process", log_prints=True, task_runner=dask_runner())
def process_flow(
    src: str,
    out: str,
    params: ProcessParams = ProcessParams(),  # noqa: B008  (pydantic models are immutable here)
    show_progress: bool = False,
    reprocess: bool = False,
) -> RunSummary:
    """Repack every episode of `src` into `out`; resumable, one Dask task per episode.

    Args:
        src: Source tree in the public layout (tars, zips, loose .hdf5, dataset_metadata/).
        out: Dataset folder to write (frames.zarr, catalog/, manifest.json).
        params: Splits and quality limits; a rerun must use OUT's unless `reprocess`.
        show_progress: Progress bars on the terminal (the CLI sets it).
        reprocess: Accept parameters other than OUT's: episodes are re-judged, frames kept.

    """
    logger = get_run_logger()
    params = params or ProcessParams()
    layout = OutLayout(Path(out))
    if not reprocess:
        check_parameters(layout, params.recorded())
    splits, thresholds = params.splits(), params.thresholds()
    listing = list_source_task(src)
    if not listing.episodes and not listing.problems:
        raise NoEpisodesError(f"no episodes found in {src} ({EXPECTED})")
    swept = sweep_leftovers(layout)
    if swept:
        logger.warning("removed %d leftovers of an interrupted run under %s", swept, out)
    pending = [e for e in listing.episodes if not layout.episode_record(e.episode.name).exists()]
    check_free(out, estimate_bytes(layout, pending))
    logger.info(
        "%d episodes (%d new), %d metadata files, %d problems",
        len(listing.episodes), len(pending), len(listing.metadata), len(listing.problems),
    )  # fmt: skip
    meta_failures: list[MetadataFailure] = []
    meta = prepare_all_metadata(
        _needed_metadata(listing, listing.episodes), out, thresholds, listing.episodes,
        failures=meta_failures,
    )  # fmt: skip
    futures = submit_repacks(listing.episodes, out, meta, params)
    progress_id = create_progress_artifact(progress=0.0, key="process-progress")
    bar = _cli_progress(len(futures)) if show_progress else None
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if bar:
            bar.advance(bar.task_ids[0])
        if done % max(1, len(futures) // 20) == 0 or done == len(futures):
            update_progress_artifact(progress_id, progress=100.0 * done / len(futures))

    try:
        records = collect_records(futures, splits, tick)
    finally:
        if bar:
            bar.stop()
    records += [problem_record(p) for p in listing.problems]
    summary = write_catalog(
        layout, records, str(src), params.recorded(), meta_failures=meta_failures
    )
    _report(records, summary)
    publish_report(out)
    logger.info("summary: %s", summary.counts())
    return summary


def _cli_progress(total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("repack", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar.add_task("repack", total=total)
    bar.start()
    return bar
