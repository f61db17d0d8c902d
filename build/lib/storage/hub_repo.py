"""A Hugging Face dataset repo, `hf://datasets/ORG/NAME[@REV]`: addresses, listing, commits.

Reading pins a revision to its commit, so one opening reads one commit however the branch
moves; writing lists the repo with its hashes, and commits batches with the head as parent.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

_URL = re.compile(
    r"hf://datasets/(?P<org>[\w.-]+)/(?P<name>[\w.-]+)(?:@(?P<rev>[^/]+))?(?P<path>/.*)?\Z"
)
SHA1 = re.compile(r"[0-9a-f]{40}\Z")


class HubError(RuntimeError):
    """A Hub repo that cannot be read or written, in one line naming it and the reason."""


@dataclass(frozen=True)
class HubTarget:
    """A dataset repo and a revision (a branch, tag or commit)."""

    repo: str  # ORG/NAME
    revision: str = "main"

    @property
    def org(self) -> str:
        """The namespace: a user or an organisation."""
        return self.repo.split("/")[0]

    @property
    def url(self) -> str:
        """`hf://datasets/ORG/NAME@REV`, the revision quoted as HfFileSystem reads it."""
        return f"hf://datasets/{self.repo}@{quote(self.revision, safe='')}"

    def __str__(self) -> str:
        return f"hf://datasets/{self.repo}" + (
            "" if self.revision == "main" else f"@{self.revision}"
        )


def is_hub_dataset(spec: object) -> bool:
    """Whether `spec` names a Hub dataset repo."""
    return str(spec).startswith("hf://datasets/")


def parse_target(spec: str, revision: str | None = None) -> tuple[HubTarget, str]:
    """The repo and revision of `hf://datasets/ORG/NAME[@REV][/path]`, and the path."""
    m = _URL.match(str(spec).rstrip("/"))
    if not m:
        raise HubError(f"{spec}: expected hf://datasets/ORG/NAME, optionally @REVISION")
    require_hub()
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(f"{m['org']}/{m['name']}")
    except HFValidationError as e:
        raise HubError(f"{spec}: not a valid repo id ({first_line(e)})") from None
    path = (m["path"] or "").strip("/")
    if ".." in path.split("/") or "//" in path:
        raise HubError(f"{spec}: a path in the repo may not hold '..' or empty parts")
    rev = unquote(m["rev"]) if m["rev"] else None
    if rev and revision and rev != revision:
        raise HubError(f"{spec}: names revision {rev!r}, and --revision says {revision!r}")
    return HubTarget(f"{m['org']}/{m['name']}", rev or revision or "main"), path


HUB_MIN = (2, 0)  # the huggingface_hub csdm's Hub code is tested with (pyproject: [hub])


def require_hub() -> None:
    """One line, naming the fix, where huggingface_hub is missing or older than csdm needs.

    A reader installed into an environment that pins an old one (DIAMOND's 0.17) still reads
    folders and buckets; only hf:// needs it.
    """
    try:
        import huggingface_hub
    except ImportError:
        raise HubError("hf:// needs huggingface_hub: pip install 'csdm[hub]'") from None
    found = tuple(int(v) for v in re.findall(r"\d+", huggingface_hub.__version__)[:2])
    if found < HUB_MIN:
        raise HubError(
            f"hf:// needs huggingface_hub>={HUB_MIN[0]}.{HUB_MIN[1]}, this environment has "
            f"{huggingface_hub.__version__}: pip install 'csdm[hub]' in another environment, "
            "or copy the dataset to a folder or bucket and read it there"
        )


def api(token: str | None = None):
    """An HfApi for HF_ENDPOINT as the environment says now (not at import)."""
    require_hub()
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT"), token=token)


def fs_options() -> dict:
    """HfFileSystem options: the endpoint as the environment says now."""
    endpoint = os.environ.get("HF_ENDPOINT")
    return {"endpoint": endpoint} if endpoint else {}


def resolve_commit(target: HubTarget, token: str | None = None) -> str:
    """The commit a revision points at now (one request)."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if SHA1.match(target.revision):
        return target.revision
    try:
        return api(token).dataset_info(target.repo, revision=target.revision).sha
    except RevisionNotFoundError:
        raise HubError(f"{target}: no revision {target.revision!r}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{target}: no such dataset repo, or the token may not read it") from None
    except HfHubHTTPError as e:
        raise HubError(f"{target}: {first_line(e)}") from None


def pinned(spec: str) -> bool:
    """Whether a Hub URL names a commit (which never changes)."""
    try:
        return bool(SHA1.match(parse_target(spec)[0].revision))
    except HubError:
        return False


def pin(spec: str) -> tuple[str, str]:
    """`hf://datasets/ORG/NAME@COMMIT/path` for a Hub dataset URL, and that commit."""
    require_hub()
    target, path = parse_target(spec)
    commit = resolve_commit(target)
    url = f"hf://datasets/{target.repo}@{commit}"
    return (f"{url}/{path}" if path else url), commit


def read_range(url: str, start: int | None = None, end: int | None = None) -> bytes:
    """A file of a pinned revision, or `[start, end)` of it: one GET, no listing before it.

    HfFileSystem asks for the parent folder's listing before a read; at a commit, which never
    changes, that is a request per file for nothing.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

    target, path = parse_target(url)
    where = hf_hub_url(
        target.repo,
        path,
        repo_type="dataset",
        revision=target.revision,
        endpoint=os.environ.get("HF_ENDPOINT"),
    )
    headers = build_hf_headers()
    ranged = start is not None or end is not None
    if start is not None and start < 0:  # the last bytes (a shard's index): a suffix range
        headers["Range"] = f"bytes={start}"
    elif ranged:
        lo = start or 0
        if end is not None and end <= lo:
            return b""
        headers["Range"] = f"bytes={lo}-{'' if end is None else end - 1}"
    r = http_backoff("GET", where, headers=headers, follow_redirects=True)
    if r.status_code == 404:
        raise FileNotFoundError(url)
    if r.status_code == 416:
        return b""
    try:
        hf_raise_for_status(r)
    except OSError as e:
        raise OSError(f"{url}: {first_line(e)}") from None
    data = r.content
    if ranged and r.status_code == 200:  # a server that ignored the range: cut it here
        return data[start or 0 : end]
    if start is not None and start < 0 and end is not None:
        if end > 0:
            raise ValueError(f"{url}: a range from the end to an offset is not supported")
        return data[: len(data) + end] if end < 0 else b""
    return data


def git_blob_sha1(data: bytes) -> str:
    """Git's id of a file's bytes: what the Hub lists for a file not stored in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class RemoteFile:
    """A file as the repo lists it: size, and sha256 (LFS) or git's blob id (others)."""

    size: int
    sha256: str | None
    blob: str


def first_line(e: BaseException) -> str:
    """An exception's first line, bounded."""
    text = str(e).strip().splitlines()
    return text[0][:240] if text else type(e).__name__


def listing(
    target: HubTarget, token: str | None = None
) -> tuple[str | None, dict[str, RemoteFile]]:
    """The revision's head commit and every file under it; (None, {}) before the branch exists."""
    from huggingface_hub.errors import RevisionNotFoundError

    hf = api(token)
    try:
        head = hf.dataset_info(target.repo, revision=target.revision).sha
    except RevisionNotFoundError:
        return None, {}
    files = {}
    for entry in hf.list_repo_tree(target.repo, repo_type="dataset", revision=head, recursive=True):
        if getattr(entry, "size", None) is None or not hasattr(entry, "blob_id"):
            continue  # a folder
        lfs = getattr(entry, "lfs", None)
        files[entry.path] = RemoteFile(entry.size, lfs.sha256 if lfs else None, entry.blob_id)
    return head, files
