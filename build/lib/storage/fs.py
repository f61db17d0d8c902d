"""The one I/O seam: a dataset, source or registry root as a local path or an object-store URL.

fsspec is the backend (s3fs, gcsfs, adlfs, local); DESIGN.md "Storage seam" gives the
measurement behind the choice. Credentials and endpoints come from each cloud's standard
environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS,
AZURE_STORAGE_ACCOUNT_NAME, ...) plus non-secret `storage_options`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import uuid
from dataclasses import dataclass, field
from functools import cached_property

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from storage.diskspace import DiskFullError, is_disk_full
from storage.fs_options import OPTIONS_ENV
from storage.localfile import read_regular


class StorageAccessError(OSError):
    """A root that cannot be reached: missing bucket, wrong credentials, no such folder."""


class CorruptFileError(ValueError):
    """A file csdm reads that is not what it should be (not JSON, not an object)."""


class UnsafeKeyError(ValueError):
    """A key that would name something outside its root (absolute, or with a `..` part)."""


def _inside(key: str) -> str:
    """`key` if it stays below the root whatever built it: the last guard against `..`."""
    if key.startswith("/") or ".." in key.split("/") or "\x00" in key:
        raise UnsafeKeyError(f"{key!r}: a key must stay inside its root (no '..', not absolute)")
    return key


def is_url(spec: str) -> bool:
    """Whether `spec` names a protocol (`s3://`, `file://`, ...) rather than a plain path."""
    return "://" in str(spec)


@dataclass(frozen=True)
class Root:
    """A folder or bucket prefix; every key below is a relative POSIX path.

    Small and picklable (URL and options only), so it travels to Dask workers, which build
    their own filesystem client from it and their own environment.
    """

    url: str
    options: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not self.options and os.environ.get(OPTIONS_ENV):
            object.__setattr__(self, "options", json.loads(os.environ[OPTIONS_ENV]))

    @cached_property
    def _fs_and_path(self):
        if self.url.startswith("hf://"):  # the endpoint as the environment says now
            from storage.hub_repo import fs_options, pinned

            # a commit never changes, so its listings may be cached; a branch's may not
            cache = {} if pinned(self.url) else {"use_listings_cache": False}
            fs, path = fsspec.core.url_to_fs(self.url, **{**fs_options(), **cache, **self.options})
        elif is_url(self.url):
            # no cached listings: another process may have written since (a run, a compaction)
            fs, path = fsspec.core.url_to_fs(
                self.url, **{"use_listings_cache": False, **self.options}
            )
        else:
            fs, path = fsspec.filesystem("file"), os.path.abspath(self.url)
        return fs, path.rstrip("/") or "/"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem."""
        return self._fs_and_path[0]

    @property
    def path(self) -> str:
        """The root's path within `fs` (bucket/prefix for object stores)."""
        return self._fs_and_path[1]

    @property
    def local(self) -> bool:
        """Whether the root is on a local disk."""
        return "file" in _protocols(self.fs)

    def __str__(self) -> str:
        return self.url

    def __reduce__(self):  # only the URL and options travel; each process opens its own client
        return (Root, (self.url, self.options))

    def full(self, key: str = "") -> str:
        """The filesystem path of `key`."""
        return posixpath.join(self.path, _inside(key)) if key else self.path

    def url_of(self, key: str = "") -> str:
        """A URL (or local path) naming `key`, for messages and for other tools."""
        return posixpath.join(self.url.rstrip("/"), _inside(key)) if key else self.url

    def child(self, key: str) -> Root:
        """The root of a sub-folder."""
        return Root(self.url_of(key), self.options)

    # --- reads --------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        """Whether the object or file exists."""
        return self.fs.exists(self.full(key))

    def read_bytes(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or the range `[start, end)` in one request."""
        if self._hub_commit:
            from storage.hub_repo import read_range

            return read_range(self.url_of(key), start, end)
        if self.local:  # a FIFO or device planted in a dataset must not hang or flood a read
            return read_regular(self.full(key), start, end)
        return self.fs.cat_file(self.full(key), start=start, end=end)

    @cached_property
    def _hub_commit(self) -> bool:
        """Whether this is a Hub dataset at a commit (read by plain ranged GETs)."""
        from storage.hub_repo import pinned

        return self.url.startswith("hf://datasets/") and pinned(self.url)

    def read_json(self, key: str) -> dict | None:
        """A JSON object, or None when it does not exist; `CorruptFileError` naming it if not."""
        try:
            d = json.loads(self.read_bytes(key))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptFileError(f"{self.url_of(key)}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise CorruptFileError(f"{self.url_of(key)}: holds a {type(d).__name__}, not an object")
        return d

    def open(self, key: str, block_size: int = 1 << 20):
        """A seekable binary reader that fetches ranges as they are read."""
        if self.local:
            return open(self.full(key), "rb")
        return self.fs.open(self.full(key), "rb", block_size=block_size, cache_type="readahead")

    def list(self, key: str) -> list[str]:
        """Names directly under a folder or prefix (one listing request); [] if absent."""
        try:
            entries = self.fs.ls(self.full(key), detail=False, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = (posixpath.basename(e.rstrip("/")) for e in entries)
        return sorted(n for n in names if not n.startswith("."))  # dot files: writes under way

    def find(self, key: str = "") -> dict[str, int]:
        """Every file below `key`, recursively: relative key -> size."""
        base = self.full(key).rstrip("/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {
            posixpath.relpath(p, self.path): int(info.get("size") or 0)
            for p, info in found.items()
            if info.get("type") != "directory"
        }

    def info(self, key: str) -> dict:
        """Size and modification stamp of an object or file."""
        info = self.fs.info(self.full(key))
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
        return {"size": int(info.get("size") or 0), "stamp": str(stamp)}

    def read_parquet(self, key: str, **kwargs) -> pa.Table:
        """A Parquet file as a table."""
        return pq.read_table(self.full(key), filesystem=self.arrow_fs, **kwargs)

    # --- writes -------------------------------------------------------------------------
    def _writable(self) -> None:
        """Refuse writes to a Hub dataset: through HfFileSystem each would be a commit."""
        if self.url.startswith("hf://"):
            raise StorageAccessError(
                f"{self.url}: a Hub dataset is read-only to csdm; write to a "
                "folder or bucket, then `csdm publish` it"
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write an object whole: readers see the old bytes or the new, never a part.

        Object stores give that with one PUT; a local file is written aside and renamed.
        A full disk raises `DiskFullError` naming the file, and leaves nothing behind.
        """
        self._writable()
        path = self.full(key)
        try:
            if self.local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = os.path.join(
                    os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp"
                )
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                except BaseException:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                    raise
            else:
                self.fs.pipe_file(path, data)
        except OSError as e:
            if is_disk_full(e):
                raise DiskFullError(self.url_of(key), len(data)) from None
            raise

    @contextlib.contextmanager
    def writer(self, key: str, part_size: int = 64 << 20):
        """A file to stream an object into; it appears at `key` only if `commit()` is called.

        A bucket gets a multipart upload, completed on commit and aborted otherwise; a local
        file is written aside and renamed. A full disk raises `DiskFullError`.
        """
        self._writable()
        path = self.full(key)
        upload = _Upload(self, key, path, part_size)
        try:
            yield upload
        except OSError as e:
            upload.discard()
            if is_disk_full(e):
                raise DiskFullError(self.url_of(key), upload.written) from None
            raise
        except BaseException:
            upload.discard()
            raise
        upload.discard()  # a no-op after commit()

    def read_stamped(self, key: str) -> tuple[bytes | None, str | None]:
        """An object's bytes and a stamp that changes with every write; (None, None) if absent.

        The stamp is read first: if the object changes meanwhile, a `put_bytes_if` with it fails.
        """
        try:
            if self.local:
                with open(self.full(key), "rb") as f:
                    data = f.read()
                return data, hashlib.sha256(data).hexdigest()
            stamp = str(self.fs.info(self.full(key), refresh=True).get("ETag"))
            return self.read_bytes(key), stamp
        except FileNotFoundError:
            return None, None

    def put_bytes_if(self, key: str, data: bytes, stamp: str | None) -> bool:
        """Write only if the object is as `read_stamped` saw it (absent when `stamp` is None).

        Returns False when another writer came first. S3 checks it on the server (If-None-Match,
        If-Match); a local folder under an advisory lock. Other stores compare, then write.
        """
        self._writable()
        if self.local:
            import fcntl

            path = self.full(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            lock = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
            with open(lock, "a") as held:
                fcntl.flock(held, fcntl.LOCK_EX)
                if self.read_stamped(key)[1] != stamp:
                    return False
                self.put_bytes(key, data)
                return True
        if "s3" in _protocols(self.fs) or "s3a" in _protocols(self.fs):
            condition = {"mode": "create"} if stamp is None else {"IfMatch": stamp}
            try:
                self.fs.pipe_file(self.full(key), data, **condition)
            except FileExistsError:
                return False
            except OSError as e:
                if "pre-condition" in str(e) or "precondition" in str(e).lower():
                    return False
                raise
            return True
        if self.read_stamped(key)[1] != stamp:
            return False
        self.put_bytes(key, data)
        return True

    def put_tree(self, key: str, folder: str | os.PathLike) -> None:
        """Copy a local folder's files below `key`, each whole."""
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                rel = os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/")
                with open(os.path.join(dirpath, name), "rb") as f:
                    self.put_bytes(posixpath.join(key, rel) if key else rel, f.read())

    def put_json(self, key: str, obj: object) -> None:
        """Write a JSON object whole."""
        self.put_bytes(key, json.dumps(obj, indent=1, sort_keys=True).encode())

    def put_parquet(self, key: str, table: pa.Table) -> None:
        """Write a Parquet file whole (zstd)."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.put_bytes(key, buf.getvalue())

    def delete(self, key: str) -> None:
        """Remove an object or file; absent is fine."""
        self._writable()
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.full(key))

    def delete_many(self, keys: list[str]) -> None:
        """Remove many objects or files (object stores: batched, 1000 per request)."""
        self._writable()
        if keys:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm([self.full(k) for k in keys])

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Several whole objects, fetched concurrently; a missing one is left out."""
        if not keys:
            return {}
        got = self.fs.cat([self.full(k) for k in keys], on_error="omit")
        return {posixpath.relpath(p, self.path): b for p, b in got.items()}

    def delete_tree(self, key: str) -> None:
        """Remove everything below a folder or prefix; absent is fine."""
        self._writable()
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.full(key), recursive=True)

    def sweep_temporary(self) -> int:
        """Delete the temporary files of writes a killed process left (local disks only)."""
        if not self.local or not os.path.isdir(self.path):
            return 0
        gone = 0
        for dirpath, _dirs, files in os.walk(self.path):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    os.unlink(os.path.join(dirpath, name))
                    gone += 1
        return gone

    # --- adapters for other libraries -----------------------------------------------------
    @cached_property
    def arrow_fs(self):
        """The filesystem as pyarrow sees it (paths are `full(key)`)."""
        from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

        return LocalFileSystem() if self.local else PyFileSystem(FSSpecHandler(self.fs))

    def zarr_store(self, key: str, read_only: bool = False):
        """A Zarr v3 store rooted at `key`."""
        from zarr.storage import FsspecStore, LocalStore

        if self.local:
            return LocalStore(self.full(key), read_only=read_only)
        options = self.options
        if self.url.startswith("hf://"):  # the Hub's endpoint as the environment says now
            from storage.hub_repo import fs_options

            options = {**fs_options(), **options}
        return FsspecStore.from_url(self.url_of(key), storage_options=options, read_only=read_only)

    def check_access(self, writable: bool = False) -> None:
        """Fail early, naming the URL, when the root cannot be reached (or written)."""
        try:
            if self.local:
                if os.path.exists(self.path) and not os.path.isdir(self.path):
                    raise StorageAccessError(f"{self.url}: not a folder (a file is there)")
                if not writable and not os.path.exists(self.path):
                    raise FileNotFoundError(self.path)
                if writable:
                    _probe_local(self.path, self.url)
                return
            # a bucket's name, or a Hub repo (its path is datasets/ORG/NAME@REV/...)
            n = 3 if self.url.startswith("hf://datasets/") else 1
            bucket = "/".join(self.path.split("/")[:n])
            self.fs.ls(bucket, detail=False, refresh=True)
            if writable:
                probe = f".csdm-probe-{uuid.uuid4().hex[:8]}"
                self.put_bytes(probe, b"")
                self.delete(probe)
        except FileNotFoundError:
            what = "folder" if self.local else f"bucket {bucket!r}"
            if self.url.startswith("hf://"):
                what = "Hub dataset repo or revision"
            raise StorageAccessError(f"{self.url}: no such {what}") from None
        except PermissionError as e:
            raise StorageAccessError(
                f"{self.url}: access denied ({_first_line(e)}); check the credentials in the "
                "environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the endpoint"
            ) from None
        except OSError as e:
            if isinstance(e, DiskFullError | StorageAccessError):
                raise
            raise StorageAccessError(f"{self.url}: unreachable ({_first_line(e)})") from None


class _Upload:
    """A write in progress: `Root.writer`'s file."""

    def __init__(self, root: Root, key: str, path: str, part_size: int) -> None:
        self.written, self._done, self._path = 0, False, path
        if root.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._aside = os.path.join(
                os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp"
            )
            self._f = open(self._aside, "wb")  # noqa: SIM115 - closed by commit/discard
        else:
            self._aside = None
            self._f = root.fs.open(path, "wb", autocommit=False, block_size=part_size)

    def write(self, data) -> int:
        """Append bytes (a bucket uploads each full part as it fills)."""
        n = self._f.write(data)
        self.written += len(data)
        return n

    def commit(self) -> None:
        """Make the object appear at its key, whole."""
        self._f.close()
        if self._aside:
            os.replace(self._aside, self._path)
        else:
            self._f.commit()
        self._done = True

    def discard(self) -> None:
        """Throw the bytes away (aborting a multipart upload); nothing appears at the key."""
        if self._done:
            return
        self._done = True
        if self._aside:
            self._f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._aside)
        else:
            with contextlib.suppress(Exception):  # the upload may never have started
                self._f.discard()
            self._f.closed = True  # so that closing it later uploads nothing


def _probe_local(path: str, url: str) -> None:
    """Write a probe in the folder (made for it, then removed): a read-only mount fails here."""
    made = []
    try:
        p = path
        while not os.path.exists(p):
            made.append(p)
            p = os.path.dirname(p)
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".csdm-probe-{uuid.uuid4().hex[:8]}")
        with open(probe, "wb"):
            pass
        os.unlink(probe)
        for p in made:  # the run makes them again when it writes; a refused run leaves none
            os.rmdir(p)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(url, 0) from None
        where = "" if e.filename in (None, path) else f" at {e.filename}"
        raise StorageAccessError(f"{url}: not writable{where} ({e.strerror or e})") from None


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def root_of(spec: str | os.PathLike | Root, options: dict | None = None) -> Root:
    """A Root from a path or URL (a Root is returned as it is)."""
    if isinstance(spec, Root):
        return spec
    return Root(str(spec), dict(options or {}))
