"""Process a Hub archive as it streams past: no copy on disk, nothing committed unverified.

One call reads one tar or zip front to back. Each episode is repacked from memory as it
passes, its frames and rows written but not committed; the running sha256 is compared with
the Hub's LFS sha256 at the end, and only on a match are the episodes' records written.
"""

from __future__ import annotations

import contextlib
import io
import queue
import resource
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

from storage.archive_stream import StreamedMember, stream_tar, stream_zip, zip_directory
from storage.commit import CatalogState, commit_episode, failure_key
from storage.containers import ArchiveDamagedError, MemberRef, UnsafeMemberError
from storage.diskspace import DiskFullError
from storage.framestore import remove_frames
from storage.fs import Root
from storage.layout import (
    OutLayout,
    archive_range,
    episode_from_member,
    metadata_dataset,
    odd_member_name,
)
from storage.records import EpisodeRecord
from tasks.actions.quality import QualityThresholds
from tasks.catalog_writer import problem_record
from tasks.hub.transfer import HubFile, HubReader, IngestError, IngestPlan, hub_id
from tasks.metadata_cache import MetadataFailure, MetaRecord, prepare_hub_metadata_or_failure
from tasks.params import ProcessParams
from tasks.process_source import Mapper, run_here
from tasks.repack import failed_record, repack_episode
from tasks.source import SourceEpisode, SourceProblem, problem_of

STREAMED = (".tar", ".zip", ".hdf5")


@dataclass(frozen=True)
class StreamResult:
    """What streaming one archive did: its records (committed only when `verified`)."""

    path: str  # in the repo
    container: str  # hf://datasets/{repo}/{path}, as the records name it
    verified: bool
    records: list[EpisodeRecord] = field(default_factory=list)
    resumes: int = 0  # connections reopened with a Range request
    peak_rss: int = 0  # bytes: the worker's peak resident memory while it streamed this archive
    start_rss: int = 0  # bytes: its resident memory when this archive began


def for_archive(path: str, table: dict) -> dict:
    """The entries of `table` (keyed by episode) an archive can hold, judged by its name.

    A scraped tar names its episode range; other archives get the whole table.
    """
    span = archive_range(path)
    if span is None:
        return dict(table)
    dataset, first, last = span
    out = {}
    for name, value in table.items():
        stub, _, num = name.rpartition("_")
        if stub == dataset and num.isdigit() and first <= int(num) <= last:
            out[name] = value
    return out


def prepare_streamed_metadata(
    plan: IngestPlan,
    files: list[HubFile],
    out: Root,
    thresholds: QualityThresholds,
    mapper: Mapper = run_here,
    endpoint: str | None = None,
) -> tuple[dict[str, MetaRecord], list[MetadataFailure]]:
    """Prepare the metadata files straight from the Hub, each where the mapper runs it."""
    calls = [
        {
            "plan": plan,
            "f": f,
            "layout": OutLayout(out),
            "thresholds": thresholds,
            "endpoint": endpoint,
        }
        for f in files
    ]
    meta, failures = {}, []
    for i, result in mapper(prepare_hub_metadata_or_failure, calls):
        if isinstance(result, BaseException):  # crashed on a worker
            name = hub_id(plan.repo, files[i].path)
            result = MetadataFailure(name, f"{name}: {type(result).__name__}: {result}")
        if isinstance(result, MetadataFailure):
            if result.disk_full:
                raise DiskFullError(out.url)
            failures.append(result)
        else:
            meta.update({r.episode: r for r in result})
    return meta, failures


def metadata_for(
    path: str, meta: dict[str, MetaRecord], failures: list[MetadataFailure]
) -> dict[str, MetaRecord]:
    """The metadata an archive's episodes need, with the reason where a file was unusable."""
    out = for_archive(path, meta)
    span = archive_range(path)
    for fail in failures if span else []:
        named = metadata_dataset(fail.path.rsplit("/", 1)[-1])
        if named and named[0] == span[0]:
            why = f"metadata file unusable: {fail.reason}"
            for n in range(max(named[1], span[1]), min(named[2], span[2]) + 1):
                name = f"{span[0]}_{n}"
                out.setdefault(name, MetaRecord(name, fail.path, reject_reason=why))
    return out


def stream_container(
    plan: IngestPlan,
    f: HubFile,
    out: str | Root,
    meta: dict[str, MetaRecord],
    params: ProcessParams,
    old: dict[str, EpisodeRecord],
    endpoint: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    twins: dict | None = None,
) -> StreamResult:
    """Stream one archive from the Hub into `out`; commit its episodes once its sha256 matches.

    `meta` and `old` hold the metadata and committed records of (at least) its episodes;
    `twins` the stored episodes by the sha256 of their bytes (a later twin is not stored).
    """
    start_rss = _reset_peak_rss()
    layout = OutLayout.at(out)
    container = hub_id(plan.repo, f.path)
    listed = (f.size, f.sha256 or f.git_oid)
    splits, quality = params.splits(), params.quality()
    built: list[EpisodeRecord] = []
    problems: list[EpisodeRecord] = []
    seen: set[str] = set()
    damage = ""  # why the archive does not parse to its end, once it is known
    reader = HubReader(plan, f, endpoint, retries=retries, backoff=backoff)
    try:
        with reader:
            buffered = io.BufferedReader(reader, 1 << 20)  # held: collecting it closes reader
            items = _members(plan, f, buffered, container, endpoint, retries, backoff)
            for item in _read_ahead(items):
                if isinstance(item, ArchiveDamagedError):
                    damage = str(item)
                    continue  # the archive is still read to its end, and hashed
                if isinstance(item, UnsafeMemberError):
                    problems.append(problem_record(problem_of(str(item))))
                    continue
                ep = episode_from_member(item.name)
                if ep is None:  # a file that is no episode: quiet, unless its name is odd
                    odd = odd_member_name(item.name)
                    if odd:
                        problems.append(
                            problem_record(
                                SourceProblem(container, item.name, f"{container}: {odd}; skipped")
                            )
                        )
                    continue
                if ep.name in seen:
                    problems.append(
                        problem_record(
                            problem_of(
                                f"{container}: member {item.name!r} is a duplicate episode; ignored"
                            )
                        )
                    )
                    continue
                seen.add(ep.name)
                # vouched for: if the archive's sha256 turns out wrong, every record is dropped
                ref = MemberRef(
                    container, item.name, item.offset, len(item.data), listed=listed, verified=True
                )
                src, split = SourceEpisode(ep, ref), splits.split_of(ep.name)
                try:
                    built.append(
                        repack_episode(
                            src,
                            layout.root,
                            meta.get(ep.name),
                            split,
                            quality,
                            old.get(ep.name),
                            raw=item.data,
                            commit=False,
                            twins=twins,
                        )
                    )
                except DiskFullError:
                    raise
                except Exception as e:  # one bad episode never stops the archive
                    built.append(failed_record(src, split, f"crashed: {type(e).__name__}: {e}"))
            reader.finish()
            if damage:
                raise ArchiveDamagedError(damage)
    except (IngestError, ArchiveDamagedError) as e:
        _discard(layout, built, old)
        # damage is raised only once the archive's sha256 matched: the publisher's bytes
        defect = isinstance(e, ArchiveDamagedError)
        again = (
            "the archive matches the Hub's sha256, so it is a source defect, recorded once "
            "and not retried (--retry-defects streams it again)"
            if defect
            else "re-run to stream it again"
        )
        why = f"{e}; none of its {len(built)} episode(s) read so far were committed; {again}"
        return StreamResult(
            f.path,
            container,
            False,
            [archive_failure(container, why, f.size, "defect" if defect else "failed")],
            reader.resumes,
            _peak_rss(),
            start_rss,
        )
    for r in built:
        if r.status == "stored" and not r.skipped:
            commit_episode(layout, r)
    return StreamResult(
        f.path, container, True, built + problems, reader.resumes, _peak_rss(), start_rss
    )


def archive_failure(
    container: str, reason: str | None, size: int | None = None, status: str = "failed"
) -> EpisodeRecord:
    """The `files` row of an archive none of whose episodes could be committed."""
    return EpisodeRecord(
        None, None, None, None, container, None, size, reject_reason=reason, status=status
    )


def settle(res: StreamResult, state: CatalogState) -> list[EpisodeRecord]:
    """An archive's records, plus a resolution if it had failed before and now succeeded."""
    resolved = archive_failure(res.container, None, status="resolved")
    if res.verified and failure_key(resolved) in {failure_key(r) for r in state.failures()}:
        return [*res.records, resolved]
    return list(res.records)


def _members(
    plan: IngestPlan,
    f: HubFile,
    stream,
    container: str,
    endpoint: str | None,
    retries: int,
    backoff: float,
) -> Iterator[StreamedMember | UnsafeMemberError]:
    """Episode members of the archive as they stream past (a zip's directory read first)."""

    def wanted(name: str) -> bool:  # odd names too: they are reported, not passed over
        return episode_from_member(name) is not None or odd_member_name(name) is not None

    if f.path.endswith(".zip"):

        def read_tail(start: int) -> bytes:
            with HubReader(
                plan, f, endpoint, start=start, retries=retries, backoff=backoff
            ) as tail:
                return tail.read()

        try:
            infos, tail = zip_directory(read_tail, f.size, container)
        except ValueError as e:
            yield ArchiveDamagedError(str(e))
            return
        yield from stream_zip(stream, container, infos, tail, wanted)
    elif f.path.endswith(".tar"):
        yield from stream_tar(stream, container, wanted)
    else:  # a loose episode file
        yield StreamedMember(f.path.rsplit("/", 1)[-1], 0, stream.read())


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _read_ahead(items: Iterator, depth: int = 2) -> Iterator:
    """Iterate `items` on a thread, at most `depth` held at once (the one in use included).

    The next member arrives over the network while this one is repacked.
    """
    slots, q, end = threading.Semaphore(depth), queue.Queue(), object()
    stop = threading.Event()

    def produce() -> None:
        try:
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                item = next(items, end)
                q.put(item)
                if item is end:
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(_Raised(e))

    thread = threading.Thread(target=produce, name="csdm-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
            del item  # its bytes can go before the next one is read
            slots.release()
    finally:
        stop.set()
        slots.release()
        thread.join(timeout=60)


def _discard(layout: OutLayout, built: list[EpisodeRecord], old: dict) -> None:
    """Delete what an unverified archive wrote: its rows, and frames no record refers to."""
    for r in built:
        if r.status != "stored" or r.skipped:
            continue
        layout.root.delete(r.frames_file)
        if r.episode not in old:
            remove_frames(layout, r.episode)


def _reset_peak_rss() -> int:
    """Restart the process's peak-RSS counter where Linux allows it; return the RSS now.

    `ru_maxrss` cannot serve: a spawned worker inherits its forking parent's figure.
    """
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """The process's peak resident memory since `_reset_peak_rss` (or since it started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # elsewhere: a bound
