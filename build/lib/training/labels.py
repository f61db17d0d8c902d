"""Per-frame labels of the selected episodes, loaded once with one catalog query."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from storage.catalog import KEY_COLUMNS
from storage.dataset import open_dataset
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
    """Frames of the kept, stored episodes of a split, in (episode, frame) order.

    Read with pyarrow from the catalog's Parquet files: a reader needs no SQL engine.
    """
    ds = open_dataset(root)
    files = ds.files
    chosen = pc.equal(files["status"], "stored")
    if cfg.keep_only:
        chosen = pc.and_(chosen, files["keep"])
    episodes = pa.array(files.filter(chosen)["episode"].to_pylist(), pa.string())
    where = pads.field("episode").isin(episodes)
    if cfg.split is not None:
        where = where & (pads.field("split") == cfg.split)
    cols = ["episode", "frame", *KEY_COLUMNS, "lclick", "rclick", "mouse_x", "mouse_y"]
    tbl = ds.catalog.to_table(columns=[*cols, "kill", "death", "weapon"], filter=where)
    tbl = tbl.sort_by([("episode", "ascending"), ("frame", "ascending")])
    tbl = tbl.set_column(
        tbl.schema.get_field_index("weapon"), "weapon", pc.fill_null(tbl["weapon"], "")
    )
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
