"""The policy descriptor (`policy.json`): what an exported ONNX policy is and how to run it.

Its checks live in `csdm_agent.contract`, the dependency-free module csdm and the agent share.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields

from csdm_agent.contract import (
    DESCRIPTOR,
    FORMAT,
    REQUIRED,
    SUPPORTED_VERSIONS,
    ContractError,
    graph_mismatch,
)
from csdm_agent.contract import check_descriptor as _check_descriptor

FORMAT_VERSION = 1
__all__ = [
    "DESCRIPTOR",
    "FORMAT",
    "FORMAT_VERSION",
    "REQUIRED",
    "SUPPORTED_VERSIONS",
    "DescriptorError",
    "PolicyDescriptor",
    "check_descriptor",
    "graph_mismatch",
]


class DescriptorError(ContractError):
    """A `policy.json` that is not a csdm policy descriptor this version can read."""


def check_descriptor(d: object, where: str = DESCRIPTOR) -> None:
    """Raise `DescriptorError` naming `where` and the problem, unless `d` is readable."""
    _check_descriptor(d, where, DescriptorError)


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
        """Checked inverse of `to_dict`; unknown keys from newer writers are warned about."""
        check_descriptor(d, where)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            logging.getLogger("csdm").warning(
                "%s: descriptor keys this csdm does not know, ignored: %s",
                where,
                ", ".join(unknown[:10]),
            )
        return cls(**{k: v for k, v in d.items() if k in known})
