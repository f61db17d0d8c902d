"""The model registry's layout in a Hugging Face model repo: one commit and one tag per version."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from storage.registry import (
    INDEX,
    RegistryError,
    Version,
    _add_version,
    _export_files,
    _manifest_sha,
    _model_sha,
    _new_index,
    _registered_as,
    _resolve,
    _write_manifest,
    check_alias,
    check_index,
    verify_version,
)


class HubRegistry:
    """The same layout in a Hugging Face model repo; one commit and one tag per version."""

    def __init__(self, repo: str, name: str, token: str | None = None) -> None:
        from huggingface_hub import HfApi

        self.repo, self.name = repo, name
        # HF_ENDPOINT is read now, not at import, so a changed environment is honoured
        self.api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"), token=token)

    def index(self, revision: str | None = None) -> dict:
        """The model's index at `revision` (default main); empty before the first version."""
        from huggingface_hub.errors import (
            EntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        with tempfile.TemporaryDirectory() as tmp:  # never a cached copy: the index moves
            try:
                path = self.api.hf_hub_download(self.repo, f"{self.name}/{INDEX}",
                                                revision=revision, local_dir=tmp)  # fmt: skip
            except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
                return _new_index(self.name)
            try:
                index = json.loads(Path(path).read_text())
            except (ValueError, RecursionError) as e:
                raise RegistryError(f"hf://{self.repo}/{self.name}/{INDEX}: not JSON "
                                    f"({str(e)[:80]})") from None  # fmt: skip
            return check_index(index, f"hf://{self.repo}/{self.name}")

    def register(
        self, export_dir: str | Path, alias: str | None = None, evaluation: dict | None = None
    ) -> Version:
        """Upload a verified export as `NAME/vN` with the new index in one commit, tag it."""
        check_alias(alias)
        from huggingface_hub import CommitOperationAdd

        files = _export_files(Path(export_dir))
        model_sha = _model_sha(Path(export_dir))
        self.api.create_repo(self.repo, repo_type="model", exist_ok=True, private=True)
        head = self._head()
        index = self.index(head)
        same = _registered_as(index, model_sha)
        if same is not None:
            if alias:
                self.set_alias(alias, same)
            return Version(self.name, same, f"hf://{self.repo}/{self.name}/v{same}", existing=True)
        n = max((v["version"] for v in index["versions"]), default=0) + 1
        with tempfile.TemporaryDirectory() as tmp:
            staging = Path(tmp)
            for f in files:
                shutil.copyfile(f, staging / f.name)
            manifest_sha = _write_manifest(staging)
            _add_version(index, n, manifest_sha, alias, model_sha, evaluation)
            ops = [
                CommitOperationAdd(f"{self.name}/v{n}/{p.name}", str(p))
                for p in sorted(staging.iterdir())
            ]
            ops.append(
                CommitOperationAdd(f"{self.name}/{INDEX}", json.dumps(index, indent=2).encode())
            )
            commit = self.api.create_commit(
                self.repo, ops, commit_message=f"{self.name} v{n}", parent_commit=head
            )
        self.api.create_tag(self.repo, tag=f"{self.name}-v{n}", revision=commit.oid)
        return Version(self.name, n, f"hf://{self.repo}/{self.name}/v{n}")

    def _head(self) -> str | None:
        """The head commit, where the index is read and which commits name as their parent.

        So a concurrent registration fails instead of overwriting the other's index.
        """
        from huggingface_hub.errors import RevisionNotFoundError

        try:
            return self.api.repo_info(self.repo).sha
        except RevisionNotFoundError:  # a repo with no commits yet
            return None

    def set_alias(self, alias: str, version: int) -> None:
        """Point `alias` at an existing version, in its own commit."""
        check_alias(alias)
        from huggingface_hub import CommitOperationAdd

        head = self._head()
        index = self.index(head)
        index["aliases"][alias] = _resolve(index, version, None, f"hf://{self.repo}")
        op = CommitOperationAdd(f"{self.name}/{INDEX}", json.dumps(index, indent=2).encode())
        message = f"{self.name}: {alias} -> v{version}"
        self.api.create_commit(self.repo, [op], commit_message=message, parent_commit=head)

    def resolve(self, version: int | None = None, alias: str | None = None) -> Version:
        """A version by number, by alias, or the latest (verified on download)."""
        n = _resolve(self.index(), version, alias, f"hf://{self.repo}")
        return Version(self.name, n, f"hf://{self.repo}/{self.name}/v{n}")

    def download(self, version: Version, dest: str | Path) -> Path:
        """Fetch a version's files at its tag, verify them, then move them to a new `dest`.

        Verification includes the manifest against the index; nothing unverified reaches `dest`.
        """
        from huggingface_hub.errors import RevisionNotFoundError

        n = version.version
        tag, sub, dest = f"{self.name}-v{n}", f"{self.name}/v{n}", Path(dest)
        if dest.exists():
            raise RegistryError(f"{dest}: already exists; download into a new folder")
        want = _manifest_sha(self.index(), n)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:  # no shared cache copy
            try:
                self.api.snapshot_download(self.repo, revision=tag, allow_patterns=[f"{sub}/*"],
                                           local_dir=tmp)  # fmt: skip
            except RevisionNotFoundError as e:
                raise RegistryError(f"hf://{self.repo}: no tag {tag}; was v{n} registered "
                                    "by csdm?") from e  # fmt: skip
            verify_version(Path(tmp) / sub, want)
            os.rename(Path(tmp) / sub, dest)
        return dest
