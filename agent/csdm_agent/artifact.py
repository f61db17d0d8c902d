"""A pulled model: its descriptor and files, checked against their sha256 before any use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from csdm_agent.contract import (
    DESCRIPTOR,
    MANIFEST,
    ContractError,
    graph_mismatch,
    is_file_name,
    sha256_file,
)
from csdm_agent.contract import check_descriptor as _check_descriptor

__all__ = [
    "DESCRIPTOR",
    "MANIFEST",
    "Artifact",
    "VerificationError",
    "check_descriptor",
    "graph_mismatch",
    "sha256_file",
]


class VerificationError(ContractError):
    """A descriptor, manifest or model file that is missing, unreadable or altered."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VerificationError(f"{path}: unreadable ({e})") from e


def check_descriptor(d: object, where: str = DESCRIPTOR) -> None:
    """Raise `VerificationError` naming `where` and the problem, unless the agent can run `d`."""
    _check_descriptor(d, where, VerificationError)


def check_files(folder: Path, files: dict, listed_in: str) -> None:
    """Every listed file exists with the listed size and sha256."""
    for name, entry in files.items():
        if not is_file_name(name):
            raise VerificationError(f"{folder / listed_in}: lists an unsafe path {name!r}")
        p = folder / name
        if not p.is_file():
            raise VerificationError(f"{p}: listed in {listed_in} but missing")
        if p.stat().st_size != entry["size"] or sha256_file(p) != entry["sha256"]:
            raise VerificationError(
                f"{p}: sha256 does not match {listed_in}; the file was altered or truncated, "
                "pull the model again"
            )


@dataclass(frozen=True)
class Artifact:
    """A verified model folder: `descriptor` is `policy.json`, `model` the ONNX file."""

    folder: Path
    descriptor: dict

    @property
    def model(self) -> Path:
        """The ONNX file."""
        return self.folder / self.descriptor["model"]

    @classmethod
    def open(cls, folder: str | Path) -> Artifact:
        """Check the manifest (when present) and the descriptor's checksums, then open."""
        folder = Path(folder)
        if (folder / MANIFEST).exists():
            files = _read_json(folder / MANIFEST).get("files", {})
            if DESCRIPTOR not in files:
                raise VerificationError(f"{folder / MANIFEST}: does not cover {DESCRIPTOR}")
            check_files(folder, files, MANIFEST)
        if not (folder / DESCRIPTOR).is_file():
            raise VerificationError(f"{folder / DESCRIPTOR}: missing; not a csdm model folder")
        d = _read_json(folder / DESCRIPTOR)
        check_descriptor(d, str(folder / DESCRIPTOR))
        check_files(folder, d["files"], DESCRIPTOR)
        return cls(folder, d)
