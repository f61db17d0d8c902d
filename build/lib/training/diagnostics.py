"""What a run must match to resume, and why no batch can be drawn, in the user's terms."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from storage.dataset import connect_catalog, open_dataset
from training.labels import Labels
from training.sampler import SamplerConfig
from training.windows import WindowIndex


def dataset_identity(root: str | Path) -> str:
    """A digest of the stored episodes and their checksums: what a resumed run must match."""
    ds = open_dataset(root)
    episodes = {e: ds.sha256(e) for e in ds.episodes}
    return hashlib.sha256(json.dumps(episodes, sort_keys=True).encode()).hexdigest()


def _one(con, sql: str, params: list | None = None):
    return con.execute(sql, params or []).fetchone()[0]


def why_untrainable(
    root: str | Path, cfg: SamplerConfig, labels: Labels, index: WindowIndex, global_batch: int
) -> str | None:
    """Why no batch can be drawn with these options, in the user's terms; None if one can."""
    fewest = min(len(index.round(r)[0]) for r in range(index.n_rounds))
    if fewest >= global_batch:
        return None
    con = connect_catalog(root)
    stored = _one(con, "SELECT count(*) FROM files WHERE status = 'stored'")
    kept = _one(con, "SELECT count(*) FROM files WHERE status = 'stored' AND keep")
    splits = sorted(
        r[0]
        for r in con.execute("SELECT DISTINCT split FROM files WHERE split IS NOT NULL").fetchall()
    )
    if stored == 0:
        return f"{root}: no stored episodes; run `csdm process SRC {root}` first"
    if cfg.keep_only and kept == 0:
        return (
            f"{root}: no kept episodes (all {stored} were rejected by the quality filter, see "
            "reject_reason in files.parquet); pass --all-episodes to train on them anyway"
        )
    if cfg.split is not None and cfg.split not in splits:
        have = ", ".join(splits)
        return f"--split {cfg.split}: no episode has that split (this dataset has {have}, or all)"
    if not labels.episodes:
        which = "kept " if cfg.keep_only else ""
        return f"{root}: no {which}episodes in split {cfg.split!r}; try --split all"
    if cfg.weapon is not None:
        weapons = sorted(
            r[0]
            for r in con.execute(
                "SELECT DISTINCT weapon FROM frames WHERE weapon IS NOT NULL"
            ).fetchall()
        )
        if not any(cfg.weapon in w for w in weapons):
            shown = ", ".join(weapons[:12]) or "none recorded"
            return f"--weapon {cfg.weapon}: no frame holds it (weapons in this dataset: {shown})"
    longest = int(labels.lengths().max())
    if longest < cfg.window:
        return f"{root}: the longest episode has {longest} frames, fewer than --window {cfg.window}"
    return (
        f"{root}: {fewest} windows of {cfg.window} frames, fewer than one batch of "
        f"{global_batch}; lower --batch-size or --window, or loosen the subselection"
    )
