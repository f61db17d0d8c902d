"""Repack one source episode: frames to Zarr, labels and game state to the Parquet catalog."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import replace

import numpy as np
import pyarrow as pa

from storage.action_space import MOUSE_X_BINS, MOUSE_Y_BINS
from storage.catalog import FRAMES_SCHEMA, KEY_COLUMNS, METADATA_SCHEMA, decode_y
from storage.codecs import DEFAULT_CODEC
from storage.commit import commit_episode, withdraw_episode
from storage.containers import MemberRef
from storage.diskspace import DiskFullError, is_disk_full
from storage.episode import EpisodeFormatError, read_episode
from storage.framestore import (
    LEGACY_CODEC,
    episode_exists,
    read_binding,
    stored_as,
    stored_bytes,
    write_frames,
)
from storage.fs import Root
from storage.layout import EpisodeId, OutLayout
from storage.records import EpisodeRecord
from storage.shards import FrameBinding
from storage.sidearrays import ACTIONS_FORMAT, write_actions
from tasks.actions.labels import key_matrix
from tasks.actions.targets import quantise
from tasks.metadata_cache import MetaRecord
from tasks.source import SourceEpisode


def _record_of(src: SourceEpisode, split: str | None, **fields) -> EpisodeRecord:
    """A record of `src`'s identity and location plus `fields`."""
    ep, ref = src.episode, src.ref
    return EpisodeRecord(
        ep.name, ep.dataset, ep.file_num, split, ref.container, ref.member, ref.size, **fields
    )


def failed_record(src: SourceEpisode, split: str | None, reason: str) -> EpisodeRecord:
    """The record of an episode that could not be stored."""
    return _record_of(src, split, reject_reason=reason)


def defect_record(src: SourceEpisode, split: str | None, reason: str, digest: str) -> EpisodeRecord:
    """A source defect: bytes the publisher vouches for that are not an episode (kept once)."""
    why = (
        f"source defect: {reason} (the published bytes, checked against the "
        f"{'archive CRC-32' if src.ref.crc32 is not None else 'publisher sha256'}; not retried "
        "unless --retry-defects)"
    )
    return _record_of(src, split, sha256=digest, status="defect", reject_reason=why)


def duplicate_record(
    src: SourceEpisode, split: str | None, digest: str, twin: str
) -> EpisodeRecord:
    """An episode whose source bytes equal an earlier one's: catalogued, not stored again."""
    why = f"duplicate recording: the same bytes as {twin} (sha256 {digest[:12]})"
    return _record_of(
        src, split, sha256=digest, status="duplicate", reject_reason=why, duplicate_of=twin
    )


def _load(ref: MemberRef) -> bytes:
    """A member's bytes, read once: hashed, then parsed in memory (one episode is ~130 MB).

    A zip member's bytes must match the CRC-32 its archive records: if not, they are not the
    published bytes (a failure, retried), whatever they parse to.
    """
    with ref.open() as f:
        data = f.read()
    if ref.size >= 0 and len(data) != ref.size:
        raise OSError(f"{ref.label}: read {len(data)} of {ref.size} bytes")
    if ref.crc32 is not None and zlib.crc32(data) != ref.crc32:
        raise OSError(f"{ref.label}: CRC-32 does not match its archive's; re-download it")
    return data


def _metadata_columns(
    meta: MetaRecord | None, n: int, meta_root: Root
) -> tuple[pa.Table, str | None]:
    """Per-frame metadata columns, or nulls and the reason they are missing."""
    if meta is None:
        return METADATA_SCHEMA.empty_table(), "no metadata for this episode in dataset_metadata/"
    if meta.path is None:
        return METADATA_SCHEMA.empty_table(), meta.reject_reason
    table = meta_root.read_parquet(meta.path, schema=METADATA_SCHEMA)
    if table.num_rows != n:
        return table, f"metadata has {table.num_rows} frames, the episode has {n}"
    return table, None


def _agreement(shipped: dict[str, np.ndarray], meta: pa.Table) -> dict[str, float]:
    keys = np.column_stack([shipped[c] for c in KEY_COLUMNS])
    same_keys = (key_matrix(meta.column("infer_keys")) == keys).all(axis=1)
    lclick = meta.column("infer_lclick").to_numpy() != 0
    rclick = meta.column("infer_rclick").to_numpy() != 0
    same_clicks = (lclick == shipped["lclick"]) & (rclick == shipped["rclick"])
    ix, iy = meta.column("infer_mouse_x").to_numpy(), meta.column("infer_mouse_y").to_numpy()
    known = ~(np.isnan(ix) | np.isnan(iy))  # null: no view angles to infer a move from
    mx = MOUSE_X_BINS[quantise(np.nan_to_num(ix), MOUSE_X_BINS)]
    my = MOUSE_Y_BINS[quantise(np.nan_to_num(iy), MOUSE_Y_BINS)]
    same_mouse = (mx == shipped["mouse_x"]) & (my == shipped["mouse_y"])
    return {
        "agree_keys": float(same_keys.mean()),
        "agree_clicks": float(same_clicks.mean()),
        "agree_mouse": float(same_mouse[known].mean()) if known.any() else None,
    }


def episode_inputs(src: SourceEpisode, meta: MetaRecord | None, split: str, quality: dict) -> dict:
    """What an episode's stored form is built from; a rerun redoes it when this changes."""
    return {
        "member": src.ref.fingerprint(),
        "metadata_file": meta.metadata_file if meta else None,
        "metadata_sha256": meta.sha256 if meta else None,
        "parameters": {**quality, "split": split},
        "raw_actions": ACTIONS_FORMAT,
    }


def changed_inputs(old: dict | None, new: dict) -> list[str]:
    """Which inputs differ, in words: `member`, `metadata`, `parameters`."""
    if not old:
        return ["inputs not recorded"]
    what = []
    if old.get("member") != new["member"]:
        what.append("member")
    if old.get("raw_actions") != new.get("raw_actions"):
        what.append("raw actions")
    if (old.get("metadata_file"), old.get("metadata_sha256")) != (
        new["metadata_file"],
        new["metadata_sha256"],
    ):
        what.append("metadata")
    if old.get("parameters") != new["parameters"]:
        what.append("parameters")
        if (old.get("parameters") or {}).get("codec", LEGACY_CODEC) != new["parameters"].get(
            "codec", DEFAULT_CODEC
        ):
            what.append("codec")
    return what


def repack_episode(
    src: SourceEpisode,
    out: str | Root,
    meta: MetaRecord | None,
    split: str,
    quality: dict | None = None,
    old: EpisodeRecord | None = None,
    raw: bytes | None = None,
    commit: bool = True,
    twins: dict[str, EpisodeId] | None = None,
) -> EpisodeRecord:
    """Store an episode's frames and catalog rows, unless `old`, its committed record, matches.

    An episode whose metadata or parameters changed gets new catalog rows and keeps its
    frames; the frames are rewritten only when the member's bytes changed. `raw` is the
    member's bytes when they are already in memory; with `commit=False` the caller commits
    the returned record (once the whole archive is verified). `twins` maps the sha256 of
    stored episodes to them: bytes already stored under an earlier episode are recorded as a
    duplicate of it, not stored again.
    """
    layout = OutLayout.at(out)
    ep, ref = src.episode, src.ref
    try:
        inputs = episode_inputs(src, meta, split, quality or {})
    except OSError as e:
        return failed_record(src, split, f"unreadable: {ref.label}: {e}")
    changed = changed_inputs(old.inputs, inputs) if old else []
    if old and not changed:
        return replace(old, skipped=True)
    frames_ok = episode_exists(layout, ep.name)
    digest = None
    try:
        if old and not {"member", "codec"} & set(changed) and frames_ok:
            digest = old.sha256  # same bytes: read only the small parts, keep the frames
            data = read_episode((ref.label, raw) if raw else ref, parts=("y", "helperarr"))
            n = len(data["y"])
        else:
            raw = raw if raw is not None else _load(ref)
            digest = hashlib.sha256(raw).hexdigest()
            twin = (twins or {}).get(digest)
            if twin is not None and twin < ep:  # stored once, under the first name
                return duplicate_record(src, split, digest, twin.name)
            data = read_episode((ref.label, raw), parts=("x", "y", "helperarr"))  # views of raw
            n = len(data["x"])
    except EpisodeFormatError as e:
        if ref.vouched and raw is not None and digest is not None:
            return defect_record(src, split, str(e), digest)
        return failed_record(src, split, f"unreadable: {e}")
    except OSError as e:
        return failed_record(src, split, f"unreadable: {e}")
    try:
        record = _store(src, layout, meta, split, inputs, old, changed, digest, data, n, frames_ok)
        if commit:
            commit_episode(layout, record)
    except OSError as e:
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            raise DiskFullError(layout.root.url, int(ref.size)) from None
        raise
    return replace(record, redone=", ".join(changed) if old else None)


def _store(
    src: SourceEpisode,
    layout: OutLayout,
    meta: MetaRecord | None,
    split: str,
    inputs: dict,
    old: EpisodeRecord | None,
    changed: list[str],
    digest: str,
    data: dict,
    n: int,
    frames_ok: bool,
) -> EpisodeRecord:
    """Write frames (when needed) and catalog rows; return the record that commits them."""
    ep = src.episode
    if old:  # withdraw first: a crash from here on leaves the episode to be redone
        withdraw_episode(layout, ep.name, old)
    codec = inputs["parameters"].get("codec", DEFAULT_CODEC)
    if "x" not in data or (frames_ok and stored_as(layout, ep.name) == (digest, codec)):
        # same bytes; or a crashed run put these frames in place, or the member was touched
        stored = stored_bytes(layout, ep.name)
        kept = old and FrameBinding.from_hex(old.shard_crc32c, old.chunk_crc32c)
        binding = kept or read_binding(layout, ep.name)
    else:
        attrs = {"episode": ep.name, "sha256": digest}
        written = write_frames(layout, ep.name, data["x"], attrs, codec)
        stored, binding = written.stored, written.binding
    shard_hex, chunk_hex = binding.to_hex()

    write_actions(layout, ep.name, data["y"], digest)
    shipped = decode_y(data["y"])
    meta_cols, meta_problem = _metadata_columns(meta, n, layout.root)
    if meta_problem is not None:
        meta_cols = pa.table(
            {f.name: pa.nulls(n, f.type) for f in METADATA_SCHEMA}, schema=METADATA_SCHEMA
        )
    frames = pa.table(
        {
            "dataset": pa.array([ep.dataset] * n, pa.string()),
            "episode": pa.array([ep.name] * n, pa.string()),
            "file_num": np.full(n, ep.file_num, np.int32),
            "frame": np.arange(n, dtype=np.int32),
            "split": pa.array([split] * n, pa.string()),
            **shipped,
            "kill": data["helperarr"][:, 0] > 0.5,
            "death": data["helperarr"][:, 1] > 0.5,
            **{f.name: meta_cols.column(f.name) for f in METADATA_SCHEMA},
        },
        schema=FRAMES_SCHEMA,
    )
    frames_file = layout.new_frames_file(ep.name)
    layout.root.put_parquet(frames_file, frames)
    record = _record_of(
        src,
        split,
        sha256=digest,
        n_frames=n,
        stored_bytes=stored,
        metadata_file=meta.metadata_file if meta else None,
        counters=meta.counters if meta and meta_problem is None else None,
        keep=bool(meta.keep) if meta and meta_problem is None else False,
        reject_reason=meta_problem if meta_problem else (meta.reject_reason if meta else None),
        status="stored",
        inputs=inputs,
        frames_file=frames_file,
        shard_crc32c=shard_hex,
        chunk_crc32c=chunk_hex,
        **(_agreement(shipped, meta_cols) if meta_problem is None else {}),
    )
    return record
