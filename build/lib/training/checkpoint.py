"""Run checkpoints (`RUN/ckpt.pt`): one typed structure, one writer, a data-only reader.

Training, `csdm import-keras` and `save_untrained` all write through `write_checkpoint`;
every reader goes through `read_checkpoint`, which unpickles tensors and plain data only.
A run is a folder or a bucket URL: the file is written and read whole through the `Root`.
"""

from __future__ import annotations

import io
import os
import pickle
import posixpath
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from storage.fs import Root, root_of
from storage.run import CKPT

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that is not plain tensors and data, or not a csdm checkpoint."""


@dataclass
class Checkpoint:
    """A run's state: weights and config always; optimiser, stream and RNGs for resuming."""

    model: dict[str, torch.Tensor]
    config: dict  # TrainConfig.to_dict()
    action_space: dict
    step: int = 0
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=lambda: {"root": None, "revision": None})
    world: int = 1
    optimizer: dict | None = None  # None: weights only (imported or untrained), not resumable
    scaler: dict | None = None
    stream: dict | None = None
    rng: list | None = None
    source: dict | None = None  # where imported weights came from: files and their sha256
    format_version: int = FORMAT_VERSION

    @property
    def resumable(self) -> bool:
        """Whether training can continue it (it carries optimiser and stream state)."""
        return self.optimizer is not None and self.stream is not None

    def to_dict(self) -> dict:
        """Plain dict of tensors and data, what `torch.save` writes."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str | Path = "checkpoint") -> Checkpoint:
        """Inverse of `to_dict`; files from before `format_version` count as version 1."""
        if not isinstance(d, dict) or not {"model", "config"} <= d.keys():
            raise CheckpointError(f"{where}: not a csdm checkpoint (no model and config)")
        version = d.get("format_version", 1)
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: checkpoint format_version {version}, this csdm reads "
                f"{FORMAT_VERSION}; use the csdm version that wrote it"
            )
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d.setdefault("action_space", _default_space())
        return cls(**d)


def _default_space() -> dict:
    from training.actions import DEFAULT

    return DEFAULT.to_dict()


def _split(path: str | os.PathLike) -> tuple[Root, str]:
    """The folder (or prefix) holding a file, and the file's name."""
    folder, name = posixpath.split(os.fspath(path))
    return root_of(folder or "."), name


def write_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> str:
    """Write whole: a crash leaves the previous checkpoint, never half of a new one."""
    buf = io.BytesIO()
    torch.save(ckpt.to_dict(), buf)
    root, name = _split(path)
    root.put_bytes(name, buf.getvalue())
    return os.fspath(path)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load tensors and plain data only: a pickle asking for any other object is refused."""
    root, name = _split(path)
    data = root.read_bytes(name)
    try:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused: not a plain csdm checkpoint ({first}); nothing in it was run. "
            "Use a checkpoint written by `csdm train` or `csdm import-keras`"
        ) from None
    return Checkpoint.from_dict(raw, path)


def has_checkpoint(run: str | os.PathLike | Root) -> bool:
    """Whether a run folder or URL holds a checkpoint."""
    return root_of(run).exists(CKPT)


def checkpoint_path(run: str | os.PathLike | Root) -> str:
    """The path or URL of a run's checkpoint."""
    return root_of(run).url_of(CKPT)


def load_checkpoint(run: str | os.PathLike | Root) -> Checkpoint:
    """A run's latest checkpoint, with a clear error when there is none."""
    if not has_checkpoint(run):
        raise FileNotFoundError(
            f"{run}: no {CKPT}; train first with `csdm train DATA --run {run}` "
            "(or `csdm import-keras PREFIX --run RUN`)"
        )
    return read_checkpoint(checkpoint_path(run))
