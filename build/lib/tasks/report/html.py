"""`csdm report`: figures as PNG files beside one self-contained `index.html`."""

from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

from storage.catalog import KEY_COLUMNS
from storage.fs import is_url
from tasks.report import figures
from tasks.report.numbers import DatasetReport, dataset_report, emd_table, summary_rows, write_json

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right;font-size:13px}th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;width:380px}
figcaption{font-size:13px;color:#555}h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", border=0, escape=True)


def _img(name: str, alt: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">'


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def write_report(roots: list[str | Path], out: str | Path) -> dict:
    """Write `OUT/index.html`, its PNG figures and `report.json`; returns their paths.

    The first root is the dataset; the others are compared with it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [
        str(r).rstrip("/").rsplit("/", 1)[-1] if is_url(str(r)) else Path(str(r)).resolve().name
        for r in roots
    ]
    labels = [f"{lab} ({i})" if labels.count(lab) > 1 else lab for i, lab in enumerate(labels)]
    reports = [dataset_report(r, lab) for r, lab in zip(roots, labels, strict=True)]
    emd = emd_table(reports)
    made: dict[str, Path] = {}
    body = [
        f"<h1>csdm report: {html.escape(reports[0].label)}</h1>",
        f"<p>Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
        f"{html.escape(', '.join(str(r) for r in roots))}.</p>",
        "<h2>Summary</h2>",
        _table(pd.DataFrame(summary_rows(reports))),
    ]
    for r in reports:
        s = _slug(r.label)
        made[f"quality_{s}"] = figures.quality_figure(r, out / f"quality_{s}.png")
        made[f"actions_{s}"] = figures.actions_figure(r, out / f"actions_{s}.png")
        made[f"mouse_{s}"] = figures.mouse_figure(r, out / f"mouse_{s}.png")
        made[f"weapons_{s}"] = figures.weapons_figure(r, out / f"weapons_{s}.png")
        body += [
            f"<h2>{html.escape(r.label)}: quality</h2>",
            "<p>Episodes rejected on each counter (an episode can fail several):</p>",
            _table(r.reasons),
            _img(made[f"quality_{s}"].name, "quality counters"),
            f"<h2>{html.escape(r.label)}: actions</h2>",
            _table(_actions(r)),
            _img(made[f"actions_{s}"].name, "key and click rates"),
            _img(made[f"mouse_{s}"].name, "mouse bins"),
            "<p>Weapons held (share of frames):</p>",
            _img(made[f"weapons_{s}"].name, "weapons"),
        ]
    body.append("<h2>Map coverage</h2><div class='grid'>")
    for r in reports:
        for d, xy in r.positions.items():
            key = f"coverage_{_slug(r.label)}_{_slug(d)}"
            made[key] = figures.coverage_figure(f"{r.label}/{d}", xy, out / f"{key}.png")
            caption = f"{html.escape(r.label)}/{html.escape(d)}"
            img = _img(made[key].name, f"coverage {r.label}/{d}")
            body.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
    body += [
        "</div>",
        "<p>Earth mover's distance between position distributions, as the "
        "paper's map-coverage analysis: rows are the base (its 60x60 grid), columns the "
        "compared distribution; 0 on the diagonal.</p>",
        _table(emd.reset_index(), digits=3),
    ]
    write_json(reports, emd, out / "report.json")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>csdm report</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    (out / "index.html").write_text(page)
    return {
        "index": out / "index.html",
        "json": out / "report.json",
        "figures": made,
        "reports": reports,
        "emd": emd,
    }


def _actions(r: DatasetReport) -> pd.DataFrame:
    cols = [
        "dataset",
        "frames",
        *KEY_COLUMNS,
        "lclick",
        "rclick",
        "kills_per_min",
        "deaths_per_min",
    ]
    return r.actions[cols].rename(columns={c: c.removeprefix("key_") for c in KEY_COLUMNS})
