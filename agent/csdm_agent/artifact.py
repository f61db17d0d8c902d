"""A pulled model: its descriptor and files, checked against their sha256 before any use."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

DESCRIPTOR = "policy.json"
MANIFEST = "MANIFEST.json"
# csdm's storage/policy.py owns the descriptor format; this is the agent's copy of its checks
# (the agent installs without csdm). tests/agent/test_descriptor_contract.py pins them together.
FORMAT = "csdm-policy"
SUPPORTED_VERSIONS = (1,)
REQUIRED = ("format", "format_version", "model", "opset", "action_space", "fps", "input",
            "state", "outputs", "files")  # fmt: skip


class VerificationError(ValueError):
    """A descriptor, manifest or model file that is missing, unreadable or altered."""


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VerificationError(f"{path}: unreadable ({e})") from e


def check_descriptor(d: object, where: str = DESCRIPTOR) -> None:
    """Raise `VerificationError` naming `where` and the problem, unless the agent can run `d`."""
    if not isinstance(d, dict):
        raise VerificationError(f"{where}: not a JSON object")
    if d.get("format") != FORMAT:
        raise VerificationError(f"{where}: format {d.get('format')!r}, not a {FORMAT} descriptor")
    version = d.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise VerificationError(
            f"{where}: format_version {version!r}; this reader supports "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}: upgrade csdm / csdm-agent"
        )
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise VerificationError(f"{where}: lacks {', '.join(missing)}")
    if not isinstance(d["files"], dict) or d["model"] not in d["files"]:
        raise VerificationError(f"{where}: does not list the checksum of its model {d['model']!r}")
    if not isinstance(d["state"], list) or not all(
        isinstance(s, dict) and {"input", "output", "shape"} <= s.keys() for s in d["state"]
    ):
        raise VerificationError(f"{where}: state entries need input, output and shape")
    if not isinstance(d["outputs"], list) or not all(
        isinstance(o, dict) and {"name", "width", "activation"} <= o.keys() for o in d["outputs"]
    ):
        raise VerificationError(f"{where}: output entries need name, width and activation")


def check_files(folder: Path, files: dict, listed_in: str) -> None:
    """Every listed file exists with the listed size and sha256."""
    for name, entry in files.items():
        if Path(name).name != name:
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


def _fits(graph: object, shape: object) -> bool:
    """A graph shape matches the descriptor's where both name a size (symbolic dims match any)."""
    return (isinstance(graph, list | tuple) and isinstance(shape, list) and len(graph) == len(shape)
            and all(type(g) is not int or w is None or g == w
                    for g, w in zip(graph, shape, strict=True)))  # fmt: skip


def graph_mismatch(d: dict, inputs: list[tuple], outputs: list[tuple]) -> str | None:
    """How the ONNX graph's (name, shape, type) inputs and outputs differ from `d`; None: alike."""
    try:
        return _graph_mismatch(d, inputs, outputs)
    except (KeyError, TypeError, AttributeError):
        return "the descriptor's input, state or outputs are malformed"


def _graph_mismatch(d: dict, inputs: list[tuple], outputs: list[tuple]) -> str | None:
    want_in = {d["input"]["name"]: (d["input"]["shape"], "tensor(uint8)")}
    want_in.update({s["input"]: (s["shape"], "tensor(float)") for s in d["state"]})
    got_in = {name: (shape, kind) for name, shape, kind in inputs}
    if set(got_in) != set(want_in):
        return f"the model takes inputs {sorted(got_in)}, the descriptor lists {sorted(want_in)}"
    want_out = [(o["name"], [None, o["width"]], "tensor(float)") for o in d["outputs"]]
    want_out += [(s["output"], s["shape"], "tensor(float)") for s in d["state"]]
    if [o[0] for o in outputs] != [o[0] for o in want_out]:
        return (f"the model's outputs are {[o[0] for o in outputs]}, the descriptor lists "
                f"{[o[0] for o in want_out]}")  # fmt: skip
    pairs = [(n, *got_in[n], *want_in[n]) for n in want_in]
    pairs += [
        (n, gs, gk, ws, wk) for (n, gs, gk), (_, ws, wk) in zip(outputs, want_out, strict=True)
    ]
    for name, got_shape, got_kind, shape, kind in pairs:
        if got_kind != kind or not _fits(got_shape, shape):
            return (f"{name!r} is {got_kind} {list(got_shape)} in the model, {kind} {shape} in "
                    "the descriptor")  # fmt: skip
    return None
