"""The `eval` flow, and the artifacts an evaluation publishes (the train flow's gate uses them)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.report_artifacts import _inline_png
from storage.evaluation import EvalReport
from tasks.report.eval_html import per_key_table, summary_table, write_eval
from training.evaluate import Predictor, evaluate, resolve_model


def _records(df) -> list[dict]:
    return df.round(4).astype(object).where(df.notna(), None).to_dict(orient="records")


def publish_eval(
    report: EvalReport, made: dict[str, Path], key: str = "eval", verdict: str = ""
) -> None:
    """The comparison table, per-key F1 and the figures as artifacts of the current run."""
    create_table_artifact(
        key=f"{key}-metrics",
        table=_records(summary_table(report)),
        description=f"{report.data} ({report.split}): the seed's metrics, one column per model",
    )
    create_table_artifact(
        key=f"{key}-per-key-f1",
        table=_records(per_key_table(report)),
        description="F1 of each key and click",
    )
    figs = [made[k] for k in made if k == "metrics" or k.startswith("confusion_")]
    md = [
        f"# Evaluation: {report.models[0].name}\n",
        verdict,
        f"{report.episodes} episodes, {report.frames} frames of `{report.data}` "
        f"({report.split}). Full report: `{made['index']}`",
    ]
    md += [f"![{p.stem}]({_inline_png(p)})" for p in figs]
    create_markdown_artifact(key=f"{key}-report", markdown="\n\n".join(x for x in md if x))


@task(name="evaluate-models")
def eval_task(
    models: list[str], data: str, split: str | None, registry: str | None, out: str
) -> dict:
    """Evaluate, write OUT, publish; returns the first model's metrics."""
    progress = create_progress_artifact(progress=0.0, key="eval-progress")

    def on_episode(i: int, n: int, _name: str) -> None:
        update_progress_artifact(progress, progress=100.0 * i / n)

    with tempfile.TemporaryDirectory(prefix="csdm-eval-") as tmp:  # remote registry copies
        predictors: list[Predictor] = [resolve_model(m, registry, Path(tmp)) for m in models]
        report = evaluate(predictors, data, split, on_episode=on_episode)
    made = write_eval(report, out)
    publish_eval(report, made)
    return {"metrics": report.models[0].metrics, "eval": str(made["json"])}


@flow(name="eval", log_prints=True)
def eval_flow(
    model: str,
    data: str,
    out: str,
    split: str = "test",
    compare: list[str] | None = None,
    registry: str | None = None,
) -> dict:
    """Score MODEL (and any `compare` models) on DATA's split; eval.json + HTML in OUT."""
    return eval_task(
        [model, *(compare or [])], data, None if split == "all" else split, registry, out
    )
