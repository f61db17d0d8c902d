"""`csdm-agent pull`: copy or download one registered version, verified, next to the others.

Registries are those `csdm register` writes: a folder (local or a network share), or a
Hugging Face model repo `hf://owner/repo`, read over plain HTTPS (`HF_ENDPOINT`, `HF_TOKEN`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from csdm_agent.artifact import DESCRIPTOR, MANIFEST, Artifact, VerificationError
from csdm_agent.contract import INDEX, commit_path, index_problem, is_file_name
from csdm_agent.contract import resolve_version as _resolve

log = logging.getLogger("csdm_agent")


class RegistrySource:
    """Reads files of one model in a registry by relative path."""

    def __init__(self, registry: str, name: str) -> None:
        self.registry, self.name = registry, name

    def read(self, rel: str, revision: str | None = None) -> bytes:
        """Bytes of `NAME/rel` in the registry (at a Hub revision when given)."""
        if self.registry.startswith("hf://"):
            repo = self.registry.removeprefix("hf://").strip("/")
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
            rev = urllib.parse.quote(revision or "main", safe="")
            url = f"{endpoint}/{repo}/resolve/{rev}/{self.name}/{rel}"
            req = urllib.request.Request(url)
            if token := os.environ.get("HF_TOKEN"):  # never forwarded to a redirect's host
                req.add_unredirected_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.read()
            except urllib.error.HTTPError as e:
                raise VerificationError(f"{url}: {_http_reason(e, self.name)}") from None
            except OSError as e:
                raise VerificationError(f"{url}: cannot download ({e})") from e
        if "://" in self.registry:
            raise VerificationError(
                f"{self.registry}: the agent pulls from a folder or hf://owner/repo only; "
                "download this registry's version with `csdm` on another machine"
            )
        if not Path(self.registry).is_dir():
            raise VerificationError(f"{self.registry}: no such registry folder")
        path = Path(self.registry) / self.name / rel
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise VerificationError(
                f"{path}: missing (is {self.name!r} registered here?)"
            ) from None
        except OSError as e:
            raise VerificationError(f"{path}: cannot read ({e})") from e

    def index(self) -> dict:
        """The model's version list and aliases, checked to be well formed."""
        raw = self.read(INDEX)  # its own message: missing folder, token, repo or model
        try:
            index = json.loads(raw)
        except (ValueError, RecursionError):
            raise VerificationError(f"{self.registry}: {self.name}/{INDEX} is not JSON") from None
        return _checked(index, f"{self.registry}: {self.name}/{INDEX}")


def _http_reason(e, name: str) -> str:
    """What a Hub's HTTP error means for a pull, from its status and error code."""
    code = (e.headers.get("X-Error-Code") or "") if e.headers else ""
    if e.code in (401, 403):
        return f"HTTP {e.code}: HF_TOKEN is missing, wrong or may not read this repo"
    if code == "RepoNotFound":
        return "no such repo (or HF_TOKEN may not see it)"
    if code in ("EntryNotFound", "RevisionNotFound") or e.code == 404:
        return f"not found (is {name!r} registered in this repo?)"
    return f"HTTP {e.code} ({e.reason})"


def _checked(index: object, where: str) -> dict:
    """`index` if its versions are positive integers with checksums and its aliases name them."""
    problem = index_problem(index)
    if problem:
        raise VerificationError(f"{where} {problem}; refusing it")
    return index


def resolve_version(index: dict, version: int | None, alias: str | None, where: str) -> int:
    """A version number from an explicit number, an alias, or the latest (of a checked index)."""
    return _resolve(index, version, alias, where, VerificationError)


def _check_manifest(raw: bytes, want: str, where) -> None:
    if hashlib.sha256(raw).hexdigest() != want:
        raise VerificationError(f"{where} does not match the registry index; refusing this version")


def pull(
    registry: str, name: str, dest: str | Path, version: int | None = None, alias: str | None = None
) -> Artifact:
    """Fetch `name` vN into `dest/name/vN` and verify it; an existing verified copy is reused."""
    src = RegistrySource(str(registry), name)
    index = src.index()
    n = resolve_version(index, version, alias, f"{registry}/{name}")
    want = next(v.get("manifest_sha256") for v in index["versions"] if v["version"] == n)
    if not want:
        raise VerificationError(f"{registry}: {name} v{n} has no manifest checksum in the index")
    final = Path(dest) / name / f"v{n}"
    if final.exists():  # an earlier pull: the same checks as a fresh one
        _check_manifest(
            (final / MANIFEST).read_bytes() if (final / MANIFEST).exists() else b"",
            want,
            final / MANIFEST,
        )
        return Artifact.open(final)
    tag = f"{name}-v{n}" if str(registry).startswith("hf://") else None
    staging = final.parent / f".pull-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        raw = src.read(f"v{n}/{MANIFEST}", tag)
        _check_manifest(raw, want, f"{registry}: {name}/v{n}/{MANIFEST}")
        manifest = json.loads(raw)
        (staging / MANIFEST).write_bytes(raw)
        for fname in manifest["files"]:
            if not is_file_name(fname):
                raise VerificationError(f"{registry}: manifest lists an unsafe path {fname!r}")
            (staging / fname).write_bytes(src.read(f"v{n}/{fname}", tag))
        try:
            Artifact.open(staging)  # every checksum, before the version becomes visible
        except VerificationError as e:  # name the registry's file, not our temporary copy
            where = f"{registry.rstrip('/')}/{name}/v{n}"
            raise VerificationError(
                f"{str(e).replace(str(staging), where)}; nothing was pulled"
            ) from None
        commit_path(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return Artifact.open(final)


def _versions(folder: Path) -> list[Path]:
    """`vN` subfolders, newest first."""
    found = [
        d for d in folder.iterdir() if d.is_dir() and d.name[1:].isdigit() and d.name[0] == "v"
    ]
    return sorted(found, key=lambda d: int(d.name[1:]), reverse=True)


def find_model(path: str | Path) -> Path:
    """The model in a pull destination: DEST/NAME/vN, DEST/NAME (newest verifying version), DEST."""
    p = Path(path)
    if (p / DESCRIPTOR).is_file():
        return p
    if not p.is_dir():
        raise VerificationError(
            f"{p}: no such folder; pull a model first: csdm-agent pull "
            "--registry REG --name NAME --dest models"
        )
    versions = _versions(p)
    if versions:
        problems = []
        for v in versions:
            try:
                Artifact.open(v)
            except VerificationError as e:  # an altered copy: say so, try the older one
                problems.append(str(e))
                continue
            if problems:
                log.warning("%s; playing %s instead", problems[0], v)
            return v
        raise VerificationError(
            f"{p}: no version verifies ({'; '.join(problems[:2])}); pull it again"
        )
    names = sorted(d for d in p.iterdir() if d.is_dir() and _versions(d))
    if len(names) == 1:
        return find_model(names[0])
    if names:
        listed = ", ".join(d.name for d in names)
        raise VerificationError(
            f"{p}: holds several models ({listed}); pass --model {p / names[0].name} or another"
        )
    found = ", ".join(sorted(x.name for x in p.iterdir())[:8]) or "nothing"
    raise VerificationError(
        f"{p}: not a csdm model folder: no {DESCRIPTOR}, no vN versions and no NAME/vN models "
        f"in it (found: {found}); pull one with csdm-agent pull --registry REG --name NAME "
        f"--dest {p}"
    )
