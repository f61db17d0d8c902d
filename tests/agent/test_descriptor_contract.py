"""csdm and its agent decide alike: one dependency-free module holds the rules both apply."""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path

import numpy as np
import pytest
from csdm_agent import artifact, contract, pull, record

from storage import action_space, checksums, policy, registry

VALID = {
    "format": "csdm-policy",
    "format_version": 1,
    "model": "policy.onnx",
    "opset": 17,
    "action_space": {"keys": ["w"]},
    "fps": 16,
    "input": {"name": "frame", "shape": [1, 150, 280, 3]},
    "state": [{"input": "h", "output": "h_out", "shape": [1, 8, 8, 16]}],
    "outputs": [{"name": "keys", "width": 11, "activation": "sigmoid"}],
    "files": {"policy.onnx": {"sha256": "0" * 64, "size": 1}},
    "training": {"step": 3},
}


def _without(key: str) -> dict:
    d = copy.deepcopy(VALID)
    del d[key]
    return d


def _with(**kw) -> dict:
    return {**copy.deepcopy(VALID), **kw}


CASES = {
    "valid": VALID,
    "extra keys from a newer writer": _with(extra={"x": 1}),
    "not an object": ["csdm-policy"],
    "other format": _with(format="onnx"),
    "format_version 2": _with(format_version=2),
    "format_version as text": _with(format_version="1"),
    "model not listed": _with(model="other.onnx"),
    "files not a mapping": _with(files=["policy.onnx"]),
    "state entry without shape": _with(state=[{"input": "h", "output": "h_out"}]),
    "state not a list": _with(state={"h": 1}),
    "output entry without width": _with(outputs=[{"name": "keys", "activation": "sigmoid"}]),
    **{f"no {k}": _without(k) for k in policy.REQUIRED},
}


def test_both_sides_use_the_one_contract() -> None:
    assert artifact.DESCRIPTOR == policy.DESCRIPTOR == registry.DESCRIPTOR == contract.DESCRIPTOR
    assert artifact.MANIFEST == registry.MANIFEST == contract.MANIFEST
    assert policy.FORMAT_VERSION in contract.SUPPORTED_VERSIONS
    assert policy.graph_mismatch is artifact.graph_mismatch is contract.graph_mismatch
    assert checksums.sha256_file is artifact.sha256_file is contract.sha256_file
    assert action_space.KEYS == record.KEYS == contract.KEYS
    assert action_space.MOUSE_X_BINS.tolist() == record.MOUSE_X_BINS.tolist()
    assert action_space.MOUSE_Y_BINS.tolist() == record.MOUSE_Y_BINS.tolist()
    # the reader's own copy (it installs without the agent) equals the contract, -0.0 included
    for mine, theirs in (
        (action_space.MOUSE_X_BINS, contract.MOUSE_X_BINS),
        (action_space.MOUSE_Y_BINS, contract.MOUSE_Y_BINS),
    ):
        assert mine.tolist() == list(theirs)
        assert np.signbit(mine).tolist() == np.signbit(np.array(theirs, float)).tolist()
    assert issubclass(policy.DescriptorError, contract.ContractError)
    assert issubclass(artifact.VerificationError, contract.ContractError)


def test_the_contract_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(contract.__file__).read_text())
    names = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    names |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert names - {"__future__"} <= set(sys.stdlib_module_names), names


INDEXES = {
    "good": {"versions": [{"version": 1, "manifest_sha256": "a" * 64}], "aliases": {"p": 1}},
    "alias to a missing version": {
        "versions": [{"version": 1, "manifest_sha256": "a" * 64}],
        "aliases": {"p": 7},
    },
    "a path as a version": {"versions": [{"version": "../x", "manifest_sha256": "a" * 64}]},
    "a later format": {"format_version": 2, "versions": []},
    "no versions": {"aliases": {}},
}


@pytest.mark.parametrize("case", sorted(INDEXES))
def test_agent_and_registry_judge_an_index_alike(case: str) -> None:
    def verdict(check, error) -> str | None:
        try:
            check(copy.deepcopy(INDEXES[case]), "REG")
        except error as e:
            return str(e)
        return None

    mine = verdict(registry.check_index, registry.RegistryError)
    agents = verdict(pull._checked, artifact.VerificationError)
    assert (mine is None) == (agents is None) == (case == "good")
    problem = contract.index_problem(copy.deepcopy(INDEXES[case]))
    assert problem is None or (problem in mine and problem in agents)


@pytest.mark.parametrize("case", sorted(CASES))
def test_agent_and_storage_decide_alike(case: str) -> None:
    def verdict(check, error) -> str | None:
        try:
            check(copy.deepcopy(CASES[case]), "policy.json")
        except error as e:
            return str(e)
        return None

    mine = verdict(policy.check_descriptor, policy.DescriptorError)
    agents = verdict(artifact.check_descriptor, artifact.VerificationError)
    assert mine == agents  # the same verdict, and the same words
    assert (mine is None) == (case in ("valid", "extra keys from a newer writer"))


def test_the_typed_descriptor_round_trips() -> None:
    d = policy.PolicyDescriptor.from_dict(copy.deepcopy(CASES["extra keys from a newer writer"]))
    assert d.to_dict() == {**VALID, "created": ""}
    with pytest.raises(policy.DescriptorError, match="format_version 2"):
        policy.PolicyDescriptor.from_dict(CASES["format_version 2"])


GRAPH_IN = [("frame", [1, 150, 280, 3], "tensor(uint8)"), ("h", [1, 8, 8, 16], "tensor(float)")]
GRAPH_OUT = [("keys", [1, 11], "tensor(float)"), ("h_out", [1, 8, 8, 16], "tensor(float)")]
GRAPHS = {
    "alike": (GRAPH_IN, GRAPH_OUT),
    "symbolic batch": ([("frame", ["b", 150, 280, 3], "tensor(uint8)"), GRAPH_IN[1]], GRAPH_OUT),
    "other state shape": ([GRAPH_IN[0], ("h", [1, 8, 8, 17], "tensor(float)")], GRAPH_OUT),
    "float frames": ([("frame", [1, 150, 280, 3], "tensor(float)"), GRAPH_IN[1]], GRAPH_OUT),
    "an extra input": ([*GRAPH_IN, ("c", [1], "tensor(float)")], GRAPH_OUT),
    "outputs swapped": (GRAPH_IN, GRAPH_OUT[::-1]),
    "other width": (GRAPH_IN, [("keys", [1, 12], "tensor(float)"), GRAPH_OUT[1]]),
    "other rank": (GRAPH_IN, [("keys", [11], "tensor(float)"), GRAPH_OUT[1]]),
}


@pytest.mark.parametrize("case", sorted(GRAPHS))
def test_agent_and_storage_check_the_graph_alike(case: str) -> None:
    mine = policy.graph_mismatch(copy.deepcopy(VALID), *GRAPHS[case])
    assert mine == artifact.graph_mismatch(copy.deepcopy(VALID), *GRAPHS[case])
    assert (mine is None) == (case in ("alike", "symbolic batch"))
    assert policy.graph_mismatch({**VALID, "input": "frame"}, *GRAPHS[case]) == (
        "the descriptor's input, state or outputs are malformed"
    )
