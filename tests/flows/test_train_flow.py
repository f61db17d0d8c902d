"""`csdm train/export/register` end to end, and the Prefect `train` flow with its artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from storage.registry import open_registry

CSDM = str(Path(sys.executable).with_name("csdm"))


def _csdm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CSDM, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_train_export_register(processed: Path, tmp_path: Path) -> None:
    run, exp, reg = tmp_path / "run", tmp_path / "exp", tmp_path / "reg"
    common = ["--run", str(run), "--window", "8", "--split", "all", "--all-episodes"]
    r = _csdm("train", str(processed), *common, "--steps", "2", "--log-every", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained 2 steps" in r.stdout
    again = _csdm("train", str(processed), *common, "--steps", "3")
    assert again.returncode == 2 and "--resume" in again.stderr
    r = _csdm("train", str(processed), *common, "--steps", "3", "--resume")
    assert r.returncode == 0 and "trained 3 steps" in r.stdout, r.stderr[-3000:]
    r = _csdm("export", str(run), "--out", str(exp))
    assert r.returncode == 0 and "exported step 3" in r.stdout, r.stderr[-3000:]
    r = _csdm("register", str(exp), "--registry", str(reg), "--name", "cs", "--alias", "production")
    assert r.returncode == 0 and "registered cs v1" in r.stdout, r.stderr[-3000:]
    v = open_registry(reg, "cs").resolve(alias="production")
    assert json.loads((Path(v.location) / "policy.json").read_text())["training"]["step"] == 3
    (exp / "policy.onnx").write_bytes(b"not a model")
    r = _csdm("register", str(exp), "--registry", str(reg), "--name", "cs")
    assert r.returncode == 2 and "sha256 does not match" in r.stderr


@pytest.mark.slow
def test_train_flow_publishes_metrics_and_registers(
    prefect_api: str, processed: Path, tmp_path: Path
) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.train import train_flow

    out = train_flow(
        str(processed),
        str(tmp_path / "run"),
        steps=3,
        registry=str(tmp_path / "reg"),
        name="cs",
    )
    assert out.train.step == 3 and out.registered["version"] == 1
    assert out.gate.passed and "no production version yet" in out.gate.reason
    reg = open_registry(tmp_path / "reg", "cs")
    assert reg.resolve(alias="production").version == 1  # the gate promoted it: the baseline
    stored = reg.index()["versions"][0]["eval"]  # the gate's evaluation, kept with the version
    assert stored["split"] == "test" and stored["metric"] == "seed_mean"
    assert stored["metrics"] == out.gate.eval["metrics"]
    assert 0 <= stored["metrics"]["seed_mean"] <= 1
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]

    async def latest(key: str):
        async with get_client() as c:
            arts = await c.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            return sorted(arts, key=lambda a: a.created)[-1]

    table = asyncio.run(latest("train-metrics")).data
    table = json.loads(table) if isinstance(table, str) else table
    assert [r["step"] for r in table] == [r["step"] for r in rows]
    assert table[-1]["loss"] == pytest.approx(rows[-1]["loss"])
    summary = asyncio.run(latest("train-summary")).data
    assert "Registered **cs v1**" in summary and f"{rows[-1]['loss']:.4f}" in summary
    assert asyncio.run(latest("train-progress")).data == 100.0
    again = train_flow(
        str(processed), str(tmp_path / "run"), steps=3, registry=str(tmp_path / "reg"), name="cs"
    )
    assert again.registered is None  # no new step: no new version
    assert [v["version"] for v in reg.index()["versions"]] == [1]
    # the same training again in a new run: the same model, which does not beat production
    twin = train_flow(
        str(processed), str(tmp_path / "twin"), steps=3, registry=str(tmp_path / "reg"), name="cs"
    )
    assert not twin.gate.passed and "does not beat production" in twin.gate.reason
    assert twin.registered is None and [v["version"] for v in reg.index()["versions"]] == [1]
    gate_table = asyncio.run(latest("gate-metrics")).data
    gate_table = json.loads(gate_table) if isinstance(gate_table, str) else gate_table
    row = next(r for r in gate_table if r["metric"] == "seed_mean")
    assert row["new"] == row["cs@production"]  # both columns, equal: a tie is no promotion
    assert "Not registered" in asyncio.run(latest("gate-report")).data
