"""The rename-free commit protocol and the compacted catalog (DESIGN.md "Commit protocol").

An episode is committed when its record is written to `catalog/_episodes/`, after its frames
and its catalog rows. Compaction folds those records and rows into a few large files named by
`catalog/index.json`. Readers start from the index and one listing per small folder; they never
walk the tree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from storage.catalog import FILES_SCHEMA, FRAMES_SCHEMA
from storage.layout import OutLayout, UnsafeNameError, check_name
from storage.records import CatalogIndex, EpisodeRecord, FormatError

_log = logging.getLogger("csdm")

PART_ROWS = 500_000  # frames rows per compacted file: ~12 files for the full dataset
FETCH_BATCH = 256  # per-episode files read at once while compacting
MAX_PARTS = 32  # beyond this many, compaction rewrites every part into fresh ones
COMPACT_SCHEMA = FILES_SCHEMA.append(pa.field("record", pa.string()))
UNSTORED = ("failed", "defect", "duplicate")  # statuses remembered in `_failed/` until stored


def failure_key(r: EpisodeRecord) -> str:
    """Where a failed attempt is remembered: the episode, or a hash of its location."""
    if r.episode:
        return r.episode
    return "member-" + hashlib.sha1(f"{r.container}:{r.member}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CatalogState:
    """What a dataset holds right now: the compacted generation plus what came after it."""

    index: CatalogIndex
    compacted: dict[str, EpisodeRecord]  # stored episodes folded into the index's files
    compacted_failed: dict[str, EpisodeRecord]  # failures folded in, by failure key
    pending: dict[str, EpisodeRecord]  # committed since, by episode
    failed: dict[str, EpisodeRecord]  # failures since, by failure key
    markers: frozenset[str]  # compacted episodes withdrawn (being redone or found corrupt)

    @property
    def hidden(self) -> set[str]:
        """Compacted episodes that readers must not see there (replaced or withdrawn)."""
        return (set(self.pending) | set(self.markers)) & set(self.compacted)

    @property
    def committed(self) -> dict[str, EpisodeRecord]:
        """Every committed episode's record."""
        out = {e: r for e, r in self.compacted.items() if e not in self.markers}
        out.update(self.pending)
        return out

    def failures(self) -> list[EpisodeRecord]:
        """Unstored episodes and members (failures, source defects, duplicates) until stored."""
        merged = {**self.compacted_failed, **self.failed}
        done = self.committed
        return [r for r in merged.values() if r.episode not in done and r.status in UNSTORED]

    def defects(self) -> list[EpisodeRecord]:
        """Source defects: members of the published data that are not episodes."""
        return [r for r in self.failures() if r.status == "defect"]

    def duplicates(self) -> list[EpisodeRecord]:
        """Episodes whose source bytes equal an earlier one's (`duplicate_of`)."""
        return [r for r in self.failures() if r.status == "duplicate"]

    def files_table(self) -> pa.Table:
        """The `files` table: one row per committed episode and per remembered failure."""
        rows = sorted(
            list(self.committed.values()) + self.failures(),
            key=lambda r: (r.episode or "", r.container, r.member or ""),
        )
        return pa.Table.from_pylist([r.row() for r in rows], schema=FILES_SCHEMA)

    def frames_sources(self, layout: OutLayout) -> tuple[pads.Dataset, list[str], pads.Dataset]:
        """Compacted rows, the episodes to leave out of them, and rows committed since (lazy).

        A hidden episode's rows still sit in its compacted part until the next compaction.
        """
        hidden = sorted(self.hidden)
        parts = sorted({r.frames_file for e, r in self.compacted.items() if e not in hidden})
        pending = sorted(r.frames_file for r in self.pending.values())
        return self._dataset(layout, parts), hidden, self._dataset(layout, pending)

    @staticmethod
    def _dataset(layout: OutLayout, keys: list[str]) -> pads.Dataset:
        if not keys:
            return pads.dataset(FRAMES_SCHEMA.empty_table())
        return pads.dataset(
            [layout.root.full(k) for k in keys],
            schema=FRAMES_SCHEMA,
            format="parquet",
            filesystem=layout.root.arrow_fs,
        )


def _named(r: EpisodeRecord, where: str, key: str | None = None) -> bool:
    """Whether a record's names are safe to build paths from; one warning line if not.

    A hostile or damaged catalog must not steer a repair or a view outside OUT, so such a
    record is left out of the state (it names no episode csdm will touch).
    """
    try:
        if r.episode is not None or key is None:
            check_name(r.episode)
        if key is not None and r.episode is not None and r.episode != key:
            raise UnsafeNameError(f"record for {r.episode!r} stored as {key!r}")
        frames = r.frames_file
        if frames is not None and (not frames.startswith("catalog/") or ".." in frames.split("/")):
            raise UnsafeNameError(f"frames file {frames!r} outside catalog/")
    except UnsafeNameError as e:
        _log.warning("%s: record ignored: %s", where, e)
        return False
    return True


def _read_records(layout: OutLayout, folder: str) -> dict[str, EpisodeRecord]:
    """Every record in a small folder, fetched concurrently (one listing, then the objects)."""
    keys = [f"{folder}/{n}" for n in layout.root.list(folder) if n.endswith(".json")]
    out = {}
    for key, blob in layout.root.read_many(keys).items():  # one deleted meanwhile is skipped
        where = layout.root.url_of(key)
        name = posixpath.basename(key)[:-5]
        try:
            r = EpisodeRecord.from_dict(json.loads(blob), where)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{where}: unreadable record ({e})") from None
        if folder == layout.records and not _named(r, where, name):
            continue
        if folder != layout.records and not (r.episode is None or _named(r, where)):
            continue
        out[name] = r
    return out


def read_index(layout: OutLayout) -> CatalogIndex:
    """The compacted generation (generation 0, empty, before any compaction)."""
    d = layout.root.read_json(layout.catalog_index)
    return (
        CatalogIndex()
        if d is None
        else CatalogIndex.from_dict(d, layout.root.url_of(layout.catalog_index))
    )


def _read_compacted(layout: OutLayout, index: CatalogIndex):
    stored, failed = {}, {}
    if index.files_part:
        where = layout.root.url_of(index.files_part)
        for text in (
            layout.root.read_parquet(index.files_part, columns=["record"])
            .column("record")
            .to_pylist()
        ):
            r = EpisodeRecord.from_dict(json.loads(text), where)
            if r.episode is not None and not _named(r, where):
                continue
            if r.status == "stored":
                stored[r.episode] = r
            else:
                failed[failure_key(r)] = r
    return stored, failed


def load_state(layout: OutLayout) -> CatalogState:
    """Read the catalog's state in a handful of requests; retried if compaction moved it."""
    for _ in range(5):
        index = read_index(layout)
        compacted, compacted_failed = _read_compacted(layout, index)
        pending = _read_records(layout, layout.records)
        failed = _read_records(layout, layout.failures)
        markers = frozenset(_safe_names(layout.root.list(layout.uncommitted)))
        if read_index(layout).generation == index.generation:
            break
    return CatalogState(index, compacted, compacted_failed, pending, failed, markers)


def _safe_names(names: list[str]) -> list[str]:
    out = []
    for n in names:
        try:
            out.append(check_name(n))
        except UnsafeNameError as e:
            _log.warning("uncommit marker ignored: %s", e)
    return out


def commit_episode(layout: OutLayout, record: EpisodeRecord) -> None:
    """Make an episode visible: its record is written last, after frames and rows."""
    layout.root.put_json(layout.episode_record(record.episode), record.to_dict())
    layout.root.delete(layout.uncommit_marker(record.episode))
    layout.root.delete(layout.failure_record(record.episode))


def withdraw_episode(layout: OutLayout, episode: str, record: EpisodeRecord | None) -> None:
    """Hide an episode from readers before it is redone or removed (the marker comes first).

    `record` is its committed record, if any: one not yet compacted is deleted with its rows.
    """
    layout.root.put_bytes(layout.uncommit_marker(episode), b"")
    if record is not None and (record.frames_file or "").startswith(layout.pending_frames):
        layout.root.delete(layout.episode_record(episode))
        layout.root.delete(record.frames_file)


def remember_failure(layout: OutLayout, record: EpisodeRecord) -> None:
    """Keep a failed attempt until the episode is stored.

    A record of status `resolved` forgets the failure at its key (an archive that succeeded).
    """
    layout.root.put_json(layout.failure_record(failure_key(record)), record.to_dict())


def _write_parts(layout: OutLayout, generation: int, sources: list[str], first: int = 0):
    """Copy frames rows from `sources` into new parts; return episode -> part key, part keys."""
    where, parts, batch, rows, k = {}, [], [], 0, first

    def flush():
        nonlocal batch, rows, k
        if batch:
            key = layout.compact_frames(generation, k)
            table = pa.concat_tables(batch).sort_by(
                [("dataset", "ascending"), ("episode", "ascending"), ("frame", "ascending")]
            )
            layout.root.put_parquet(key, table)
            for e in set(table.column("episode").to_pylist()):
                where[e] = key
            parts.append(key)
            batch, rows, k = [], 0, k + 1

    sources = [(src, keep) for src, keep in sources if keep is None or keep]  # else all gone
    for lo in range(0, len(sources), FETCH_BATCH):  # small files fetched concurrently
        group = sources[lo : lo + FETCH_BATCH]
        blobs = layout.root.read_many([src for src, _ in group])
        for src, keep in group:
            table = pq.read_table(pa.BufferReader(blobs[src]), schema=FRAMES_SCHEMA)
            if keep is not None:
                wanted = pa.array(sorted(keep), pa.string())
                table = table.filter(pc.is_in(table.column("episode"), wanted))
            batch.append(table)
            rows += table.num_rows
            if rows >= PART_ROWS:
                flush()
    flush()
    return where, parts


def compact(layout: OutLayout) -> CatalogIndex:
    """Fold committed records and their rows into a new generation; delete what it replaces.

    Only one writer may run it (the run's lease): it deletes folded records and orphans.
    """
    state = load_state(layout)
    old, gen = state.index, state.index.generation + 1
    hidden = state.hidden
    committed = state.committed
    by_part: dict[str, set[str]] = {}
    for e, r in state.compacted.items():
        by_part.setdefault(r.frames_file, set()).add(e)
    touched = {state.compacted[e].frames_file for e in hidden}
    if len(old.frames_parts) - len(touched) + 1 > MAX_PARTS:
        touched = set(old.frames_parts)
    kept_parts = [p for p in old.frames_parts if p not in touched]
    sources = [(p, by_part.get(p, set()) - hidden) for p in sorted(touched)]
    sources += [(r.frames_file, None) for _, r in sorted(state.pending.items())]
    moved, new_parts = _write_parts(layout, gen, sources)
    records = [replace(r, frames_file=moved.get(e, r.frames_file)) for e, r in committed.items()]
    records += state.failures()
    records.sort(key=lambda r: (r.episode or "", r.container, r.member or ""))
    table = pa.Table.from_pylist(
        [{**r.row(), "record": json.dumps(r.to_dict(), sort_keys=True)} for r in records],
        schema=COMPACT_SCHEMA,
    )
    files_key = layout.compact_files(gen)
    layout.root.put_parquet(files_key, table)
    index = CatalogIndex(gen, kept_parts + new_parts, files_key, len(committed))
    layout.root.put_json(layout.catalog_index, index.to_dict())  # the compaction's commit
    # folded: markers before records, so each episode stays visible at every step
    folded = sorted(state.pending)
    layout.root.delete_many([layout.uncommit_marker(e) for e in folded if e in state.markers])
    layout.root.delete_many([layout.episode_record(e) for e in folded])
    layout.root.delete_many([layout.failure_record(k) for k in state.failed])
    _delete_unreferenced(
        layout,
        {
            *index.frames_parts,
            files_key,
            *old.frames_parts,
            *([old.files_part] if old.files_part else []),
        },
    )
    return index


def _delete_unreferenced(layout: OutLayout, keep: set[str]) -> None:
    """Drop generations older than the previous one, and rows no record names (crash debris)."""
    old = [
        f"catalog/{n}" for n in layout.root.list("catalog") if n.startswith(("frames-", "files-"))
    ]
    layout.root.delete_many([k for k in old if k not in keep])
    layout.root.delete_many(
        [f"{layout.pending_frames}/{n}" for n in layout.root.list(layout.pending_frames)]
    )
