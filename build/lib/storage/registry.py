"""Model registry: immutable, checksummed versions of exported policies, with aliases.

One `Registry` serves a folder, an object-store URL (`s3://bucket/models`) or a Hugging Face
model repo (`hf://owner/repo`), with one layout:

    NAME/index.json           {"name", "versions": [{"version", "created", "manifest_sha256"}],
                               "aliases": {"production": 3}}
    NAME/v3/policy.onnx ...   the exported files, never rewritten
    NAME/v3/MANIFEST.json     {"files": {name: {"sha256", "size"}}}, covering policy.json too

Where they differ (how writers exclude each other, how a version is committed) is a site:
`RootSite` here for folders and buckets, `storage.registry_hub.HubSite` for the Hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from csdm_agent.contract import (
    ALIAS,
    INDEX,
    MANIFEST,
    REGISTRY_FORMAT,
    index_problem,
    registry_format_problem,
    resolve_version,
)

from storage.checksums import sha256_file
from storage.fs import Root, root_of
from storage.localfile import commit_file
from storage.policy import DESCRIPTOR, DescriptorError, PolicyDescriptor

LEASE_WAIT = 120.0  # seconds a registration waits for another one


class RegistryError(ValueError):
    """A registry, version or file that is missing or fails verification."""


class HeadMovedError(RegistryError):
    """A commit whose parent is no longer the head: another writer landed first."""


HEAD_RETRIES = 5  # registers retried when the Hub's head moved under them


def file_entry(path: Path) -> dict:
    """{"sha256", "size"} of a file, as descriptors and manifests list them."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def _unsafe(name: str) -> bool:
    return Path(name).is_absolute() or ".." in Path(name).parts


def _verify_files(folder: Path, files: dict[str, dict], what: str) -> None:
    for name, entry in files.items():
        p = folder / name
        if _unsafe(name):
            raise RegistryError(f"{folder / what}: lists an unsafe path {name!r}")
        if not p.is_file():
            raise RegistryError(f"{p}: listed in {what} but missing")
        try:
            size, sha = entry["size"], entry["sha256"]
        except (KeyError, TypeError) as e:
            raise RegistryError(f"{folder / what}: entry {name!r} lacks size or sha256") from e
        if p.stat().st_size != size or sha256_file(p) != sha:
            raise RegistryError(
                f"{p}: sha256 does not match {what}; the file was altered or "
                "truncated, export or pull it again"
            )


def _descriptor(raw: bytes, where: str) -> dict:
    try:
        d = json.loads(raw)
        PolicyDescriptor.from_dict(d, where)  # the one reader of policy.json
    except json.JSONDecodeError as e:
        raise RegistryError(f"{where}: not a csdm policy descriptor ({e})") from e
    except DescriptorError as e:
        raise RegistryError(str(e)) from None
    return d


def read_verified_descriptor(folder: str | Path) -> dict:
    """An export folder's descriptor, after checking every file it lists (the model among them)."""
    folder = Path(folder)
    path = folder / DESCRIPTOR
    if not path.is_file():
        raise RegistryError(f"{path}: missing; not a complete export (run `csdm export`)")
    d = _descriptor(path.read_bytes(), str(path))
    _verify_files(folder, d["files"], DESCRIPTOR)
    return d


def export_payload(export: str | Path | Root) -> dict[str, bytes]:
    """A complete export's files by name (the descriptor last), each checked against it.

    The export is a folder or a URL; what is returned is exactly what was checked.
    """
    root = root_of(export)
    where = root.url_of(DESCRIPTOR)
    try:
        raw = root.read_bytes(DESCRIPTOR)
    except FileNotFoundError:
        missing = f"{where}: missing; not a complete export (run `csdm export`)"
        raise RegistryError(missing) from None
    d = _descriptor(raw, where)
    payload = {}
    for name, entry in d["files"].items():
        if _unsafe(name) or name in (DESCRIPTOR, MANIFEST) or "/" in name:
            raise RegistryError(f"{where}: lists an unsafe path {name!r}")
        try:
            data = root.read_bytes(name)
        except FileNotFoundError:
            missing = f"{root.url_of(name)}: listed in {DESCRIPTOR} but missing"
            raise RegistryError(missing) from None
        fact = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in fact.items()):
            raise RegistryError(
                f"{root.url_of(name)}: sha256 does not match {DESCRIPTOR}; the file was "
                "altered or truncated, export it again"
            )
        payload[name] = data
    payload[DESCRIPTOR] = raw
    return payload


def verify_version(folder: str | Path, manifest_sha256: str | None = None) -> dict:
    """Check a version against the index's manifest hash (when given), then every file.

    The manifest must cover the descriptor; the descriptor's own checksums are checked last.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw)
        files = manifest["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RegistryError(f"{path}: unreadable ({e})") from e
    _check_format(manifest, path)
    if manifest_sha256 is not None and hashlib.sha256(raw).hexdigest() != manifest_sha256:
        raise RegistryError(
            f"{path}: does not match the registry index; the version was altered, refusing it"
        )
    if DESCRIPTOR not in files:
        raise RegistryError(f"{path}: does not cover {DESCRIPTOR}")
    _verify_files(folder, files, MANIFEST)
    return read_verified_descriptor(folder)


def manifest_bytes(payload: dict[str, bytes]) -> bytes:
    """MANIFEST.json for a version's files."""
    files = {
        n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
        for n, b in sorted(payload.items())
    }
    return json.dumps({"format_version": REGISTRY_FORMAT, "files": files}, indent=2).encode()


@dataclass(frozen=True)
class Version:
    """One registered version."""

    name: str
    version: int
    location: str  # a folder, or a URL (`s3://...`, `hf://owner/repo/NAME/vN`)
    existing: bool = False  # the export was already registered as this version


def check_alias(alias: str | None) -> str | None:
    """`alias` if it is a name (a letter, then letters, digits, `.`, `_` or `-`)."""
    if alias is not None and not ALIAS.match(alias):
        raise RegistryError(
            f"alias {alias[:80]!r}: an alias is a name of up to 64 letters, digits, '.', '_' "
            "or '-', starting with a letter"
        )
    return alias


def check_index(index: object, where: str) -> dict:
    """`index` if it is a well-formed index.json: integer versions, aliases naming them."""
    bad = index_problem(index)
    if bad:
        raise RegistryError(
            f"{where}: {INDEX} {bad}; the registry was edited by hand or damaged, and no "
            "version is read from it"
        )
    return index


def _check_format(d: dict, where) -> None:
    """Refuse a registry file of a later format; one written before versions is read as 1."""
    problem = registry_format_problem(d)
    if problem:
        raise RegistryError(f"{where}: {problem}")


class Site(Protocol):
    """Where a registry lives: reads, mutual exclusion and the commit of a version."""

    def url(self, key: str = "") -> str:
        """A URL naming `key`, for messages."""

    def location(self, key: str) -> str:
        """Where a version is read from: a local folder, or a URL."""

    def read(self, key: str) -> bytes | None:
        """A file's bytes, or None when it is absent."""

    def taken(self, name: str) -> list[int]:
        """Version numbers present on the site, listed in the index or not."""

    def exclusive(self):
        """A context in which this registration is the only writer."""

    def commit(self, files: dict[str, bytes], message: str, tag: str | None) -> None:
        """Write `files` so that readers see the index last; tag the version if named."""

    def check(self, version_key: str, manifest_sha: str) -> None:
        """Refuse a version that does not match the index (as far as is cheap here)."""

    def fetch(self, version_key: str, tag: str, dest: Path) -> None:
        """Copy a version's files into the local folder `dest`, unverified."""


class RootSite:
    """A folder or bucket: a lease object serialises writers; the index is written last."""

    def __init__(self, root: Root, name: str, lease_wait: float, clock, sleep) -> None:
        self.root, self.name = root, name
        self.lease_wait, self.clock, self.sleep = lease_wait, clock, sleep

    def url(self, key: str = "") -> str:
        """A URL naming `key`."""
        return self.root.url_of(key)

    def location(self, key: str) -> str:
        """A local folder, or a URL."""
        return self.root.full(key) if self.root.local else self.root.url_of(key)

    def read(self, key: str) -> bytes | None:
        """A file's bytes, or None."""
        try:
            return self.root.read_bytes(key)
        except FileNotFoundError:
            return None

    def taken(self, name: str) -> list[int]:
        """Every vN present."""
        # a crash after a version's files but before the index leaves an unlisted vN: skip it
        names = self.root.list(name) if self.root.exists(name) else []
        return [int(n[1:]) for n in names if n[:1] == "v" and n[1:].isdigit()]

    def exclusive(self):
        """The registry's lease."""
        from storage.lease import DatasetLease, LeaseSite

        # registrations take seconds: a concurrent one is waited for, not refused
        site = LeaseSite(self.root, f"{self.name}/.lease.json")
        return DatasetLease(
            site, renew=False, wait=self.lease_wait, clock=self.clock, sleep=self.sleep
        )

    def commit(self, files: dict[str, bytes], message: str, tag: str | None) -> None:
        """Each file whole, in order: a version's files, its manifest, then the index."""
        for key, data in files.items():
            self.root.put_bytes(key, data)
            if self.root.local and not key.endswith(INDEX):  # versions are read-only on disk
                Path(self.root.full(key)).chmod(0o444)

    def check(self, version_key: str, manifest_sha: str) -> None:
        """Every file on a local disk; the manifest's hash on an object store."""
        if self.root.local:  # cheap here: every file, not only the manifest
            verify_version(self.root.full(version_key), manifest_sha)
            return
        raw = self.read(f"{version_key}/{MANIFEST}")
        if raw is None:
            raise RegistryError(f"{self.url(f'{version_key}/{MANIFEST}')}: missing")
        if hashlib.sha256(raw).hexdigest() != manifest_sha:
            raise RegistryError(
                f"{self.url(f'{version_key}/{MANIFEST}')}: does not match the index"
            )

    def fetch(self, version_key: str, tag: str, dest: Path) -> None:
        """Copy the version's manifest, then each file it lists: nothing planted beside them."""
        raw = self.read(f"{version_key}/{MANIFEST}")
        if raw is None:
            raise RegistryError(f"{self.url(f'{version_key}/{MANIFEST}')}: missing")
        (dest / MANIFEST).write_bytes(raw)
        for name in listed_files(raw, self.url(f"{version_key}/{MANIFEST}")):
            data = self.read(f"{version_key}/{name}")
            if data is None:
                where = self.url(f"{version_key}/{name}")
                raise RegistryError(f"{where}: listed in {MANIFEST} but missing")
            (dest / name).write_bytes(data)


def listed_files(raw: bytes, where: str) -> list[str]:
    """The file names a version's manifest lists; one unsafe or nested name refuses it all."""
    try:
        names = list(json.loads(raw)["files"])
    except (ValueError, KeyError, TypeError) as e:
        raise RegistryError(f"{where}: unreadable ({e})") from None
    bad = [n for n in names if not isinstance(n, str) or _unsafe(n) or "/" in n]
    if bad:
        raise RegistryError(f"{where}: lists an unsafe path {bad[0]!r}")
    return [n for n in names if n != MANIFEST]


class Registry:
    """One model's versions and aliases, wherever the registry lives."""

    def __init__(self, site: Site, name: str, sleep=time.sleep) -> None:
        if not name or "/" in name or name.startswith("."):
            raise RegistryError(f"{name!r}: a model name is one path component")
        self.site, self.name, self.sleep = site, name, sleep

    def _where(self) -> str:
        return self.site.url(self.name)

    def index(self) -> dict:
        """The model's index, or an empty one before the first registration."""
        raw = self.site.read(f"{self.name}/{INDEX}")
        if raw is None:
            return {
                "format_version": REGISTRY_FORMAT,
                "name": self.name,
                "versions": [],
                "aliases": {},
            }
        try:
            index = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise RegistryError(
                f"{self.site.url(f'{self.name}/{INDEX}')}: not JSON ({str(e)[:80]})"
            ) from None
        return check_index(index, self._where())

    def _index_file(self, index: dict) -> dict[str, bytes]:
        return {f"{self.name}/{INDEX}": json.dumps(index, indent=2).encode()}

    def _registered_as(self, index: dict, model_sha: str) -> int | None:
        """The version already holding this exact model file, if any."""
        for v in index["versions"]:
            sha = v.get("model_sha256")
            if sha is None:  # indexes from before model_sha256 was kept: ask the descriptor
                raw = self.site.read(f"{self.name}/v{v['version']}/{DESCRIPTOR}")
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    d = json.loads(raw) if raw else None
                    sha = d["files"][d["model"]]["sha256"] if d else None
            if sha == model_sha:
                return v["version"]
        return None

    def register(
        self, export: str | Path | Root, alias: str | None = None, evaluation: dict | None = None
    ) -> Version:
        """Store a verified export (a folder or URL) as the next version; optionally alias it."""
        check_alias(alias)
        payload = export_payload(export)
        for attempt in range(HEAD_RETRIES):
            try:
                return self._register(payload, alias, evaluation)
            except HeadMovedError:  # another register landed first: read its index again
                if attempt == HEAD_RETRIES - 1:
                    raise RegistryError(
                        f"{self.site.url()}: {HEAD_RETRIES} other writers landed first; "
                        "register again"
                    ) from None
                self.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _register(self, payload: dict, alias: str | None, evaluation: dict | None) -> Version:
        d = json.loads(payload[DESCRIPTOR])
        model_sha = d["files"][d["model"]]["sha256"]
        with self.site.exclusive():
            index = self.index()
            same = self._registered_as(index, model_sha)
            if same is not None:  # the same model again: no new version, maybe a new alias
                if alias:
                    index["aliases"][alias] = same
                    self.site.commit(
                        self._index_file(index), f"{self.name}: {alias} -> v{same}", None
                    )
                loc = self.site.location(f"{self.name}/v{same}")
                return Version(self.name, same, loc, existing=True)
            listed = [v["version"] for v in index["versions"]]
            n = max(listed + self.site.taken(self.name), default=0) + 1
            manifest = manifest_bytes(payload)
            entry = {
                "version": n,
                "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
                "model_sha256": model_sha,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            if evaluation is not None:  # what the promotion gate measured: data, split, metrics
                entry["eval"] = evaluation
            index["versions"].append(entry)
            if alias:
                index["aliases"][alias] = n
            key = f"{self.name}/v{n}"
            files = {f"{key}/{f}": b for f, b in payload.items()}
            files[f"{key}/{MANIFEST}"] = manifest
            self.site.commit(
                {**files, **self._index_file(index)}, f"{self.name} v{n}", f"{self.name}-v{n}"
            )
        return Version(self.name, n, self.site.location(key))

    def set_alias(self, alias: str, version: int) -> None:
        """Point `alias` at an existing version."""
        check_alias(alias)
        with self.site.exclusive():
            index = self.index()
            index["aliases"][alias] = resolve_version(
                index, version, None, self._where(), RegistryError
            )
            self.site.commit(self._index_file(index), f"{self.name}: {alias} -> v{version}", None)

    def _manifest_sha(self, index: dict, n: int) -> str:
        return next(v["manifest_sha256"] for v in index["versions"] if v["version"] == n)

    def resolve(self, version: int | None = None, alias: str | None = None) -> Version:
        """A version by number, by alias, or the latest; checked against the index."""
        index = self.index()
        n = resolve_version(index, version, alias, self._where(), RegistryError)
        self.site.check(f"{self.name}/v{n}", self._manifest_sha(index, n))
        return Version(self.name, n, self.site.location(f"{self.name}/v{n}"))

    def download(self, version: Version, dest: str | Path) -> Path:
        """A version's files in the local folder `dest`, every one verified before it appears."""
        n, dest = version.version, Path(dest)
        want = self._manifest_sha(self.index(), n)
        if dest.exists():
            verify_version(dest, want)
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.mkdir()
        try:
            self.site.fetch(f"{self.name}/v{n}", f"{self.name}-v{n}", tmp)
            try:
                verify_version(tmp, want)
            except RegistryError as e:  # name the registry's copy, not our temporary one
                raise RegistryError(
                    str(e).replace(str(tmp), self.site.url(f"{self.name}/v{n}"))
                ) from None
            commit_file(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest


def open_registry(
    spec: str | Path, name: str, lease_wait: float = LEASE_WAIT, clock=time.time, sleep=time.sleep
) -> Registry:
    """The registry at `hf://owner/repo` (a Hub model repo), an object-store URL or a folder."""
    s = str(spec)
    if s.startswith("hf://"):
        from storage.registry_hub import HubSite

        repo = s.removeprefix("hf://").strip("/")
        if repo.count("/") != 1:
            raise RegistryError(f"{s}: expected hf://owner/repo")
        return Registry(HubSite(repo), name)
    root = root_of(s.removeprefix("file://"))
    return Registry(RootSite(root, name, lease_wait, clock, sleep), name)
