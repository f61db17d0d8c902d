"""A training run's files, on a folder or a bucket: its config, its metrics log, its keys.

A run is a `Root`: `RUN/ckpt.pt` (training.checkpoint), `RUN/config.json`,
`RUN/metrics.jsonl` with `RUN/metrics.csv` beside it, `RUN/export/` and `RUN/eval/`.
"""

from __future__ import annotations

import csv
import io
import json
import os

from storage.fs import Root, root_of
from storage.records import FormatError

CKPT = "ckpt.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
EXPORT = "export"
EVAL = "eval"
CONFIG_FORMAT = 1  # format_version of a run's config.json and of `csdm train --config` files
METRICS_FORMAT = 1  # format_version of each metrics.jsonl row


def run_root(run: str | os.PathLike | Root) -> Root:
    """A run folder or URL as a Root."""
    return root_of(run)


def write_config(run: Root, config: dict) -> None:
    """`RUN/config.json`, versioned."""
    body = {"format_version": CONFIG_FORMAT, **config}
    run.put_bytes(CONFIG, json.dumps(body, indent=2).encode())


def _row_version(row: dict, where: str) -> dict:
    version = row.get("format_version", 1)  # rows from before the version was written
    if version != METRICS_FORMAT:
        raise FormatError(
            f"{where}: a metrics row of format_version {version}; this csdm reads "
            f"{METRICS_FORMAT}; read it with the csdm version that wrote it"
        )
    return row


def read_metrics(run: str | os.PathLike | Root) -> list[dict]:
    """Every logged row of a run, oldest first ([] before the first log step)."""
    run = run_root(run)
    try:
        text = run.read_bytes(METRICS).decode()
    except FileNotFoundError:
        return []
    where = run.url_of(METRICS)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{where}:{n}: not a JSON row ({e})") from None
            rows.append(_row_version(row, where))
    return rows


class MetricsLog:
    """One row per log step in `metrics.jsonl` and `metrics.csv`.

    Appended on a local disk; a bucket has no append, so both objects are rewritten whole.
    """

    def __init__(self, run: Root, fields: tuple[str, ...]) -> None:
        self.run, self.fields = run, fields
        self.rows: list[dict] | None = None  # what a bucket holds, once read

    def _csv(self, rows: list[dict], header: bool) -> str:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, self.fields, extrasaction="ignore", lineterminator="\r\n")
        if header:
            w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def write(self, row: dict) -> None:
        """Log one step."""
        row = {**row, "format_version": METRICS_FORMAT}
        if self.run.local:
            jsonl, table = self.run.full(METRICS), self.run.full(METRICS_CSV)
            os.makedirs(self.run.path, exist_ok=True)
            new = not os.path.exists(table)
            with open(jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
            with open(table, "a", newline="") as f:
                f.write(self._csv([row], new))
            return
        if self.rows is None:
            self.rows = read_metrics(self.run)
        self.rows.append(row)
        self._put(self.rows)

    def _put(self, rows: list[dict]) -> None:
        self.run.put_bytes(METRICS, "".join(json.dumps(r) + "\n" for r in rows).encode())
        self.run.put_bytes(METRICS_CSV, self._csv(rows, True).encode())

    def truncate_after(self, step: int) -> None:
        """Drop rows past a resumed checkpoint, so a resumed run logs each step once."""
        rows = read_metrics(self.run)
        if not rows:
            return
        kept = [r for r in rows if r["step"] <= step]
        if len(kept) == len(rows) and self.run.exists(METRICS_CSV):
            self.rows = rows
            return
        self._put(kept)
        self.rows = kept
