"""The `pipeline` flow: download tars from the Hub and process each as soon as it is verified.

Downloads run on a thread pool while episodes are repacked on the flow's Dask runner, so tar
k+1 transfers while tar k is processed. With a disk budget, processed tars are deleted and
no download starts that would exceed the budget.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.ingest import download_task, plan_task
from flows.process import (
    ProcessParams,
    _report,
    collect_records,
    dask_runner,
    prepare_all_metadata,
    process_flow,
    submit_repacks,
)
from flows.report_artifacts import publish_report
from storage.framestore import sweep_leftovers
from storage.layout import METADATA_RE, OutLayout
from tasks.catalog_writer import check_parameters, problem_record, write_catalog
from tasks.hub import (
    REPO,
    SUBSETS,
    HubFile,
    IngestError,
    local_path,
    patterns_for,
    pending,
    record_verified,
)
from tasks.metadata_cache import write_json_atomic
from tasks.source import list_source

STATE = ".pipeline.json"  # containers already processed, by repo path and checksum


@contextmanager
def _closing(runner, starting: Future):
    """Shut the background-started runner down however the block ends."""
    try:
        yield
    finally:
        starting.result()
        runner.__exit__(None, None, None)


@flow(name="pipeline", log_prints=True)
def pipeline_flow(
    out: str,
    dest: str = "data/hub",
    repo: str = REPO,
    revision: str = "main",
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    subsets: tuple[str, ...] = (),
    source: str = "",
    params: ProcessParams = ProcessParams(),  # noqa: B008  (shown filled in the run form)
    max_disk: Annotated[int, Field(ge=0)] = 0,
    delete_sources: bool = False,
    transfers: Annotated[int, Field(ge=1, le=64)] = 2,
    endpoint: str = "",
    workers: Annotated[int, Field(ge=0, le=4096)] = 0,
    scheduler: str = "",
    show_progress: bool = False,
) -> dict:
    """Ingest and process as one stream; `source` processes a local tree instead of the Hub.

    The flow's own task runner (threads) downloads; repacking runs on a Dask runner that is
    started in the background, so its start-up overlaps the first transfers.

    Args:
        out: Dataset folder to write (frames.zarr, catalog/, manifest.json).
        dest: Folder the Hub's files are downloaded to.
        repo: Dataset repo on the Hub.
        revision: Branch, tag or commit of the repo.
        include: fnmatch globs over repo paths; empty: the subsets.
        exclude: Globs of repo paths to leave out.
        subsets: dm_scraped, dm_expert, aim_expert, other_maps, metadata; empty: all.
        source: A local tree in the public layout to process instead of the Hub.
        params: Splits and quality limits of the dataset.
        max_disk: Bytes of downloaded tars allowed on disk at once; 0: no budget.
        delete_sources: Delete each tar once processed.
        transfers: Parallel downloads.
        endpoint: Hub URL; empty: HF_ENDPOINT or the public Hub.
        workers: Local Dask worker processes; 0: one per core.
        scheduler: An existing Dask scheduler (tcp://host:8786); empty: a local cluster.
        show_progress: Progress bars on the terminal (the CLI sets it).

    """
    logger = get_run_logger()
    params = params or ProcessParams()
    if source:
        runner = dask_runner(workers or None, scheduler or None)
        summary = process_flow.with_options(task_runner=runner)(source, out, params, show_progress)
        return {**summary.counts(), "failures": list(summary.failures)}
    t0 = time.monotonic()
    layout, dest_path = OutLayout(Path(out)), Path(dest)
    check_parameters(layout, params.recorded())
    sweep_leftovers(layout)
    splits, thresholds = params.splits(), params.thresholds()
    patterns = patterns_for(list(include), list(subsets) or ([] if include else list(SUBSETS)))
    plan = plan_task(repo, revision, patterns, list(exclude), endpoint or None)
    state_path = layout.root / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    metadata = [f for f in plan.files if METADATA_RE.match(PurePosixPath(f.path).name)]
    containers = [f for f in plan.files if f.path.endswith((".tar", ".zip", ".hdf5"))
                  and state.get(f.path) != (f.sha256 or f.git_oid)]  # fmt: skip
    budget = max_disk or float("inf")
    delete = delete_sources or max_disk > 0
    too_big = [f.path for f in containers if f.size > budget]
    if too_big:
        raise IngestError(f"--max-disk {max_disk} is smaller than {too_big[0]}; raise it")
    records, fetched, peak = [], 0, 0
    dask = dask_runner(workers or None, scheduler or None)
    starting = ThreadPoolExecutor(1).submit(dask.__enter__)

    with ThreadPoolTaskRunner(max_workers=transfers) as io, _closing(dask, starting):

        def fetch(f: HubFile):
            return io.submit(
                download_task, {"plan": plan, "f": f, "dest": dest, "endpoint": endpoint or None}
            )

        todo = pending(plan, dest_path)
        wanted = [f for f in metadata if f in todo]
        meta_futures = [fetch(f) for f in wanted]
        for fut in meta_futures:
            fut.result()
        record_verified(plan, dest_path, wanted)
        fetched += sum(f.size for f in wanted)
        meta_paths = [local_path(dest_path, f.path) for f in metadata]
        meta: dict = {}
        meta_ready = False

        def ensure_meta() -> None:
            nonlocal meta_ready
            if not meta_ready:
                starting.result()  # the Dask cluster is up
                meta.update(prepare_all_metadata(meta_paths, out, thresholds, [], runner=dask))
                meta_ready = True

        downloads: dict = {}  # future -> HubFile
        processing: list = []  # (HubFile, {future: SourceEpisode}, problems)
        on_disk = 0

        def start_processing(f: HubFile) -> None:
            ensure_meta()
            listing = list_source(local_path(dest_path, f.path))
            futures = submit_repacks(listing.episodes, out, meta, params, runner=dask)
            processing.append((f, futures, listing.problems))

        def finish_oldest() -> None:
            nonlocal on_disk
            f, futures, problems = processing.pop(0)
            records.extend(collect_records(futures, splits))
            records.extend(problem_record(p) for p in problems)
            state[f.path] = f.sha256 or f.git_oid
            write_json_atomic(state, state_path)
            if delete:
                local_path(dest_path, f.path).unlink(missing_ok=True)
                on_disk -= f.size

        def reap_downloads(block: bool) -> None:
            nonlocal fetched
            for fut in list(downloads):
                if block or fut.state.is_final():
                    f = downloads.pop(fut)
                    fut.result()  # raises IngestError naming the file
                    record_verified(plan, dest_path, [f])
                    fetched += f.size
                    start_processing(f)
                    block = False

        for f in containers:
            while on_disk + f.size > budget:  # wait for room: finish the oldest tar first
                if processing:
                    finish_oldest()
                elif downloads:
                    reap_downloads(block=True)
                else:
                    break
            if f in todo:
                downloads[fetch(f)] = f
            else:
                start_processing(f)  # verified by an earlier run, still on disk
            on_disk += f.size
            peak = max(peak, on_disk)
            reap_downloads(block=False)
        while downloads:
            reap_downloads(block=True)
        while processing:
            finish_oldest()

    summary = write_catalog(layout, records, f"{repo}@{plan.commit}", params.recorded(),
                            revision=plan.commit)  # fmt: skip
    _report(records, summary)
    publish_report(out)
    result = {**summary.counts(), "commit": plan.commit, "containers": len(containers),
              "downloaded_bytes": fetched, "peak_source_bytes": peak,
              "seconds": round(time.monotonic() - t0, 2)}  # fmt: skip
    create_table_artifact(key="pipeline-summary", table=[result])
    logger.info("pipeline summary: %s", result)
    return {**result, "failures": list(summary.failures)}
