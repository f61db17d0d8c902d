"""`csdm eval`'s output: `eval.json`, PNG figures and one self-contained `index.html`."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from storage.action_space import MOUSE_X_BINS, MOUSE_Y_BINS
from storage.evaluation import EVAL_FILE, EvalReport
from storage.localfile import atomic_path
from storage.metrics import SEED_ACCURACIES
from tasks.report import figures
from tasks.report.html import CSS, _img, _slug, _table

SUMMARY = (*SEED_ACCURACIES, "seed_mean", "value_mse")


def summary_table(report: EvalReport) -> pd.DataFrame:
    """One row per metric, one column per model (the first is the one asked about)."""
    return pd.DataFrame(
        {"metric": list(SUMMARY)} | {m.name: [m.metrics[k] for k in SUMMARY] for m in report.models}
    )


def per_key_table(report: EvalReport) -> pd.DataFrame:
    """F1 of each key and click per model, with its support (frames pressed)."""
    first = report.models[0].per_key
    rows = {"key": list(first), "support": [first[k]["support"] for k in first]}
    for m in report.models:
        rows[f"{m.name} f1"] = [m.per_key[k]["f1"] for k in first]
    return pd.DataFrame(rows)


def write_eval(report: EvalReport, out: str | Path) -> dict[str, Path]:
    """Write OUT/eval.json, OUT/index.html and its figures; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made = {"json": out / EVAL_FILE, "index": out / "index.html"}
    with atomic_path(made["json"]) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=1))
    names = [m.name for m in report.models]
    metrics = [m.metrics for m in report.models]
    made["metrics"] = figures.metrics_figure(
        names, metrics, list(SEED_ACCURACIES), out / "metrics.png"
    )
    bins = {"mouse_x": MOUSE_X_BINS, "mouse_y": MOUSE_Y_BINS}
    split = report.split or "every split"
    body = [
        f"<h1>csdm eval: {html.escape(names[0])}</h1>",
        f"<p>{html.escape(report.data)}, {html.escape(split)}: {report.episodes} episodes, "
        f"{report.frames} frames, each played from a zero state. Written {report.created}.</p>",
        "<h2>The seed's metrics</h2>",
        "<p>Accuracy at 0.5 for keys and clicks, of the most likely bin for the mouse, against "
        "labels cleaned as the seed trains on them; value_mse is 100x the TD error's MSE; "
        "seed_mean is the mean of the seven accuracies.</p>",
        _table(summary_table(report)),
        _img(made["metrics"].name, "accuracies per model"),
        "<h2>Per key F1</h2>",
        _table(per_key_table(report), digits=3),
        "<h2>Mouse-bin confusion</h2>",
    ]
    for m in report.models:
        key = f"confusion_{_slug(m.name)}"
        made[key] = figures.confusion_figure(m.name, m.confusion, bins, out / f"{key}.png")
        body.append(_img(made[key].name, f"confusion {m.name}"))
    body.append("<h2>Per episode</h2>")
    for m in report.models:
        body += [f"<h3>{html.escape(m.name)}</h3>", _table(pd.DataFrame(m.episodes), digits=3)]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>csdm eval</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    made["index"].write_text(page)
    return made
