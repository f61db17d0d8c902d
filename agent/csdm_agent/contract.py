"""What csdm and its agent must agree on, in one dependency-free module both import.

The policy descriptor's checks, the registry index's rules and version resolution, the action
space's keys and mouse bins, file checksums, and the rename that puts a finished file or
folder in place. Standard library only: the agent installs without csdm, and csdm imports this
module from the agent's package.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

DESCRIPTOR = "policy.json"
MANIFEST = "MANIFEST.json"
INDEX = "index.json"
FORMAT = "csdm-policy"
SUPPORTED_VERSIONS = (1,)
# keys a reader needs to run the model; the rest (training, created) is provenance
REQUIRED = (
    "format",
    "format_version",
    "model",
    "opset",
    "action_space",
    "fps",
    "input",
    "state",
    "outputs",
    "files",
)
REGISTRY_FORMAT = 1  # format_version of index.json and MANIFEST.json (absent: written before it)
ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}\Z")  # ASCII: aliases appear in paths and tags
SHA256 = re.compile(r"[0-9a-f]{64}\Z")

# The seed's action space (its config.py): 11 keys, 2 clicks, then one-hot mouse bins.
KEYS = ("w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r")
# a table: the seed's bins in one run, as its code and the paper list them
MOUSE_X_BINS = (-1000, -500, -300, -200, -100, -60, -30, -20, -10, -4, -2, -0.0, 2, 4, 10, 20,
                30, 60, 100, 200, 300, 500, 1000)  # fmt: skip
MOUSE_Y_BINS = (-200, -100, -50, -20, -10, -4, -2, -0.0, 2, 4, 10, 20, 50, 100, 200)


class ContractError(ValueError):
    """A descriptor, manifest or index that breaks the contract; the message names it."""


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def commit_path(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put a finished file or folder in place under its final name, atomically."""
    os.replace(tmp, final)


def check_descriptor(d: object, where: str = DESCRIPTOR, error: type = ContractError) -> None:
    """Raise `error` naming `where` and the problem, unless `d` is a readable descriptor."""
    if not isinstance(d, dict):
        raise error(f"{where}: not a JSON object")
    if d.get("format") != FORMAT:
        raise error(f"{where}: format {d.get('format')!r}, not a {FORMAT} descriptor")
    version = d.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise error(
            f"{where}: format_version {version!r}; this reader supports "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}: upgrade csdm / csdm-agent"
        )
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise error(f"{where}: lacks {', '.join(missing)}")
    if not isinstance(d["files"], dict) or d["model"] not in d["files"]:
        raise error(f"{where}: does not list the checksum of its model {d['model']!r}")
    if not isinstance(d["state"], list) or not all(
        isinstance(s, dict) and {"input", "output", "shape"} <= s.keys() for s in d["state"]
    ):
        raise error(f"{where}: state entries need input, output and shape")
    if not isinstance(d["outputs"], list) or not all(
        isinstance(o, dict) and {"name", "width", "activation"} <= o.keys() for o in d["outputs"]
    ):
        raise error(f"{where}: output entries need name, width and activation")


def _fits(graph: object, shape: object) -> bool:
    """A graph shape matches the descriptor's where both name a size (symbolic dims match any)."""
    return (
        isinstance(graph, list | tuple)
        and isinstance(shape, list)
        and len(graph) == len(shape)
        and all(
            type(g) is not int or w is None or g == w for g, w in zip(graph, shape, strict=True)
        )
    )


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
        return (
            f"the model's outputs are {[o[0] for o in outputs]}, the descriptor lists "
            f"{[o[0] for o in want_out]}"
        )
    pairs = [(n, *got_in[n], *want_in[n]) for n in want_in]
    pairs += [
        (n, gs, gk, ws, wk) for (n, gs, gk), (_, ws, wk) in zip(outputs, want_out, strict=True)
    ]
    for name, got_shape, got_kind, shape, kind in pairs:
        if got_kind != kind or not _fits(got_shape, shape):
            return (
                f"{name!r} is {got_kind} {list(got_shape)} in the model, {kind} {shape} in "
                "the descriptor"
            )
    return None


def is_version(v: object) -> bool:
    """A version number: a positive 32-bit integer, and not a bool."""
    return type(v) is int and 0 < v < 1 << 31


def registry_format_problem(d: dict) -> str | None:
    """Why a registry file's format cannot be read here; one written before versions reads."""
    found = d.get("format_version", REGISTRY_FORMAT)
    if found != REGISTRY_FORMAT:
        return (
            f"registry format version {str(found)[:20]}, this reader reads "
            f"{REGISTRY_FORMAT}; upgrade csdm / csdm-agent"
        )
    return None


def index_problem(index: object) -> str | None:
    """What is wrong with an `index.json`, or None; the text follows its name in a message.

    Versions must be distinct positive integers with manifest checksums, aliases names of them.
    """
    if not isinstance(index, dict) or not isinstance(index.get("versions"), list):
        return "has no list of versions"
    fmt = registry_format_problem(index)
    if fmt:
        return f"has {fmt}"
    if not isinstance(index.setdefault("aliases", {}), dict):
        return "has no table of aliases"
    seen: set[int] = set()
    for v in index["versions"]:
        n = v.get("version") if isinstance(v, dict) else None
        if not is_version(n) or n in seen:
            return f"lists version {str(n)[:40]!r}, not a new positive integer"
        if not isinstance(v.get("manifest_sha256"), str) or not SHA256.match(v["manifest_sha256"]):
            return f"has no manifest checksum for version {n}"
        seen.add(n)
    for alias, n in index["aliases"].items():
        if not isinstance(alias, str) or not ALIAS.match(alias):
            return f"has an alias {str(alias)[:40]!r} that is not a name"
        if n not in seen or not is_version(n):
            return f"points alias {alias!r} at {str(n)[:40]!r}, which is not a version in it"
    return None


def resolve_version(
    index: dict, version: int | None, alias: str | None, where: str, error: type = ContractError
) -> int:
    """A version number from an explicit number, an alias, or the latest (of a checked index)."""
    known = [v["version"] for v in index["versions"]]
    if not known:
        raise error(f"{where}: no versions registered yet (run `csdm register`)")
    if alias is not None:
        if alias not in index["aliases"]:
            raise error(f"{where}: no alias {alias!r}; have {sorted(index['aliases'])}")
        return index["aliases"][alias]
    if version is None:
        return max(known)
    if version not in known:
        raise error(f"{where}: no version {version}; have {known}")
    return version


def manifest_files(raw: bytes, where: str, error: type = ContractError) -> dict:
    """The `files` table of a version's MANIFEST.json, which must cover the descriptor."""
    import json

    try:
        manifest = json.loads(raw)
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise error(f"{where}: unreadable ({e})") from None
    fmt = registry_format_problem(manifest) if isinstance(manifest, dict) else None
    if fmt:
        raise error(f"{where}: {fmt}")
    if not isinstance(files, dict) or DESCRIPTOR not in files:
        raise error(f"{where}: does not cover {DESCRIPTOR}")
    return files


def is_file_name(name: str) -> bool:
    """A plain file name, no folder: what a descriptor or manifest may list."""
    return Path(name).name == name and name not in ("", ".", "..")
