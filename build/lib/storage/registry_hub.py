"""The registry's site in a Hugging Face model repo: one commit and one tag per version."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from storage.registry import MANIFEST, HeadMovedError, RegistryError, listed_files


class HubSite:
    """A Hub model repo; a writer pins the head commit, so a concurrent one fails, not clobbers."""

    def __init__(self, repo: str, token: str | None = None) -> None:
        from huggingface_hub import HfApi

        self.repo = repo
        # HF_ENDPOINT is read now, not at import, so a changed environment is honoured
        self.api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"), token=token)
        self._head: str | None = None
        self._pinned = False

    def url(self, key: str = "") -> str:
        """`hf://owner/repo/key`."""
        return f"hf://{self.repo}/{key}" if key else f"hf://{self.repo}"

    def location(self, key: str) -> str:
        """A URL: Hub versions are read by downloading them."""
        return self.url(key)

    def read(self, key: str) -> bytes | None:
        """A file at the pinned head (or main), never a cached copy: the index moves."""
        from huggingface_hub.errors import (
            EntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        revision = self._head if self._pinned else None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.api.hf_hub_download(self.repo, key, revision=revision, local_dir=tmp)
            except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
                return None
            return Path(path).read_bytes()

    def taken(self, name: str) -> list[int]:
        """None beyond the index: a version and its index land in one commit."""
        return []

    @contextlib.contextmanager
    def exclusive(self):
        """Pin the head: reads happen there, and the commit names it as its parent."""
        from huggingface_hub.errors import RevisionNotFoundError

        self.api.create_repo(self.repo, repo_type="model", exist_ok=True, private=True)
        try:
            self._head = self.api.repo_info(self.repo).sha
        except RevisionNotFoundError:  # a repo with no commits yet
            self._head = None
        self._pinned = True
        try:
            yield
        finally:
            self._pinned, self._head = False, None

    def commit(self, files: dict[str, bytes], message: str, tag: str | None) -> None:
        """All the files in one commit on the pinned head, then the version's tag."""
        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.errors import HfHubHTTPError

        ops = [CommitOperationAdd(k, data) for k, data in files.items()]
        try:
            done = self.api.create_commit(
                self.repo, ops, commit_message=message, parent_commit=self._head
            )
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", None)
            if status in (409, 412):  # the parent is no longer the head
                raise HeadMovedError(f"{self.url()}: the head moved") from None
            raise
        self._head = done.oid
        if tag:
            self.api.create_tag(self.repo, tag=tag, revision=done.oid)

    def check(self, version_key: str, manifest_sha: str) -> None:
        """Nothing before the download, which verifies every file (saves a request)."""

    def fetch(self, version_key: str, tag: str, dest: Path) -> None:
        """The version's files at its tag, which pins them even after later commits."""
        from huggingface_hub.errors import RevisionNotFoundError

        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:  # no shared cache copy
            try:
                pattern = [f"{version_key}/*"]
                self.api.snapshot_download(
                    self.repo, revision=tag, allow_patterns=pattern, local_dir=tmp
                )
            except RevisionNotFoundError as e:
                raise RegistryError(
                    f"{self.url()}: no tag {tag}; was it registered by csdm?"
                ) from e
            src = Path(tmp) / version_key
            if not (src / MANIFEST).is_file():
                raise RegistryError(f"{self.url(version_key)}: no {MANIFEST} at tag {tag}")
            raw = (src / MANIFEST).read_bytes()
            (dest / MANIFEST).write_bytes(raw)
            for name in listed_files(raw, self.url(f"{version_key}/{MANIFEST}")):
                if not (src / name).is_file():
                    where = self.url(f"{version_key}/{name}")
                    raise RegistryError(f"{where}: listed in {MANIFEST} but missing")
                (dest / name).write_bytes((src / name).read_bytes())
