"""The policy descriptor (`policy.json`): what an exported ONNX policy is and how to run it.

The agent package carries its own copy of these checks (it installs without csdm);
`tests/agent/test_descriptor_contract.py` pins the two together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

DESCRIPTOR = "policy.json"
FORMAT = "csdm-policy"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
# keys a reader needs to run the model; the rest (training, created) is provenance
REQUIRED = ("format", "format_version", "model", "opset", "action_space", "fps", "input",
            "state", "outputs", "files")  # fmt: skip


class DescriptorError(ValueError):
    """A `policy.json` that is not a csdm policy descriptor this version can read."""


def check_descriptor(d: object, where: str = DESCRIPTOR) -> None:
    """Raise `DescriptorError` naming `where` and the problem, unless `d` is readable."""
    if not isinstance(d, dict):
        raise DescriptorError(f"{where}: not a JSON object")
    if d.get("format") != FORMAT:
        raise DescriptorError(f"{where}: format {d.get('format')!r}, not a {FORMAT} descriptor")
    version = d.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise DescriptorError(
            f"{where}: format_version {version!r}; this reader supports "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}: upgrade csdm / csdm-agent"
        )
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise DescriptorError(f"{where}: lacks {', '.join(missing)}")
    if not isinstance(d["files"], dict) or d["model"] not in d["files"]:
        raise DescriptorError(f"{where}: does not list the checksum of its model {d['model']!r}")
    if not isinstance(d["state"], list) or not all(
        isinstance(s, dict) and {"input", "output", "shape"} <= s.keys() for s in d["state"]
    ):
        raise DescriptorError(f"{where}: state entries need input, output and shape")
    if not isinstance(d["outputs"], list) or not all(
        isinstance(o, dict) and {"name", "width", "activation"} <= o.keys() for o in d["outputs"]
    ):
        raise DescriptorError(f"{where}: output entries need name, width and activation")


@dataclass
class PolicyDescriptor:
    """`policy.json`, typed; `files` maps each file to its {"sha256", "size"}."""

    model: str
    opset: int
    action_space: dict
    fps: int
    input: dict
    state: list[dict]
    outputs: list[dict]
    files: dict[str, dict]
    training: dict = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = DESCRIPTOR) -> PolicyDescriptor:
        """Checked inverse of `to_dict`; unknown keys from newer writers are ignored."""
        check_descriptor(d, where)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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
