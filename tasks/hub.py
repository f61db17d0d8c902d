"""Download files of a Hugging Face dataset repo: resumable, sha256-verified, incremental.

Listing goes through `huggingface_hub.HfApi`; transfers reuse its URL and auth helpers
(`hf_hub_url`, `build_hf_headers`, its HTTP session) but resume partial files with HTTP Range
requests, which huggingface_hub's own downloader does not do for interrupted transfers.
"""

from __future__ import annotations

import fnmatch
import hashlib
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
from huggingface_hub.utils import build_hf_headers, get_session

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
        tree = list(api.list_repo_tree(repo, repo_type="dataset", revision=info.sha,
                                       recursive=True))  # fmt: skip
    except HfHubHTTPError as e:
        raise IngestError(f"{repo}@{revision}: {str(e).splitlines()[0]} (check --repo and "
                          "--revision, and HF_TOKEN for private repos)") from e  # fmt: skip
    except (ValueError, json.JSONDecodeError) as e:  # e.g. an HTML page instead of JSON
        raise IngestError(f"{repo}@{revision}: the Hub's answer is not the expected JSON ({e}); "
                          "is HF_ENDPOINT right?") from e  # fmt: skip
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
        raise IngestError(f"{repo}@{info.sha[:12]}: no file matches {include or ['*']} "
                          f"(minus {list(exclude)}); {len(files)} files in the repo")  # fmt: skip
    return IngestPlan(
        repo, revision, info.sha,
        tuple(HubFile(p, files[p].size, files[p].lfs.sha256 if files[p].lfs else None,
                      files[p].blob_id) for p in chosen),
    )  # fmt: skip


def local_path(dest: Path, path: str) -> Path:
    """Where repo file `path` lands under `dest`; repo paths that would escape it are refused."""
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or ".." in parts:
        raise IngestError(f"{path}: unsafe repo path; refused")
    return dest.joinpath(*parts)


def part_path(target: Path) -> Path:
    """The partial download of `target` (renamed to `target` once verified)."""
    return target.with_name(target.name + ".part")


def load_manifest(dest: Path) -> dict:
    """What earlier runs verified in `dest`: commit and per-path size and sha256."""
    path = dest / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"files": {}}


def _save_manifest(dest: Path, manifest: dict) -> None:
    tmp = dest / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, dest / MANIFEST)


def pending(plan: IngestPlan, dest: Path) -> list[HubFile]:
    """Files not yet verified in `dest` at the same content (an unchanged file is kept)."""
    done = load_manifest(dest)["files"]
    out = []
    for f in plan.files:
        rec = done.get(f.path)
        target = local_path(dest, f.path)
        same = rec and rec["size"] == f.size and rec["checksum"] == (f.sha256 or f.git_oid)
        if not (same and target.exists() and target.stat().st_size == f.size):
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
            f"{dest}: needs {need / 1e9:.2f} GB more, only {free / 1e9:.2f} GB free; free "
            "space, choose fewer files (--include/--subset) or another --dest"
        )
    return need


def _digest(path: Path, git_size: int | None = None) -> str:
    h = hashlib.sha256() if git_size is None else hashlib.sha1(b"blob %d\0" % git_size)
    with open(path, "rb") as f:
        while block := f.read(8 * CHUNK):
            h.update(block)
    return h.hexdigest()


def download_file(
    plan: IngestPlan,
    f: HubFile,
    dest: Path,
    endpoint: str | None = None,
    token: str | bool | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Fetch one file to `dest/<repo path>`, resuming a `.part` file; verify, then rename."""
    target = local_path(dest, f.path)
    part = part_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(plan.repo, f.path, repo_type="dataset", revision=plan.commit,
                     endpoint=endpoint)  # fmt: skip
    headers = build_hf_headers(token=token)
    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have > f.size:  # a different file was here before: start over
            part.unlink()
            have = 0
        if have < f.size:
            try:
                _transfer(url, headers, part, have, f, progress)
            except (httpx2.HTTPError, _Retryable, OSError) as e:
                failures += 1
                if failures > retries:
                    kept = part.stat().st_size if part.exists() else 0
                    raise IngestError(
                        f"{f.path}: download failed after {retries} retries ({e}); "
                        f"re-run to resume from the {kept} bytes kept in {part.name}"
                    ) from e
                time.sleep(backoff * 2 ** (failures - 1))
                continue
        expected = f.sha256 or f.git_oid
        got = _digest(part, None if f.sha256 else f.size)
        if got == expected:
            os.replace(part, target)
            return target
        part.unlink()
        failures += 1
        if failures > retries:
            raise IngestError(
                f"{f.path}: checksum mismatch after {retries} retries "
                f"(want {expected}, got {got}); the Hub's copy may be corrupt"
            )


class _Retryable(Exception):
    """A 5xx or 429 answer."""


def _transfer(url, headers, part: Path, have: int, f: HubFile, progress) -> None:
    req = {**headers, "Range": f"bytes={have}-"} if have else dict(headers)
    with get_session().stream("GET", url, headers=req, follow_redirects=True, timeout=60) as r:
        if r.status_code in (429, 500, 502, 503, 504):
            raise _Retryable(f"HTTP {r.status_code}")
        if r.status_code == 416:  # the range starts at or past the end: start over
            part.unlink(missing_ok=True)
            return
        if r.status_code not in (200, 206):
            raise IngestError(f"{f.path}: HTTP {r.status_code} from {url.split('?')[0]}")
        mode = "ab" if r.status_code == 206 else "wb"  # 200: the server sent it all again
        if mode == "wb" and have and progress:
            progress(-have)
        with open(part, mode) as out:
            for block in r.iter_bytes():  # as it arrives: a drop keeps what came
                out.write(block)
                if progress:
                    progress(len(block))


def record_verified(plan: IngestPlan, dest: Path, files: list[HubFile]) -> None:
    """Remember verified files (and the commit) so the next run skips them."""
    manifest = load_manifest(dest)
    manifest.update(repo=plan.repo, revision=plan.revision, commit=plan.commit)
    for f in files:
        manifest["files"][f.path] = {"size": f.size, "checksum": f.sha256 or f.git_oid,
                                     "sha256": f.sha256, "commit": plan.commit}  # fmt: skip
    _save_manifest(dest, manifest)


def plan_dict(plan: IngestPlan) -> dict:
    """A small JSON-able description of the plan."""
    return {"repo": plan.repo, "revision": plan.revision, "commit": plan.commit,
            "files": [asdict(f) for f in plan.files]}  # fmt: skip
