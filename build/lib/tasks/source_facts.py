"""What the published data holds beyond episodes: duplicate recordings and known defects."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from storage.commit import CatalogState, remember_failure, withdraw_episode
from storage.framestore import remove_frames
from storage.layout import EpisodeId, OutLayout
from storage.records import EpisodeRecord
from storage.sidearrays import actions_key
from tasks.source import SourceEpisode


def episode_id(record: EpisodeRecord) -> EpisodeId:
    """The (dataset, number) a record's episode sorts by."""
    return EpisodeId(record.dataset or "", int(record.file_num or 0))


def twins_of(state: CatalogState) -> dict[str, EpisodeId]:
    """sha256 of each stored episode's source bytes -> that episode (the first if several)."""
    out: dict[str, EpisodeId] = {}
    for r in state.committed.values():
        if r.sha256 and (r.sha256 not in out or episode_id(r) < out[r.sha256]):
            out[r.sha256] = episode_id(r)
    return out


def known_defects(
    state: CatalogState, episodes: list[SourceEpisode]
) -> tuple[list[SourceEpisode], list[EpisodeRecord]]:
    """Episodes still to attempt, and the known defects and duplicates among them.

    One is the same member when its container, member name and size are unchanged: the
    publisher's bytes have not moved, so reading them again would only find the same.
    """
    stored = state.committed
    defects = {r.episode: r for r in state.defects()}
    defects.update({r.episode: r for r in state.duplicates() if r.duplicate_of in stored})
    todo, known = [], []
    for e in episodes:
        d = defects.get(e.episode.name)
        if d is not None and (d.container, d.member, d.size) == (
            e.ref.container,
            e.ref.member,
            e.ref.size,
        ):
            known.append(replace(d, skipped=True))
        else:
            todo.append(e)
    return todo, known


def resolve_duplicates(layout: OutLayout, state: CatalogState) -> list[EpisodeRecord]:
    """Demote every stored episode whose bytes equal an earlier one's to a duplicate record.

    The first by (dataset, number) stays; each later twin is withdrawn (its frames and raw
    actions removed) and catalogued with `duplicate_of`, `keep = false` and its twin's split,
    so a split never puts twins on two sides. Runs under OUT's lease, after the repacks.
    """
    by_sha: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for r in state.committed.values():
        if r.sha256:
            by_sha[r.sha256].append(r)
    demoted = []
    for group in by_sha.values():
        if len(group) < 2:
            continue
        first, *later = sorted(group, key=episode_id)
        for r in later:
            withdraw_episode(layout, r.episode, r)
            remove_frames(layout, r.episode)
            layout.root.delete_tree(actions_key(layout, r.episode))
            dup = replace(
                r,
                status="duplicate",
                keep=False,
                split=first.split,
                duplicate_of=first.episode,
                reject_reason=f"duplicate recording: the same bytes as {first.episode} "
                f"(sha256 {r.sha256[:12]})",
                frames_file=None,
                stored_bytes=None,
                shard_crc32c=None,
                chunk_crc32c=None,
            )
            remember_failure(layout, dup)
            demoted.append(dup)
    return demoted
