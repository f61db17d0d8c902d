"""Read files of a Hugging Face dataset repo: streamed or downloaded, resumed, sha256-verified.

Listing goes through `huggingface_hub.HfApi`; transfers use its URL, auth and retry helpers
(`hf_hub_url`, `build_hf_headers`, `http_stream_backoff`) and resume a dropped connection with
an HTTP Range request from the byte reached, which huggingface_hub's own downloader does not do.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import httpx2  # huggingface_hub's HTTP client; its errors are what a transfer raises
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import build_hf_headers, http_stream_backoff

from storage.diskspace import human_bytes
from storage.fs import Root, root_of
from storage.localfile import commit_file
from storage.records import IngestManifest

REPO = "TeaPearce/CounterStrike_Deathmatch"
# Named subsets as fnmatch patterns over full repo paths (`*` also matches `/`).
SUBSETS: dict[str, tuple[str, ...]] = {
    "dm_scraped": ("hdf5_dm_july2021_*_to_*.tar", "*/hdf5_dm_july2021_*_to_*.tar"),
    "dm_expert": ("dataset_dm_expert_dust2*",),
    "aim_expert": ("dataset_aim_expert*",),
    "other_maps": ("dataset_dm_expert_othermaps*",),
    "metadata": ("dataset_metadata/*",),
}
MANIFEST = ".csdm-ingest.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest did: the commit, files fetched, already verified and failed (path, error)."""

    repo: str
    revision: str
    commit: str
    files: int
    fetched: int
    already_verified: int
    failed: tuple[tuple[str, str], ...]
    bytes: int
    seconds: float


class IngestError(RuntimeError):
    """A download that cannot be completed; the message names the file and what to do."""


@dataclass(frozen=True)
class HubFile:
    """One file of a repo revision as the Hub lists it."""

    path: str
    size: int
    sha256: str | None  # LFS files
    git_oid: str  # git blob id, the checksum of small non-LFS files


@dataclass(frozen=True)
class IngestPlan:
    """What to fetch: a resolved commit and the selected files."""

    repo: str
    revision: str
    commit: str
    files: tuple[HubFile, ...]

    @property
    def total_bytes(self) -> int:
        """Bytes of all selected files."""
        return sum(f.size for f in self.files)


def patterns_for(include: list[str], subsets: list[str]) -> list[str]:
    """Include patterns from explicit globs plus named subsets."""
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise ValueError(f"unknown subset(s) {unknown}; known: {', '.join(SUBSETS)}")
    return [*include, *(p for s in subsets for p in SUBSETS[s])]


def select(paths: list[str], include: list[str], exclude: list[str]) -> list[str]:
    """Paths matching any include pattern (all when none) and no exclude pattern."""
    chosen = [p for p in paths if not include or any(fnmatch.fnmatch(p, g) for g in include)]
    return [p for p in chosen if not any(fnmatch.fnmatch(p, g) for g in exclude)]


def is_network_error(e: BaseException) -> bool:
    """A refused, reset or timed-out connection, from the socket or the HTTP client."""
    mod = type(e).__module__.split(".")[0]
    return isinstance(e, OSError) or mod.startswith(("httpx", "httpcore", "requests", "urllib3"))


def plan_ingest(
    repo: str,
    revision: str,
    include: list[str],
    exclude: list[str] = (),
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> IngestPlan:
    """Resolve `revision` to a commit and list the selected files with sizes and checksums."""
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.dataset_info(repo, revision=revision)
        tree = list(
            api.list_repo_tree(repo, repo_type="dataset", revision=info.sha, recursive=True)
        )
    except HfHubHTTPError as e:
        raise IngestError(
            f"{repo}@{revision}: {str(e).splitlines()[0]} (check --repo and "
            "--revision, and HF_TOKEN for private repos)"
        ) from e
    except (ValueError, json.JSONDecodeError) as e:  # e.g. an HTML page instead of JSON
        raise IngestError(
            f"{repo}@{revision}: the Hub's answer is not the expected JSON ({e}); "
            "is HF_ENDPOINT right?"
        ) from e
    except Exception as e:
        if not is_network_error(e):
            raise
        where = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        raise IngestError(
            f"{where}: cannot reach the Hub ({type(e).__name__}: {e}); check --endpoint or "
            "HF_ENDPOINT and the network, then re-run"
        ) from None
    files = {f.path: f for f in tree if hasattr(f, "size")}
    chosen = select(sorted(files), include, list(exclude))
    if not chosen:
        raise IngestError(
            f"{repo}@{info.sha[:12]}: no file matches {include or ['*']} "
            f"(minus {list(exclude)}); {len(files)} files in the repo"
        )
    return IngestPlan(
        repo,
        revision,
        info.sha,
        tuple(
            HubFile(
                p, files[p].size, files[p].lfs.sha256 if files[p].lfs else None, files[p].blob_id
            )
            for p in chosen
        ),
    )


def repo_key(path: str) -> str:
    """Repo path `path` as a key below a destination; paths that would escape it are refused."""
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or ".." in parts or "\\" in path:
        raise IngestError(f"{path}: unsafe repo path; refused")
    return PurePosixPath(*parts).as_posix()


def local_path(dest: Path, path: str) -> Path:
    """Where repo file `path` lands under `dest`; repo paths that would escape it are refused."""
    return dest.joinpath(*PurePosixPath(repo_key(path)).parts)


def part_path(target: Path) -> Path:
    """The partial download of `target` (renamed to `target` once verified)."""
    return target.with_name(target.name + ".part")


def load_manifest(dest: Path | str | Root) -> dict:
    """What earlier runs verified in `dest`: commit and per-path size and sha256."""
    root = root_of(dest)
    return IngestManifest.read(root.read_json(MANIFEST), root.url_of(MANIFEST)).to_dict()


def pending(plan: IngestPlan, dest: Path | str | Root) -> list[HubFile]:
    """Files not yet verified in `dest` at the same content (an unchanged file is kept)."""
    root = root_of(dest)
    done = load_manifest(root)["files"]
    present = root.find() if done else {}
    out = []
    for f in plan.files:
        key, rec = repo_key(f.path), done.get(f.path)  # an unsafe path is refused up front
        same = rec and rec["size"] == f.size and rec["checksum"] == (f.sha256 or f.git_oid)
        if not (same and present.get(key) == f.size):
            out.append(f)
    return out


def check_disk(dest: Path, files: list[HubFile]) -> int:
    """Bytes still to transfer; raises if `dest` lacks the room."""
    need = 0
    for f in files:
        part = part_path(local_path(dest, f.path))
        need += f.size - (part.stat().st_size if part.exists() else 0)
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if need > free:
        raise IngestError(
            f"{dest}: needs {human_bytes(need)} more, only {human_bytes(free)} free; free "
            "space, choose fewer files (--include/--subset) or another --dest"
        )
    return need


class ChecksumError(IngestError):
    """The bytes read differ from the checksum the Hub lists for the file."""

    def __init__(self, path: str, want: str, got: str, note: str = "") -> None:
        super().__init__(f"{path}: checksum mismatch{note} (want {want}, got {got})")
        self.path, self.want, self.got = path, want, got

    def after(self, retries: int) -> ChecksumError:
        """The same mismatch, as the last word after `retries` fresh transfers."""
        return ChecksumError(
            self.path,
            self.want,
            self.got,
            f" after {retries} retries; the Hub's copy may be corrupt",
        )


def hub_id(repo: str, path: str) -> str:
    """A file's name independent of the revision: `hf://datasets/{repo}/{path}`."""
    return f"hf://datasets/{repo}/{path}"


def new_hash(f: HubFile):
    """The hash the Hub lists for `f`: sha256 in LFS, else git's blob sha1."""
    return hashlib.sha256() if f.sha256 else hashlib.sha1(b"blob %d\0" % f.size)


class HubReader(io.RawIOBase):
    """A Hub file read once, front to back, hashing every byte.

    A 5xx or 429 answer is retried with huggingface_hub's backoff; a connection dropped midway
    is reopened with a Range request from the byte reached, keeping the running hash.
    """

    def __init__(
        self,
        plan: IngestPlan,
        f: HubFile,
        endpoint: str | None = None,
        token: str | bool | None = None,
        start: int = 0,
        hasher=None,
        retries: int = 5,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.file, self.pos, self.retries, self.backoff = f, start, retries, backoff
        self._sleep = sleep
        self.url = hf_hub_url(
            plan.repo, f.path, repo_type="dataset", revision=plan.commit, endpoint=endpoint
        )
        self._headers = build_hf_headers(token=token)
        self._hash = hasher if hasher is not None else new_hash(f)
        self._ctx = self._chunks = None
        self._pending = memoryview(b"")
        self._failures = 0
        self.resumes = 0  # connections reopened after a drop

    def readable(self) -> bool:
        """Always: a reader."""
        return True

    def hexdigest(self) -> str:
        """The hash of every byte read so far."""
        return self._hash.hexdigest()

    def readinto(self, buf) -> int:
        """Copy the next bytes into `buf`, reconnecting after a drop."""
        if self.closed:
            raise ValueError(f"{self.file.path}: read from a closed HubReader")
        while not len(self._pending):
            if self.pos >= self.file.size:
                return 0
            try:
                if self._chunks is None:
                    self._connect()  # may leave the rest of a first chunk pending
                if not len(self._pending):
                    self._pending = memoryview(next(self._chunks))
                self._failures = 0
            except StopIteration:
                self._dropped(f"the connection closed at byte {self.pos}")
            except (httpx2.HTTPError, OSError) as e:
                self._dropped(f"{type(e).__name__}: {e}")
        n = min(len(buf), len(self._pending), self.file.size - self.pos)
        buf[:n] = self._pending[:n]
        self._hash.update(self._pending[:n])
        self._pending, self.pos = self._pending[n:], self.pos + n
        return n

    def finish(self) -> str:
        """Read what is left, then check the hash against the Hub's; return the digest."""
        while self.read(CHUNK * 8):
            pass
        got, want = self.hexdigest(), self.file.sha256 or self.file.git_oid
        if got != want:
            raise ChecksumError(self.file.path, want, got)
        return got

    def _connect(self) -> None:
        headers = {**self._headers, "Range": f"bytes={self.pos}-"} if self.pos else self._headers
        ctx = http_stream_backoff(
            "GET",
            self.url,
            headers=headers,
            follow_redirects=True,
            timeout=60,
            max_retries=self.retries,
            base_wait_time=self.backoff,
        )
        try:
            r = ctx.__enter__()
        except HfHubHTTPError as e:  # still failing after the retries
            raise IngestError(f"{self.file.path}: {str(e).splitlines()[0]}; re-run to retry") from e
        if r.status_code not in (200, 206):
            ctx.__exit__(None, None, None)
            raise IngestError(
                f"{self.file.path}: HTTP {r.status_code} from "
                f"{self.url.split('?')[0]} at byte {self.pos}"
            )
        if r.status_code == 206 and not r.headers.get("Content-Range", "").startswith(
            f"bytes {self.pos}-"
        ):
            ctx.__exit__(None, None, None)
            raise IngestError(
                f"{self.file.path}: asked for bytes from {self.pos}, the server "
                f"sent {r.headers.get('Content-Range')!r}"
            )
        self._ctx, self._chunks = ctx, r.iter_bytes()  # as it arrives: a drop keeps what came
        skip = self.pos if r.status_code == 200 else 0  # the server ignored the Range
        while skip > 0:
            block = next(self._chunks)
            if len(block) > skip:
                self._pending = memoryview(block)[skip:]
            skip -= len(block)

    def _dropped(self, why: str) -> None:
        self._disconnect()
        self._failures += 1
        if self._failures > self.retries:
            raise IngestError(
                f"{self.file.path}: connection lost at byte {self.pos} of "
                f"{self.file.size} after {self.retries} retries ({why})"
            )
        self._sleep(self.backoff * 2 ** (self._failures - 1))
        self.resumes += 1

    def _disconnect(self) -> None:
        ctx, self._ctx, self._chunks = self._ctx, None, None
        if ctx is not None:
            with contextlib.suppress(httpx2.HTTPError, OSError):  # closing a dead connection
                ctx.__exit__(None, None, None)

    def close(self) -> None:
        """Close the connection."""
        self._disconnect()
        super().close()


def download_file(
    plan: IngestPlan,
    f: HubFile,
    dest: Path,
    endpoint: str | None = None,
    token: str | bool | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> Path:
    """Fetch one file to `dest/<repo path>`, resuming a `.part` file; verify, then rename."""
    target = local_path(dest, f.path)
    part = part_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if have > f.size:  # a different file was here before: start over
            part.unlink()
            have = 0
        seed = new_hash(f)
        with open(part, "ab") as out:
            if have:
                with open(part, "rb") as kept:
                    while block := kept.read(8 * CHUNK):
                        seed.update(block)
            reader = HubReader(plan, f, endpoint, token, have, seed, retries, backoff)
            try:
                with reader:
                    shutil.copyfileobj(reader, out, 8 * CHUNK)
                    reader.finish()
                out.flush()
                os.fsync(out.fileno())  # the bytes are on disk before the name says so
                commit_file(part, target)
                return target
            except ChecksumError as e:
                part.unlink()
                if attempt == retries:
                    raise e.after(retries) from None
            except IngestError as e:
                out.flush()
                raise IngestError(
                    f"{e}; re-run to resume from the {part.stat().st_size} "
                    f"bytes kept in {part.name}"
                ) from None
    raise AssertionError("unreachable")


# Bytes sent so far per repo path by `upload_file` in this process (the flow's progress).
UPLOADED: dict[str, int] = {}


def upload_file(
    plan: IngestPlan,
    f: HubFile,
    dest: str | Root,
    endpoint: str | None = None,
    token: str | bool | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    part_size: int = 64 << 20,
) -> str:
    """Stream one file from the Hub to `dest/<repo path>` (a bucket: a multipart upload).

    It appears at its key only once its checksum matches; a mismatch is fetched again.
    Returns the object's URL.
    """
    root, key = root_of(dest), repo_key(f.path)
    for attempt in range(retries + 1):
        UPLOADED[f.path] = 0
        reader = HubReader(plan, f, endpoint, token, retries=retries, backoff=backoff)
        with reader, root.writer(key, part_size) as out:
            while block := reader.read(8 * CHUNK):
                out.write(block)
                UPLOADED[f.path] += len(block)
            try:
                reader.finish()
            except ChecksumError as e:
                if attempt == retries:
                    raise e.after(retries) from None
                continue  # leaving the block discards the upload
            out.commit()
            return root.url_of(key)
    raise AssertionError("unreachable")


def record_verified(plan: IngestPlan, dest: Path | str | Root, files: list[HubFile]) -> None:
    """Remember verified files (and the commit) so the next run skips them."""
    root = root_of(dest)
    manifest = load_manifest(root)
    manifest.update(repo=plan.repo, revision=plan.revision, commit=plan.commit)
    for f in files:
        manifest["files"][f.path] = {
            "size": f.size,
            "checksum": f.sha256 or f.git_oid,
            "sha256": f.sha256,
            "commit": plan.commit,
        }
    root.put_json(MANIFEST, manifest)


def plan_dict(plan: IngestPlan) -> dict:
    """A small JSON-able description of the plan."""
    return {
        "repo": plan.repo,
        "revision": plan.revision,
        "commit": plan.commit,
        "files": [asdict(f) for f in plan.files],
    }
