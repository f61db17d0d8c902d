"""The `train` flow: train (resuming), then optionally export and register; metrics as artifacts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from storage.fs import root_of
from storage.registry import check_alias, open_registry
from storage.run import EVAL, EXPORT, read_metrics, run_root
from training.checkpoint import has_checkpoint, load_checkpoint
from training.export import export
from training.resolve import resolve_config, write_config_file
from training.train import TrainConfig, TrainResult, last_result, train


@task(name="train-policy")
def train_task(data: str, run: str, cfg: TrainConfig, gpus: int) -> TrainResult:
    """Train in this process, or under torchrun with one process per GPU."""
    progress = create_progress_artifact(progress=0.0, key="train-progress")

    def on_log(row: dict) -> None:
        update_progress_artifact(progress, progress=100.0 * row["step"] / cfg.steps)

    if gpus <= 1:
        return train(data, run, cfg, resume=True, on_log=on_log, quiet=False)
    # every rank reads the same resolved config: nothing is rebuilt from command-line flags
    with tempfile.TemporaryDirectory(prefix="csdm-torchrun-") as tmp:  # the run may be a URL
        config = write_config_file(cfg, Path(tmp) / "config.json")
        csdm = shutil.which("csdm") or str(Path(sys.executable).with_name("csdm"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc-per-node={gpus}",
                "--no-python",
                "--",
                csdm,
                "train",
                data,
                "--run",
                run,
                "--config",
                str(config),
                "--steps",
                str(cfg.steps),
                "--resume",
            ],
            check=True,
        )
    update_progress_artifact(progress, progress=100.0)
    return last_result(run)


@dataclass(frozen=True)
class GateVerdict:
    """The promotion gate's decision: whether the new export is registered, and why."""

    passed: bool
    reason: str
    metric: str | None = None
    eval: dict | None = None  # data, split, frames, metrics and the baseline's
    report: str | None = None  # the comparison's index.html


@dataclass(frozen=True)
class TrainSummary:
    """What the train flow did: the training, the gate's verdict, the registered version."""

    train: TrainResult
    gate: GateVerdict | None = None
    registered: dict | None = None  # name, version, location, sha256


@task(name="promotion-gate")
def gate_task(
    export_dir: str,
    data: str,
    registry: str,
    name: str,
    metric: str,
    split: str,
    baseline: str,
    out: str,
) -> GateVerdict:
    """Evaluate the new export against `baseline` on `split`; publish the comparison."""
    from flows.evaluate import publish_eval
    from tasks.report.eval_html import write_eval
    from training.evaluate import EvalError, gate

    try:
        passed, report = gate(Path(export_dir), data, registry, name, metric, split, baseline)
    except EvalError as e:  # e.g. no test split to compare with production on
        create_markdown_artifact(key="gate-report", markdown=f"# Not registered\n\n{e}")
        return GateVerdict(False, str(e))
    if report is None:
        reason = (
            f"no {split!r} episodes to evaluate on and no {baseline} version yet: the "
            "first one is registered unevaluated"
        )
        create_markdown_artifact(key="gate-report", markdown=f"# Registered\n\n{reason}")
        return GateVerdict(True, reason)
    new = report.models[0].metrics
    old = report.models[1].metrics if len(report.models) > 1 else None
    if old is None:
        reason = f"no {baseline} version yet: the first one is registered"
    else:
        verb = "beats" if passed else "does not beat"
        reason = f"{metric} {new[metric]:.4f} {verb} {baseline}'s {old[metric]:.4f}"
    outcome = "Registered" if passed else "Not registered"
    target = root_of(out)
    with tempfile.TemporaryDirectory(prefix="csdm-gate-") as tmp:  # a bucket run: then upload
        made = write_eval(report, out if target.local else tmp)
        publish_eval(report, made, key="gate", verdict=f"**{outcome}**: {reason}")
        if not target.local:
            target.put_tree("", Path(tmp))
    evaluation = {
        "data": report.data,
        "split": report.split,
        "frames": report.frames,
        "metrics": new,
        "baseline": old,
    }
    return GateVerdict(passed, reason, metric, evaluation, target.url_of(made["index"].name))


@flow(name="train", log_prints=True)
def train_flow(
    data: str,
    run: str,
    preset: str = "tiny",
    steps: int = 20,
    batch_size: int | None = None,
    workers: int | None = None,
    gpus: int = 1,
    registry: str | None = None,
    name: str = "csdm-policy",
    alias: str | None = None,
    gate: bool = True,
    gate_metric: str = "seed_mean",
    gate_split: str = "test",
    baseline: str = "production",
) -> TrainSummary:
    """Train RUN to `steps` (resuming) and publish metrics; with a registry, export and gate it.

    It is registered if it beats the `baseline` alias on `gate_metric` over `gate_split`.
    """
    logger = get_run_logger()
    for a in (alias, baseline):  # before hours of training, not after
        check_alias(a)
    ckpt = load_checkpoint(run) if has_checkpoint(run) else None
    # the CLI's resolution: a run resumed by the flow keeps its network and loss
    cfg = resolve_config(preset, resumed=ckpt, steps=steps, batch_size=batch_size, workers=workers)
    before = ckpt.step if ckpt is not None else 0
    result = train_task(data, run, cfg, gpus)
    rows = read_metrics(run)
    create_table_artifact(
        key="train-metrics",
        table=rows[-50:],
        description=f"{run}: the last {min(50, len(rows))} logged steps",
    )
    verdict = registered = None
    if registry and result.step == before:
        logger.info("%s: already at step %d, nothing new to register", run, before)
    elif registry:
        exported = run_root(run).url_of(EXPORT)  # a folder or a URL, as the run is
        d = export(run, exported)
        if gate:
            verdict = gate_task(
                exported,
                data,
                registry,
                name,
                gate_metric,
                gate_split,
                baseline,
                run_root(run).url_of(EVAL),
            )
            logger.info("promotion gate: %s", verdict.reason)
        if verdict is None or verdict.passed:
            evaluated = verdict is not None and verdict.eval
            evaluation = {**verdict.eval, "metric": gate_metric} if evaluated else None
            # a model that passed the gate becomes the baseline the next one must beat
            promote = alias or (baseline if gate else None)
            v = open_registry(registry, name).register(
                exported, alias=promote, evaluation=evaluation
            )
            registered = {
                "name": name,
                "version": v.version,
                "location": v.location,
                "sha256": d["files"][d["model"]]["sha256"],
            }
            logger.info("registered %s v%d at %s", name, v.version, v.location)
    summary = TrainSummary(result, verdict, registered)
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in result.metrics.items())
    create_markdown_artifact(
        key="train-summary",
        markdown=f"# {run}\n\nstep {result.step}, {result.frames_per_s:.0f} frames/s\n\n"
        f"| metric | value |\n|---|---|\n{metrics}\n\n"
        + (f"Registered **{name} v{registered['version']}**" if registered else "")
        + (f"\n\nPromotion gate: {verdict.reason}" if verdict else ""),
    )
    return summary
