"""Per-frame labels of the selected episodes, loaded once with one catalog query."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.catalog import KEY_COLUMNS
from storage.dataset import connect_catalog
from training.actions import DEFAULT, ActionSpace
from training.sampler import SamplerConfig


@dataclass
class Labels:
    """Per-frame labels of the selected episodes, concatenated; `offsets[i]` starts episode i."""

    episodes: list[str]
    offsets: np.ndarray  # int64, len(episodes) + 1
    keys: np.ndarray  # (N, n_keys) uint8
    clicks: np.ndarray  # (N, 2) uint8
    mouse_x: np.ndarray  # (N,) int64 bin index
    mouse_y: np.ndarray
    kill: np.ndarray  # (N,) uint8
    death: np.ndarray
    weapon: np.ndarray  # (N,) object, for subselection

    def lengths(self) -> np.ndarray:
        """Frames per episode."""
        return np.diff(self.offsets)


def _bin_index(values: np.ndarray, bins: tuple[float, ...]) -> np.ndarray:
    b = np.asarray(bins)
    idx = np.clip(np.searchsorted(b, values), 0, len(b) - 1)
    lower = np.clip(idx - 1, 0, len(b) - 1)  # nearest bin, for values not exactly on one
    closer = np.abs(b[lower] - values) <= np.abs(b[idx] - values)
    return np.where(closer, lower, idx).astype(np.int64)


def load_labels(root: str | Path, cfg: SamplerConfig, space: ActionSpace = DEFAULT) -> Labels:
    """One DuckDB query over the catalog: frames of the kept, stored episodes of a split."""
    con = connect_catalog(root)
    where = ["files.status = 'stored'"]
    if cfg.keep_only:
        where.append("files.keep")
    params: list = []
    if cfg.split is not None:
        where.append("frames.split = ?")
        params.append(cfg.split)
    cols = ", ".join(f"frames.{c}" for c in KEY_COLUMNS)
    tbl = con.sql(
        f"SELECT frames.episode, {cols}, frames.lclick, frames.rclick, frames.mouse_x, "
        "frames.mouse_y, frames.kill, frames.death, coalesce(frames.weapon, '') AS weapon "
        "FROM frames JOIN files USING (episode) WHERE "
        + " AND ".join(where)
        + " ORDER BY frames.episode, frames.frame",
        params=params,
    ).to_arrow_table()
    ep = tbl["episode"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]]) if len(ep) else np.array([], int)
    col = {c: tbl[c].to_numpy(zero_copy_only=False) for c in tbl.column_names}
    return Labels(
        episodes=[str(e) for e in ep[starts]],
        offsets=np.r_[starts, len(ep)].astype(np.int64),
        keys=np.stack([col[c] for c in KEY_COLUMNS], 1).astype(np.uint8),
        clicks=np.stack([col["lclick"], col["rclick"]], 1).astype(np.uint8),
        mouse_x=_bin_index(col["mouse_x"].astype(np.float64), space.mouse_x_bins),
        mouse_y=_bin_index(col["mouse_y"].astype(np.float64), space.mouse_y_bins),
        kill=col["kill"].astype(np.uint8),
        death=col["death"].astype(np.uint8),
        weapon=col["weapon"],
    )
