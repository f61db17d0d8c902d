"""List the episodes and metadata files of a source tree in the public layout."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from storage.containers import ArchiveDamagedError, MemberRef, UnsafeMemberError, iter_container
from storage.fs import Root, root_of
from storage.layout import METADATA_RE, EpisodeId, episode_from_member, odd_member_name


@dataclass(frozen=True)
class SourceEpisode:
    """Where one episode's HDF5 file lives."""

    episode: EpisodeId
    ref: MemberRef


@dataclass(frozen=True)
class SourceProblem:
    """Something in the source that cannot be processed, with the reason."""

    container: str
    member: str | None
    reason: str
    episode: EpisodeId | None = None
    damaged: bool = False  # its archive does not parse whole (a defect if the archive is vouched)


@dataclass
class SourceListing:
    """Episodes, metadata files and problems found in a source tree."""

    episodes: list[SourceEpisode] = field(default_factory=list)
    metadata: list[Root] = field(default_factory=list)
    problems: list[SourceProblem] = field(default_factory=list)


def problem_of(message: str) -> SourceProblem:
    """The problem an `UnsafeMemberError` message (`container: member 'name' ...`) describes."""
    container = message.split(": ", 1)[0]
    member = message.split(": member '", 1)[1].split("'", 1)[0] if ": member '" in message else None
    ep = episode_from_member(PurePosixPath(member).name) if member else None
    return SourceProblem(container, member, message, ep)


def list_source(src: str | Root, options: dict | None = None) -> SourceListing:
    """Walk `src` (a folder or bucket prefix of tars, zips, .hdf5) for episodes and metadata."""
    src = root_of(src, options)
    if not src.fs.exists(src.path):
        raise FileNotFoundError(f"{src}: no such source folder")
    listing = SourceListing()
    seen: dict[EpisodeId, MemberRef] = {}
    damaged: dict[str, str] = {}  # archive -> why it does not parse to its end
    for item in iter_container(src):
        if isinstance(item, UnsafeMemberError):
            problem = problem_of(str(item))
            if isinstance(item, ArchiveDamagedError):
                damaged.setdefault(problem.container, str(item))
                problem = replace(problem, damaged=True)
            listing.problems.append(problem)
            continue
        if item.member is None and METADATA_RE.match(item.name):
            listing.metadata.append(Root(item.container, item.options))
            continue
        ep = episode_from_member(item.member or item.container)
        if ep is None:  # README, images and other files that are not episodes pass quietly
            odd = odd_member_name(item.member or item.name)
            if odd:
                listing.problems.append(
                    SourceProblem(item.container, item.member, f"{item.container}: {odd}; skipped")
                )
            continue
        if ep in seen:
            listing.problems.append(
                SourceProblem(
                    item.container,
                    item.member,
                    f"{item.label}: duplicate of {seen[ep].label}; ignored",
                    ep,
                )
            )
            continue
        seen[ep] = item
        listing.episodes.append(SourceEpisode(ep, item))
    _withhold_damaged(listing, damaged)
    listing.episodes.sort(key=lambda e: e.episode)
    listing.metadata.sort(key=lambda r: r.url)
    return listing


def _withhold_damaged(listing: SourceListing, damaged: dict[str, str]) -> None:
    """Turn every episode of an archive that does not parse whole into a problem.

    An archive commits all or nothing: what precedes the damage may parse, but is not stored.
    """
    kept = []
    for e in listing.episodes:
        why = damaged.get(e.ref.container)
        if why is None:
            kept.append(e)
            continue
        listing.problems.append(
            SourceProblem(
                e.ref.container,
                e.ref.member,
                f"{e.ref.label}: not stored, its archive is damaged "
                f"({why.removeprefix(e.ref.container + ': ')}); none of the archive's "
                "episodes are stored until it reads whole",
                e.episode,
                damaged=True,
            )
        )
    listing.episodes[:] = kept


def find_any_episode(src: str | Root, options: dict | None = None) -> bool:
    """Whether `src` holds at least one episode (or a member csdm refuses); stops at the first."""
    for item in iter_container(root_of(src, options)):
        if isinstance(item, UnsafeMemberError) or episode_from_member(
            item.member or item.container
        ):
            return True
    return False
