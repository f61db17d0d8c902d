"""Publish a processed dataset to a Hub dataset repo, the objects that commit it last.

Each file is compared with the repo's own listing (size, and sha256 or git's blob id), so a
republish of an unchanged dataset uploads nothing and a resumed one only what is missing.
New objects no reader reaches yet go first, in batches within the Hub's limits; whatever
readers reach (changed objects, the catalog's records and index, the manifest, the card)
goes last, in one commit, so a reader of the revision sees the old dataset or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from storage.dataset import open_dataset
from storage.dataset_card import Counts, render_card, terms
from storage.fs import Root, root_of
from storage.hub_repo import (
    HubError,
    HubTarget,
    RemoteFile,
    api,
    first_line,
    git_blob_sha1,
    listing,
)
from storage.layout import check_name
from storage.records import Versioned, csdm_version

CARD = "README.md"
TERMS = "LICENSE.md"
# What csdm published here last: the only remote files a publish may ever delete.
PUBLISHED = ".csdm-published.json"
# what readers reach without a listing of data folders: they go in the last commit
FINAL_KEYS = (
    "manifest.json",
    "catalog/index.json",
    "catalog/views.json",
    "catalog/latents.json",
    CARD,
    TERMS,
    PUBLISHED,
)
FINAL_PREFIXES = ("catalog/_", "report/")
HASHES = ".cache/publish-hashes.json"
_log = logging.getLogger("csdm")
LFS_MIN = 10 << 20  # "files larger than 10MB should be tracked" by LFS or Xet, not git


@dataclass(frozen=True)
class HubLimits:
    """The Hub's documented limits (docs/decisions/021-publishing.md cites each)."""

    files_per_commit: int = 100  # "keep around 50-100 files per commit"
    bytes_per_commit: int = 2 << 30  # ours: bounds a bucket's staging and a failed commit
    commits_per_hour: int = 120  # undocumented on the Hub: ours, well inside its API budget
    entries_per_folder: int = 10_000  # "cannot exceed 10k files per folder"
    files_per_repo: int = 100_000  # "files per repo: <100k"
    file_size: int = 500 << 30  # "500GB is the hard limit for a single file size"


@dataclass(frozen=True)
class LocalFile:
    """A file of the dataset: its size and both ids the Hub may list."""

    size: int
    sha256: str
    blob: str | None  # git's id, kept for files under LFS_MIN (bigger ones the Hub keeps in LFS)

    def same_as(self, remote: RemoteFile) -> bool:
        """Whether the repo already holds these bytes at this path."""
        if remote.size != self.size:
            return False
        return remote.sha256 == self.sha256 if remote.sha256 else remote.blob == self.blob


@dataclass(frozen=True)
class HashCache(Versioned):
    """`OUT/.cache/publish-hashes.json`: ids of files by key, valid while size and stamp hold."""

    entries: dict = field(default_factory=dict)  # key -> [size, stamp, sha256, blob]
    format_version = 1
    kind = "publish hash cache"
    fix = "delete it; the next publish hashes the files again"


@dataclass(frozen=True)
class PublishedFiles(Versioned):
    """`.csdm-published.json` beside the dataset in the repo: the keys csdm put there."""

    keys: list[str] = field(default_factory=list)
    format_version = 1
    kind = "publish record"
    fix = "delete it from the repo; the next publish then deletes nothing"


@dataclass(frozen=True)
class PublishPlan:
    """What a publish uploads: batches of unreached new objects, then the committing ones."""

    batches: list[list[str]]
    final: list[str]
    deletes: list[str]
    unchanged: int
    sizes: dict[str, int]

    @property
    def uploads(self) -> int:
        """Files to upload in all."""
        return sum(map(len, self.batches)) + len(self.final)

    @property
    def commits(self) -> int:
        """Commits it makes (none when nothing changed)."""
        return len(self.batches) + (1 if self.final or self.deletes else 0)


@dataclass(frozen=True)
class PublishSummary:
    """What a publish did."""

    target: str
    commit: str | None  # the revision's head afterwards
    commits: int
    uploaded: int
    uploaded_bytes: int
    unchanged: int
    deleted: int
    seconds: float


def reader_keys(out: Root) -> dict[str, int]:
    """Every file of OUT a reader needs, with its size: no `.cache/`, lease or temporary file."""
    found = out.find()
    return {
        k: size
        for k, size in sorted(found.items())
        if not any(part.startswith(".") for part in PurePosixPath(k).parts)
        and not k.endswith(".tmp")
    }


def _check_lease(out: Root, clock: Callable[[], float]) -> None:
    """Refuse while a run holds OUT's lease; one that expired (a crashed run) is no hold."""
    from storage.layout import OutLayout
    from storage.lease import Lease

    key = OutLayout.lease
    try:
        d = out.read_json(key)
        lease = None if d is None else Lease.from_dict(d, out.url_of(key))
    except ValueError as e:
        raise HubError(str(e)) from None
    now = clock()
    if lease is not None and lease.expires > now:
        raise HubError(f"{out}: a csdm {lease.describe(now)} holds it; publish once it ends")


def check_publishable(
    out: Root, keys: dict[str, int], limits: HubLimits, clock: Callable[[], float] = time.time
) -> None:
    """Refuse up front, in one line, what the Hub or a reader would refuse later."""
    if "manifest.json" not in keys or "catalog/index.json" not in keys:
        raise HubError(
            f"{out}: not a processed dataset with a compacted catalog (run `csdm "
            f"process` then `csdm compact {out}`)"
        )
    pending = [k for k in keys if k.startswith("catalog/_episodes/")]
    if pending:
        raise HubError(
            f"{out}: {len(pending)} episodes were committed since the last "
            f"compaction; run `csdm compact {out}` so the Hub's viewer sees them"
        )
    _check_lease(out, clock)
    if len(keys) + 1 > limits.files_per_repo:
        raise HubError(
            f"{out}: {len(keys)} files, more than the Hub's {limits.files_per_repo} per repo"
        )
    entries: dict[str, set[str]] = {}  # a folder's files and sub-folders
    for k in keys:
        parts = PurePosixPath(k).parts
        for i in range(len(parts)):
            entries.setdefault("/".join(parts[:i]), set()).add(parts[i])
    folder, names = max(entries.items(), key=lambda kv: len(kv[1]))
    if len(names) > limits.entries_per_folder:
        raise HubError(
            f"{out.url_of(folder)}: {len(names)} entries, more than the Hub's "
            f"{limits.entries_per_folder} per folder"
        )
    big = [k for k, size in keys.items() if size > limits.file_size]
    if big:
        raise HubError(
            f"{out.url_of(big[0])}: {keys[big[0]]} bytes, more than the Hub's "
            f"{limits.file_size} per file"
        )


def hash_files(out: Root, keys: dict[str, int], on_file: Callable[[int], None] | None = None):
    """Each file's sha256 and git blob id, reusing those cached while size and stamp hold."""
    try:
        cache = HashCache.from_dict(out.read_json(HASHES) or {"entries": {}}, out.url_of(HASHES))
    except (ValueError, TypeError):
        cache = HashCache()
    entries, fresh = dict(cache.entries), {}
    for key, size in keys.items():
        stamp = out.info(key)["stamp"]
        hit = entries.get(key)
        if hit and hit[0] == size and hit[1] == stamp:
            fresh[key] = hit
        else:
            data = out.read_bytes(key)
            blob = git_blob_sha1(data) if len(data) < LFS_MIN else None
            fresh[key] = [len(data), stamp, hashlib.sha256(data).hexdigest(), blob]
        if on_file:
            on_file(size)
    if fresh != entries and out.local:  # a bucket OUT is hashed each time: no cache written
        out.put_bytes(HASHES, json.dumps(HashCache(fresh).to_dict()).encode())
    return {k: LocalFile(v[0], v[2], v[3]) for k, v in fresh.items()}


def _final(key: str) -> bool:
    return key in FINAL_KEYS or key.startswith(FINAL_PREFIXES)


def plan_publish(
    local: dict[str, LocalFile],
    remote: dict[str, RemoteFile],
    limits: HubLimits,
    owned: set[str] | frozenset[str] = frozenset(),
) -> PublishPlan:
    """Split the changes: new unreached objects in batches, the rest in the last commit.

    Only `owned` keys (what csdm published there before) that the dataset no longer has are
    deleted: a file someone else put in the repo is never touched.
    """
    changed = [k for k, f in local.items() if k not in remote or not f.same_as(remote[k])]
    early = [k for k in changed if k not in remote and not _final(k)]
    final = [k for k in changed if k not in early]
    deletes = sorted(k for k in owned if k in remote and k not in local and k != PUBLISHED)
    if len(final) + len(deletes) > limits.files_per_commit:
        raise HubError(
            f"{len(final)} changed objects and {len(deletes)} deletions must land "
            "with the index in one commit, more than the Hub's "
            f"{limits.files_per_commit} files per commit; publish this dataset as a "
            "new repo"
        )
    batches, batch, size = [], [], 0
    for k in sorted(early):
        if batch and (
            len(batch) >= limits.files_per_commit or size + local[k].size > limits.bytes_per_commit
        ):
            batches.append(batch)
            batch, size = [], 0
        batch.append(k)
        size += local[k].size
    if batch:
        batches.append(batch)
    sizes = {k: f.size for k, f in local.items()}
    return PublishPlan(batches, sorted(final), deletes, len(local) - len(changed), sizes)


class CommitPacer:
    """Keeps commits within the Hub's rate: waits when an hour already holds the limit."""

    def __init__(self, per_hour: int, clock=time.time, sleep=time.sleep, on_wait=None) -> None:
        self.per_hour, self.clock, self.sleep, self.on_wait = per_hour, clock, sleep, on_wait
        self.times: list[float] = []

    def __call__(self) -> None:
        """Wait, if needed, then count a commit."""
        now = self.clock()
        self.times = [t for t in self.times if t > now - 3600]
        if len(self.times) >= self.per_hour:
            wait = self.times[0] + 3600 - now
            if self.on_wait:
                self.on_wait(wait)
            self.sleep(wait)
            now = self.clock()
        self.times.append(now)


def check_token(target: HubTarget, token: str | None) -> str:
    """The token to write with, after the Hub says it can: one line if it cannot."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise HubError(f"{target}: no Hugging Face token; set HF_TOKEN or run `hf auth login`")
    try:
        who = api(token).whoami()
    except HfHubHTTPError as e:
        raise HubError(
            f"{target}: the Hub refused the token ({first_line(e)}); set HF_TOKEN "
            "to a valid write token"
        ) from None
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"{target}: the token is read-only; publishing needs a write token")
    spaces = [who.get("name"), *[o.get("name") for o in who.get("orgs") or []]]
    if role != "fineGrained" and target.org not in spaces:
        raise HubError(
            f"{target}: the token's user {who.get('name')!r} cannot write to "
            f"namespace {target.org!r} (it may write to {', '.join(map(str, spaces))})"
        )
    return token


def _operations(out: Root, keys: list[str], tmp: Path, prefix: str = ""):
    """Commit operations for `keys`: local files by path, a bucket's fetched into `tmp`."""
    from huggingface_hub import CommitOperationAdd

    ops = []
    for k in keys:
        if out.local:
            ops.append(CommitOperationAdd(prefix + k, out.full(k)))
        else:
            path = tmp / k
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(out.read_bytes(k))
            ops.append(CommitOperationAdd(prefix + k, str(path)))
    return ops


def _owned(target: HubTarget, head: str, prefix: str) -> set[str]:
    """The keys csdm published under `prefix` before; none if no record (or one unreadable)."""
    from storage.hub_repo import read_range

    where = f"hf://datasets/{target.repo}@{head}/{prefix}{PUBLISHED}"
    try:
        record = PublishedFiles.from_dict(json.loads(read_range(where)), where)
    except (ValueError, OSError) as e:  # deleting nothing is the safe reading
        _log.warning("%s: unreadable (%s); this publish deletes nothing", where, first_line(e))
        return set()
    return {k for k in record.keys if isinstance(k, str)}


def prefix_of(under: str) -> str:
    """`under/` for a dataset at a path inside the repo ('' at its root); each part checked."""
    parts = [p for p in under.strip("/").split("/") if p]
    for part in parts:
        check_name(part, "repo folder")
    return "".join(f"{p}/" for p in parts)


def publish(
    out: str | Root,
    target: HubTarget,
    private: bool = False,
    message: str | None = None,
    token: str | None = None,
    limits: HubLimits = HubLimits(),
    pacer: CommitPacer | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    under: str = "",
    allow_deletions: bool = False,
) -> PublishSummary:
    """Publish OUT to `target` (at folder `under` in it); resumable, incremental, atomic.

    Only files an earlier publish put at the same place are ever deleted, and only once the
    dataset is checked whole, unless `allow_deletions`.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    t0 = time.perf_counter()
    out = root_of(out)
    try:
        prefix = prefix_of(under)
    except ValueError as e:
        raise HubError(f"{target}/{under}: {e}") from None
    keys = reader_keys(out)
    check_publishable(out, keys, limits)
    token = check_token(target, token)
    hf = api(token)
    progress = on_progress or (lambda _what, _done, _total: None)
    done = [0]

    def hashed(size: int) -> None:
        done[0] += size
        progress("hash", done[0], sum(keys.values()))

    local = hash_files(out, keys, hashed)
    ds = open_dataset(out)
    made = {
        CARD: render_card(target.repo, ds.manifest, Counts.of(ds.files), csdm_version()).encode(),
        TERMS: terms().encode(),
    }
    published = PublishedFiles(sorted({*local, *made}))
    made[PUBLISHED] = json.dumps(published.to_dict(), indent=1).encode()
    for key, data in made.items():
        local[key] = LocalFile(len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data))
    try:
        hf.create_repo(target.repo, repo_type="dataset", private=private, exist_ok=True)
        if target.revision != "main":
            hf.create_branch(
                target.repo, repo_type="dataset", branch=target.revision, exist_ok=True
            )
        head, everything = listing(target, token)
        remote = {k[len(prefix) :]: f for k, f in everything.items() if k.startswith(prefix)}
        owned = _owned(target, head, prefix) if head and PUBLISHED in remote else set()
        plan = plan_publish(local, remote, limits, owned)
        if plan.deletes and not allow_deletions:
            _check_before_deleting(ds, target, plan.deletes)
        pacer = pacer or CommitPacer(limits.commits_per_hour)
        total = sum(plan.sizes[k] for b in [*plan.batches, plan.final] for k in b)
        sent, commits = 0, 0
        title = message or f"csdm publish: {ds.manifest.updated or 'dataset'}"
        with tempfile.TemporaryDirectory(prefix="csdm-publish-") as tmp:
            for i, batch in enumerate(plan.batches, 1):
                pacer()
                ops = _operations(out, batch, Path(tmp), prefix)
                info = hf.create_commit(
                    target.repo,
                    ops,
                    repo_type="dataset",
                    revision=target.revision,
                    parent_commit=head,
                    commit_message=f"{title} (objects {i}/{len(plan.batches)})",
                )
                head, commits = info.oid, commits + 1
                sent += sum(plan.sizes[k] for k in batch)
                progress("upload", sent, total)
            if plan.final or plan.deletes:
                pacer()
                ops = _operations(out, [k for k in plan.final if k not in made], Path(tmp), prefix)
                ops += [CommitOperationAdd(prefix + k, made[k]) for k in plan.final if k in made]
                ops += [CommitOperationDelete(prefix + k) for k in plan.deletes]
                info = hf.create_commit(
                    target.repo,
                    ops,
                    repo_type="dataset",
                    revision=target.revision,
                    parent_commit=head,
                    commit_message=title,
                )
                head, commits = info.oid, commits + 1
                sent = total
                progress("upload", sent, total)
    except HfHubHTTPError as e:
        raise HubError(f"{target}: {first_line(e)}; run the publish again to resume") from None
    return PublishSummary(
        str(target),
        head,
        commits,
        plan.uploads,
        total,
        plan.unchanged,
        len(plan.deletes),
        time.perf_counter() - t0,
    )


def _check_before_deleting(ds, target: HubTarget, deletes: list[str]) -> None:
    """Refuse to delete remote objects while the local dataset lacks what readers reach."""
    from tasks.verify import reachable_problems

    problems = reachable_problems(ds)
    if problems:
        raise HubError(
            f"{ds.root}: {len(problems)} problem(s) in what readers reach ({problems[0]}); "
            f"publishing would delete {len(deletes)} good object(s) from {target}. Run "
            f"`csdm verify {ds.root} --repair` then `csdm process`, or publish with "
            "--allow-deletions"
        )


def env_token() -> str | None:
    """HF_TOKEN, if set (the cached login is found by huggingface_hub itself)."""
    return os.environ.get("HF_TOKEN") or None
