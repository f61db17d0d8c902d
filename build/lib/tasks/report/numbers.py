"""Dataset report numbers: summary, quality, action statistics, map coverage and its EMD.

Everything is computed from a processed dataset's catalog with DuckDB; `tasks/report/figures.py`
draws it and `tasks/report/html.py` lays it out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from storage.action_space import FPS
from storage.catalog import COUNTERS, KEY_COLUMNS
from storage.dataset import connect_catalog, open_dataset

REPORT_FORMAT = 1  # format_version of report.json
COVERAGE_BINS = 60  # the seed's map-coverage histogram


@dataclass
class DatasetReport:
    """The numbers of one processed dataset (one OUT folder)."""

    label: str
    root: str
    summary: dict[str, float]
    reasons: pd.DataFrame  # counter, episodes rejected on it
    quality: pd.DataFrame  # per stored episode: counters, n_frames, keep
    thresholds: dict[str, float]  # counter -> limit per `per_frames` frames (or absolute)
    per_frames: int | None
    actions: pd.DataFrame  # per catalog dataset: frames, key/click rates, kills/deaths per min
    mouse_x: pd.DataFrame  # dataset, bin, share of frames
    mouse_y: pd.DataFrame
    weapons: pd.DataFrame  # dataset, weapon, share of frames
    positions: dict[str, np.ndarray] = field(default_factory=dict)  # dataset -> (n, 2) x, y


def dataset_report(root: str | Path, label: str | None = None) -> DatasetReport:
    """Compute every table of the report for one processed dataset."""
    ds = open_dataset(root)  # checks the format, names the folder when it is not one
    con = connect_catalog(ds)
    files = con.sql("SELECT * FROM files").df()
    stored = files[files.status == "stored"]
    params = ds.manifest.parameters
    per_frames = params.get("per_frames") or None
    frames = int(stored.n_frames.sum())
    kept_frames = int(stored[stored.keep].n_frames.sum())
    summary = {
        "episodes": len(stored),
        "kept": int(stored.keep.sum()),
        "rejected": int((~stored.keep).sum()),
        "failed": int((files.status == "failed").sum()),
        "source_defects": int((files.status == "defect").sum()),
        "duplicates": int((files.status == "duplicate").sum()),
        "frames": frames,
        "hours": frames / FPS / 3600,
        "kept_frames": kept_frames,
        "kept_hours": kept_frames / FPS / 3600,
    }
    rejected = stored.loc[~stored.keep, "reject_reason"].dropna()
    counts = {c: int(rejected.str.contains(rf"(?:^|; ){c}=", regex=True).sum()) for c in COUNTERS}
    matched = rejected.str.contains("|".join(rf"(?:^|; ){c}=" for c in COUNTERS), regex=True)
    counts["other (e.g. no usable metadata)"] = int((~matched).sum())
    counts["unreadable or failed"] = summary["failed"]
    counts["source defects (the published bytes)"] = summary["source_defects"]
    counts["duplicate recordings (stored once)"] = summary["duplicates"]
    reasons = pd.DataFrame({"reason": list(counts), "episodes": list(counts.values())})
    quality = stored[["episode", "dataset", "n_frames", "keep", *COUNTERS]].reset_index(drop=True)
    thresholds = {c: params[c] for c in COUNTERS if params.get(c) is not None}

    key_rates = ", ".join(f"avg({k}::int) AS {k}" for k in KEY_COLUMNS)
    minutes = f"count(*) / {FPS * 60.0}"
    actions = con.sql(
        f"SELECT dataset, count(*) AS frames, {key_rates}, avg(lclick::int) AS lclick, "
        f"avg(rclick::int) AS rclick, sum(kill::int) / ({minutes}) AS kills_per_min, "
        f"sum(death::int) / ({minutes}) AS deaths_per_min FROM frames "
        "GROUP BY dataset ORDER BY dataset"
    ).df()

    def hist(col: str) -> pd.DataFrame:
        return con.sql(
            f"SELECT dataset, {col} AS bin, count(*) / sum(count(*)) OVER (PARTITION BY dataset) "
            f"AS share FROM frames GROUP BY dataset, {col} ORDER BY dataset, {col}"
        ).df()

    weapons = con.sql(
        "SELECT dataset, coalesce(weapon, '(none)') AS weapon, count(*) / sum(count(*)) OVER "
        "(PARTITION BY dataset) AS share FROM frames GROUP BY dataset, coalesce(weapon, '(none)') "
        "ORDER BY dataset, share DESC"
    ).df()
    pos = con.sql(
        "SELECT dataset, pos_x, pos_y FROM frames WHERE pos_x IS NOT NULL AND pos_y IS NOT NULL"
    ).df()
    positions = {d: g[["pos_x", "pos_y"]].to_numpy() for d, g in pos.groupby("dataset")}
    return DatasetReport(
        label or Path(root).name,
        str(root),
        summary,
        reasons,
        quality,
        thresholds,
        per_frames,
        actions,
        hist("mouse_x"),
        hist("mouse_y"),
        weapons,
        positions,
    )


def coverage_histogram(xy: np.ndarray, edges: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Share of positions per cell of a 2D grid; positions outside it are dropped (as hist2d)."""
    h, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=edges)
    return h / max(h.sum(), 1)


def coverage_edges(xy: np.ndarray, bins: int = COVERAGE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """The seed's grid: `bins` x `bins` cells over the base distribution's extent."""
    _, ex, ey = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins)
    return ex, ey


def emd_1d(u: np.ndarray, v: np.ndarray) -> float:
    """1-D Wasserstein distance of two equal-size samples: mean gap of the sorted values."""
    if len(u) != len(v):
        raise ValueError("samples of different sizes")
    return float(np.abs(np.sort(u) - np.sort(v)).mean())


def coverage_emd(base: np.ndarray, other: np.ndarray, bins: int = COVERAGE_BINS) -> float:
    """The paper's map-coverage distance, computed as the seed does.

    On the base's 60x60 grid: the Earth mover's distance between the two normalised
    histograms' cell values, flattened (`wasserstein_distance(h_base.flatten(), h.flatten())`).
    """
    edges = coverage_edges(base, bins)
    return emd_1d(coverage_histogram(base, edges).ravel(), coverage_histogram(other, edges).ravel())


def emd_table(reports: list[DatasetReport]) -> pd.DataFrame:
    """EMD between every pair of position distributions (base rows, compared columns)."""
    named = {f"{r.label}/{d}": xy for r in reports for d, xy in r.positions.items() if len(xy)}
    names = list(named)
    table = pd.DataFrame(index=pd.Index(names, name="base"), columns=names, dtype=float)
    for a in names:
        for b in names:
            table.loc[a, b] = coverage_emd(named[a], named[b])
    return table


def summary_rows(reports: list[DatasetReport]) -> list[dict]:
    """One row per dataset for the summary table (and the Prefect artifact)."""
    return [
        {
            "dataset": r.label,
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.summary.items()},
        }
        for r in reports
    ]


def write_json(reports: list[DatasetReport], emd: pd.DataFrame, path: Path) -> None:
    """The report's numbers as JSON beside the HTML, for scripts and tests."""
    out = {
        "format_version": REPORT_FORMAT,
        "datasets": [
            {
                "label": r.label,
                "root": r.root,
                "summary": r.summary,
                "reasons": dict(zip(r.reasons.reason, r.reasons.episodes.astype(int), strict=True)),
                "thresholds": r.thresholds,
                "per_frames": r.per_frames,
                "actions": r.actions.to_dict(orient="records"),
                "weapons": r.weapons.to_dict(orient="records"),
            }
            for r in reports
        ],
        "emd": {a: emd.loc[a].to_dict() for a in emd.index},
    }
    path.write_text(json.dumps(out, indent=1, default=float))
