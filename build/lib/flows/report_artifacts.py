"""Attach a dataset's report to the current Prefect run: key tables and figures as artifacts."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from storage.catalog import KEY_COLUMNS
from storage.fs import Root
from storage.layout import OutLayout
from tasks.report.html import write_report
from tasks.report.numbers import summary_rows


def _inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def publish_report(out: str, options: dict | None = None) -> str | None:
    """Write `OUT/report/` and publish it; a report failure is logged, never fails the run.

    For a dataset in object storage the report is built in a temporary folder and uploaded.
    """
    logger = get_run_logger()
    root = Root(out, dict(options or {}))
    layout = OutLayout(root)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(root.full(layout.report)) if root.local else Path(tmp)
            made = write_report([root], folder)
            _publish(made, out)
            if not root.local:
                for f in sorted(p for p in folder.rglob("*") if p.is_file()):
                    root.put_bytes(
                        f"{layout.report}/{f.relative_to(folder).as_posix()}", f.read_bytes()
                    )
    except Exception as e:  # the dataset is complete; only its report is missing
        logger.warning(
            "report not written (%s: %s); run `csdm report %s --out DIR` to retry",
            type(e).__name__,
            e,
            out,
        )
        return None
    return root.url_of(f"{layout.report}/index.html")


def _publish(made: dict, out: str | Path) -> None:
    r = made["reports"][0]
    create_table_artifact(
        key="dataset-summary",
        table=summary_rows([r]),
        description=f"{out}: episodes, frames and hours",
    )
    rates = r.actions[
        ["dataset", "frames", *KEY_COLUMNS, "lclick", "rclick", "kills_per_min", "deaths_per_min"]
    ].round(4)
    create_table_artifact(
        key="action-rates",
        table=rates.to_dict(orient="records"),
        description="share of frames with each key/click; kills, deaths/min",
    )
    emd = made["emd"].round(5).reset_index()
    create_table_artifact(
        key="map-coverage-emd",
        table=emd.to_dict(orient="records"),
        description="Earth mover's distance between position distributions",
    )
    figs = made["figures"]
    shown = [k for k in figs if k.startswith(("coverage_", "quality_"))]
    md = [f"# Dataset report\n\nFull report: `{out}/report/index.html`\n"]
    md += [f"![{k}]({_inline_png(figs[k])})" for k in shown]
    create_markdown_artifact(
        key="dataset-report",
        markdown="\n\n".join(md),
        description="map coverage and quality figures",
    )
