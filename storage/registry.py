"""Model registry: immutable, checksummed versions of exported policies, with aliases.

A registry is a local folder, an object-store URL (`s3://bucket/models`) or a Hugging Face
model repo (`hf://owner/repo`), same layout:

    NAME/index.json           {"name", "versions": [{"version", "created", "manifest_sha256"}],
                               "aliases": {"production": 3}}
    NAME/v3/policy.onnx ...   the exported files, never rewritten
    NAME/v3/MANIFEST.json     {"files": {name: {"sha256", "size"}}}, covering policy.json too

On the Hub each version is one commit, tagged `NAME-v3`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

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
from storage.policy import DESCRIPTOR, DescriptorError, PolicyDescriptor

LEASE_WAIT = 120.0  # seconds a registration waits for another one on an object store


class RegistryError(ValueError):
    """A registry, version or file that is missing or fails verification."""


def file_entry(path: Path) -> dict:
    """{"sha256", "size"} of a file, as descriptors and manifests list them."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def _verify_files(folder: Path, files: dict[str, dict], what: str) -> None:
    for name, entry in files.items():
        p = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
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


def read_verified_descriptor(folder: str | Path) -> dict:
    """An export folder's descriptor, after checking every file it lists (the model among them)."""
    folder = Path(folder)
    path = folder / DESCRIPTOR
    if not path.is_file():
        raise RegistryError(f"{path}: missing; not a complete export (run `csdm export`)")
    try:
        d = json.loads(path.read_text())
        PolicyDescriptor.from_dict(d, str(path))  # the one reader of policy.json
    except json.JSONDecodeError as e:
        raise RegistryError(f"{path}: not a csdm policy descriptor ({e})") from e
    except DescriptorError as e:
        raise RegistryError(str(e)) from None
    _verify_files(folder, d["files"], DESCRIPTOR)
    return d


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
        raise RegistryError(f"{path}: does not match the registry index; the version was "
                            "altered, refusing it")  # fmt: skip
    if DESCRIPTOR not in files:
        raise RegistryError(f"{path}: does not cover {DESCRIPTOR}")
    _verify_files(folder, files, MANIFEST)
    return read_verified_descriptor(folder)


def _write_manifest(folder: Path) -> str:
    files = {p.name: file_entry(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    text = json.dumps({"format_version": REGISTRY_FORMAT, "files": files}, indent=2)
    (folder / MANIFEST).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def _export_files(export_dir: Path) -> list[Path]:
    """The files of a verified export: those its descriptor lists, plus the descriptor."""
    d = read_verified_descriptor(export_dir)
    return [export_dir / n for n in d["files"]] + [export_dir / DESCRIPTOR]


@dataclass(frozen=True)
class Version:
    """One registered version."""

    name: str
    version: int
    location: str  # a folder, or `hf://owner/repo` + path
    existing: bool = False  # the export was already registered as this version


def check_alias(alias: str | None) -> str | None:
    """`alias` if it is a name (a letter, then letters, digits, `.`, `_` or `-`)."""
    if alias is not None and not ALIAS.match(alias):
        raise RegistryError(f"alias {alias[:80]!r}: an alias is a name of up to 64 letters, "
                            "digits, '.', '_' or '-', starting with a letter")  # fmt: skip
    return alias


def check_index(index: object, where: str) -> dict:
    """`index` if it is a well-formed index.json: integer versions, aliases naming them."""
    bad = index_problem(index)
    if bad:
        raise RegistryError(f"{where}: {INDEX} {bad}; the registry was edited by hand or "
                            "damaged, and no version is read from it")  # fmt: skip
    return index


def _resolve(index: dict, version: int | None, alias: str | None, where: str) -> int:
    return resolve_version(index, version, alias, where, RegistryError)


def _model_sha(export_dir: Path) -> str:
    d = read_verified_descriptor(export_dir)
    return d["files"][d["model"]]["sha256"]


def _registered_as(index: dict, model_sha: str, folder: Path | None = None) -> int | None:
    """The version already holding this exact model file, if any."""
    for v in index["versions"]:
        sha = v.get("model_sha256")
        if sha is None and folder is not None:  # indexes from before model_sha256 was kept
            try:
                sha = _model_sha(folder / f"v{v['version']}")
            except RegistryError:
                continue
        if sha == model_sha:
            return v["version"]
    return None


def _add_version(
    index: dict,
    n: int,
    manifest_sha: str,
    alias: str | None,
    model_sha: str | None = None,
    evaluation: dict | None = None,
) -> None:
    entry = {
        "version": n,
        "manifest_sha256": manifest_sha,
        "model_sha256": model_sha,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if evaluation is not None:  # what the promotion gate measured: data, split, metrics
        entry["eval"] = evaluation
    index["versions"].append(entry)
    if alias:
        index["aliases"][alias] = n


def _manifest_sha(index: dict, n: int) -> str:
    return next(v["manifest_sha256"] for v in index["versions"] if v["version"] == n)


def _writable_then_retry(func, path, _exc) -> None:
    os.chmod(path, 0o644)
    func(path)


def _new_index(name: str) -> dict:
    return {"format_version": REGISTRY_FORMAT, "name": name, "versions": [], "aliases": {}}


def _check_format(d: dict, where) -> None:
    """Refuse a registry file of a later format; one written before versions is read as 1."""
    problem = registry_format_problem(d)
    if problem:
        raise RegistryError(f"{where}: {problem}")


class LocalRegistry:
    """A folder registry; writes are atomic renames under a lock, versions are read-only."""

    def __init__(self, root: str | Path, name: str) -> None:
        if not name or "/" in name or name.startswith("."):
            raise RegistryError(f"{name!r}: a model name is one path component")
        self.root, self.name = Path(root), name
        self.folder = self.root / name

    def index(self) -> dict:
        """The model's index, or an empty one before the first registration."""
        p = self.folder / INDEX
        if not p.exists():
            return _new_index(self.name)
        try:
            return check_index(json.loads(p.read_text()), str(self.folder))
        except (ValueError, RecursionError) as e:
            if isinstance(e, RegistryError):
                raise
            raise RegistryError(f"{p}: not JSON ({str(e)[:80]})") from None

    @contextlib.contextmanager
    def _locked(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as f:
            try:
                import fcntl
            except ImportError:  # Windows: registries are written from the training side
                yield
                return
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write_index(self, index: dict) -> None:
        tmp = self.folder / f".{INDEX}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(index, indent=2))
        os.replace(tmp, self.folder / INDEX)

    def register(
        self, export_dir: str | Path, alias: str | None = None, evaluation: dict | None = None
    ) -> Version:
        """Copy a verified export in as the next version; optionally point an alias at it."""
        check_alias(alias)
        files = _export_files(Path(export_dir))
        model_sha = _model_sha(Path(export_dir))
        with self._locked():
            index = self.index()
            same = _registered_as(index, model_sha, self.folder)
            if same is not None:  # the same model again: no new version, maybe a new alias
                if alias:
                    index["aliases"][alias] = same
                    self._write_index(index)
                return Version(self.name, same, str(self.folder / f"v{same}"), existing=True)
            # a crash after a rename but before the index write leaves an unlisted vN: skip it
            taken = [int(p.name[1:]) for p in self.folder.glob("v*") if p.name[1:].isdigit()]
            n = max([v["version"] for v in index["versions"]] + taken, default=0) + 1
            staging = self.folder / f".staging-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                for f in files:
                    shutil.copyfile(f, staging / f.name)
                manifest_sha = _write_manifest(staging)
                verify_version(staging, manifest_sha)  # the copies are what we checked
                for f in staging.iterdir():
                    f.chmod(0o444)
                os.rename(staging, self.folder / f"v{n}")
            finally:
                if staging.exists():
                    shutil.rmtree(staging, onerror=_writable_then_retry)
            _add_version(index, n, manifest_sha, alias, model_sha, evaluation)
            self._write_index(index)
        return Version(self.name, n, str(self.folder / f"v{n}"))

    def set_alias(self, alias: str, version: int) -> None:
        """Point `alias` at an existing version."""
        check_alias(alias)
        with self._locked():
            index = self.index()
            index["aliases"][alias] = _resolve(index, version, None, str(self.folder))
            self._write_index(index)

    def resolve(self, version: int | None = None, alias: str | None = None) -> Version:
        """A version by number, by alias, or the latest; verified before it is returned."""
        index = self.index()
        n = _resolve(index, version, alias, str(self.folder))
        folder = self.folder / f"v{n}"
        verify_version(folder, _manifest_sha(index, n))
        return Version(self.name, n, str(folder))


class ObjectRegistry:
    """The same layout under an object-store URL (s3://bucket/models); versions never rewritten.

    Registrations hold a lease object beside the index, since object stores have no locks.
    """

    def __init__(self, root: str, name: str, lease_wait: float = LEASE_WAIT,
                 clock=time.time, sleep=time.sleep) -> None:  # fmt: skip
        from storage.fs import root_of

        if not name or "/" in name or name.startswith("."):
            raise RegistryError(f"{name!r}: a model name is one path component")
        self.root, self.name = root_of(root), name
        self.lease_wait, self.clock, self.sleep = lease_wait, clock, sleep

    def _url(self, key: str = "") -> str:
        return self.root.url_of(f"{self.name}/{key}" if key else self.name)

    def index(self) -> dict:
        """The model's index, or an empty one before the first registration."""
        try:
            index = self.root.read_json(f"{self.name}/{INDEX}")
        except (ValueError, RecursionError) as e:
            raise RegistryError(f"{self._url(INDEX)}: not JSON ({str(e)[:80]})") from None
        return check_index(index, self._url()) if index is not None else _new_index(self.name)

    def _lease(self):
        from storage.lease import DatasetLease, LeaseSite

        # registrations take seconds: a concurrent one is waited for, not refused
        return DatasetLease(LeaseSite(self.root, f"{self.name}/.lease.json"), renew=False,
                            wait=self.lease_wait, clock=self.clock, sleep=self.sleep)  # fmt: skip

    def register(
        self, export_dir: str | Path, alias: str | None = None, evaluation: dict | None = None
    ) -> Version:
        """Upload a verified export as the next version (files, then MANIFEST, then index)."""
        check_alias(alias)
        export_dir = Path(export_dir)
        files = _export_files(export_dir)
        model_sha = _model_sha(export_dir)
        with self._lease():
            index = self.index()
            same = _registered_as(index, model_sha)
            if same is not None:
                if alias:
                    index["aliases"][alias] = same
                    self.root.put_json(f"{self.name}/{INDEX}", index)
                return Version(self.name, same, self._url(f"v{same}"), existing=True)
            taken = [int(n[1:]) for n in self.root.list(self.name) if n[1:].isdigit()]
            n = max([v["version"] for v in index["versions"]] + taken, default=0) + 1
            entries = {}
            for f in files:
                data = f.read_bytes()
                entries[f.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                self.root.put_bytes(f"{self.name}/v{n}/{f.name}", data)
            manifest = {"format_version": REGISTRY_FORMAT, "files": dict(sorted(entries.items()))}
            text = json.dumps(manifest, indent=2)
            self.root.put_bytes(f"{self.name}/v{n}/{MANIFEST}", text.encode())
            manifest_sha = hashlib.sha256(text.encode()).hexdigest()
            _add_version(index, n, manifest_sha, alias, model_sha, evaluation)
            self.root.put_json(f"{self.name}/{INDEX}", index)
        return Version(self.name, n, self._url(f"v{n}"))

    def set_alias(self, alias: str, version: int) -> None:
        """Point `alias` at an existing version."""
        check_alias(alias)
        with self._lease():
            index = self.index()
            index["aliases"][alias] = _resolve(index, version, None, self._url())
            self.root.put_json(f"{self.name}/{INDEX}", index)

    def resolve(self, version: int | None = None, alias: str | None = None) -> Version:
        """A version by number, by alias, or the latest; its manifest checked against the index."""
        index = self.index()
        n = _resolve(index, version, alias, self._url())
        try:
            manifest = self.root.read_bytes(f"{self.name}/v{n}/{MANIFEST}")
        except FileNotFoundError:
            raise RegistryError(f"{self._url(f'v{n}/{MANIFEST}')}: missing") from None
        if hashlib.sha256(manifest).hexdigest() != _manifest_sha(index, n):
            raise RegistryError(f"{self._url(f'v{n}/{MANIFEST}')}: does not match the index")
        return Version(self.name, n, self._url(f"v{n}"))

    def download(self, version: Version, dest: str | Path) -> Path:
        """Copy a version to `dest/NAME/vN` and verify every file there."""
        out = Path(dest) / self.name / f"v{version.version}"
        if out.exists():
            verify_version(out, _manifest_sha(self.index(), version.version))
            return out
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        for name in [*self.root.list(f"{self.name}/v{version.version}")]:
            (tmp / name).write_bytes(self.root.read_bytes(f"{self.name}/v{version.version}/{name}"))
        verify_version(tmp, _manifest_sha(self.index(), version.version))
        os.rename(tmp, out)
        return out


def open_registry(spec: str | Path, name: str):
    """The registry at `hf://owner/repo` (a Hub model repo), an object-store URL or a folder.

    A `LocalRegistry`, an `ObjectRegistry` or a `storage.registry_hub.HubRegistry`.
    """
    from storage.fs import is_url
    from storage.registry_hub import HubRegistry

    s = str(spec)
    if s.startswith("hf://"):
        repo = s.removeprefix("hf://").strip("/")
        if repo.count("/") != 1:
            raise RegistryError(f"{s}: expected hf://owner/repo")
        return HubRegistry(repo, name)
    if is_url(s) and not s.startswith("file://"):
        return ObjectRegistry(s, name)
    return LocalRegistry(s.removeprefix("file://"), name)


def __getattr__(name: str):
    if name == "HubRegistry":  # it lives in its own module, which imports this one
        from storage.registry_hub import HubRegistry

        return HubRegistry
    raise AttributeError(name)
