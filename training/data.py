"""Training windows: a catalog-driven sampler and a resumable, sharded stream of uint8 batches."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from storage.catalog import KEY_COLUMNS
from storage.dataset import CorruptFramesError, Dataset, connect_catalog, open_dataset
from training.actions import DEFAULT, ActionSpace


@dataclass(frozen=True)
class SamplerConfig:
    """Which windows to train on. The seed's subselection is `SamplerConfig.seed_subselect()`."""

    window: int = 96
    jitter: int = 20  # random forward offset of a window start, as the seed's N_JITTER
    split: str | None = "train"  # None: every split
    keep_only: bool = True  # episodes the quality filter kept
    weapon: str | None = None  # e.g. "ak47": segments mostly holding it (name substring)
    weapon_fraction: float = 0.7
    drop_motionless: bool = False  # drop segments with >80% no WASD and >80% no mouse move
    motionless_fraction: float = 0.8
    keep_prob: float = 1.0  # chance to keep any other segment (the seed's SUB_PROB 0.4)
    kill_segments: bool = False  # always keep segments with a kill, and the one before
    draws: int = 4  # subselections drawn independently and cycled by epoch, as the seed's four

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise ValueError(f"draws {self.draws}: at least one subselection is drawn")

    @classmethod
    def from_dict(cls, d: dict) -> SamplerConfig:
        """Inverse of `to_dict`; runs from before `draws` drew their subselection once."""
        return cls(**{"draws": 1, **d})

    @classmethod
    def seed_subselect(cls, **kw) -> SamplerConfig:
        """The seed's IS_SUBSELECT with SUB_TYPE 'ak' and SUB_PROB 0.4."""
        base = dict(weapon="ak47", drop_motionless=True, keep_prob=0.4, kill_segments=True)
        return cls(**{**base, **kw})

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


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


@dataclass
class WindowIndex:
    """The candidate windows: episode index and segment start, before per-epoch jitter."""

    labels: Labels
    episode: np.ndarray  # int64 index into labels.episodes
    start: np.ndarray  # int64 frame
    cfg: SamplerConfig
    # the seed's independent subselections, epoch e training on rounds[e % len]; empty: one,
    # (episode, start) above, every epoch
    rounds: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def __len__(self) -> int:
        return len(self.start)

    def round(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode, start) of the windows epoch `epoch` draws from."""
        if not self.rounds:
            return self.episode, self.start
        return self.rounds[epoch % len(self.rounds)]

    @property
    def n_rounds(self) -> int:
        """How many subselections the epochs cycle through."""
        return max(1, len(self.rounds))


def build_index(labels: Labels, cfg: SamplerConfig, seed: int = 0) -> WindowIndex:
    """Segments every `window` frames (the seed's grid), subselected as configured."""
    t, n = cfg.window, labels.lengths()
    seg_ep, seg_start = [], []
    for i, length in enumerate(n):
        if length >= t:  # the seed's grid: starts below n - window - jitter, at least one
            s = np.arange(0, max(length - t - cfg.jitter, 1), t)
            seg_ep.append(np.full(len(s), i))
            seg_start.append(s)
    if not seg_ep:
        return WindowIndex(labels, np.zeros(0, np.int64), np.zeros(0, np.int64), cfg)
    ep, start = np.concatenate(seg_ep).astype(np.int64), np.concatenate(seg_start).astype(np.int64)
    rounds = []
    for r in range(cfg.draws if _subselects(cfg) else 1):
        key = [seed, 0x5E1EC7] if r == 0 else [seed, 0x5E1EC7, r]
        keep = subselect(labels, ep, start, cfg, np.random.default_rng(key).random(len(start)))
        rounds.append((ep[keep], start[keep]))
    lean = replace(labels, weapon=np.empty(0, object))  # loader processes need no strings
    return WindowIndex(lean, *rounds[0], cfg, tuple(rounds) if len(rounds) > 1 else ())


def _subselects(cfg: SamplerConfig) -> bool:
    """Whether the subselection draws at random (otherwise every draw is the same)."""
    return cfg.keep_prob < 1.0


def subselect(
    labels: Labels, ep: np.ndarray, start: np.ndarray, cfg: SamplerConfig, draws: np.ndarray
) -> np.ndarray:
    """The seed's `fn_subselect`, vectorised over segments; `draws` are uniform in [0, 1).

    A segment runs to the next start, the last one to its episode's second-last frame (the
    seed's hard-coded 999).
    """
    plain = cfg.weapon is None and not cfg.drop_motionless and cfg.keep_prob >= 1.0
    if plain and not cfg.kill_segments:
        return np.ones(len(start), bool)
    first = labels.offsets[ep] + start
    last_of_ep = np.r_[ep[1:] != ep[:-1], True]
    end = np.where(last_of_ep, labels.offsets[ep + 1] - 1, np.r_[first[1:], 0])

    def seg_sum(x: np.ndarray) -> np.ndarray:
        cs = np.r_[0, np.cumsum(x, dtype=np.int64)]
        return cs[end] - cs[first]

    length = (end - first).astype(np.float64)
    moving = labels.keys[:, :4].any(1)
    mouse = (labels.mouse_x != _zero(DEFAULT.mouse_x_bins)) | (
        labels.mouse_y != _zero(DEFAULT.mouse_y_bins)
    )
    kills = seg_sum(labels.kill.astype(bool))
    holding = (
        seg_sum(np.char.find(labels.weapon.astype(str), cfg.weapon) >= 0)
        if cfg.weapon is not None
        else length
    )
    prob = np.full(len(start), cfg.keep_prob)
    if cfg.drop_motionless:
        still = (seg_sum(~moving) / cfg.window > cfg.motionless_fraction) & (
            seg_sum(~mouse) / cfg.window > cfg.motionless_fraction
        )
        prob[still] = 0.0
    armed = holding / cfg.window >= cfg.weapon_fraction
    prob[~armed] = 0.0
    keep = ~(draws > prob)
    if cfg.kill_segments:
        hot = (kills > 0) & armed
        keep |= hot
        prev = np.flatnonzero(hot[1:] & (ep[1:] == ep[:-1]))  # and the segment before it
        keep[prev] = True
    return keep


def _zero(bins: tuple[float, ...]) -> int:
    return int(np.argmin(np.abs(np.asarray(bins))))


@dataclass(frozen=True)
class StreamState:
    """Where a stream is: seed, epoch and global batches consumed in that epoch."""

    seed: int = 0
    epoch: int = 0
    cursor: int = 0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


class WindowStream(IterableDataset):
    """Endless batches of `batch_size` windows for one rank, deterministic from a StreamState.

    Global batch g of an epoch holds windows `perm[g*B*world : (g+1)*B*world]`; rank r takes its
    B-slice and DataLoader worker w produces every batch with g = w (mod workers), so ranks and
    workers never overlap and `DataLoader(batch_size=None)` yields batches in global order.
    """

    def __init__(
        self,
        root: str | Path,
        index: WindowIndex,
        batch_size: int,
        state: StreamState = StreamState(),
        rank: int = 0,
        world: int = 1,
        on_corrupt: str = "stop",
        read_threads: int = 1,
    ) -> None:
        if on_corrupt not in ("stop", "skip"):
            raise ValueError(f"on_corrupt must be stop or skip, not {on_corrupt!r}")
        self.root, self.index, self.batch_size = str(root), index, batch_size
        self.state, self.rank, self.world = state, rank, world
        self.on_corrupt = on_corrupt
        # windows read at once: object stores answer each range in tens of ms, so a batch's
        # reads overlap; memory stays one batch per DataLoader worker
        self.read_threads = max(1, read_threads)
        self._pool: ThreadPoolExecutor | None = None
        self._bad: set[str] = set()  # episodes found corrupt (skip mode)
        self._ds: Dataset | None = None
        self._plan: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        if min(self._round_sizes()) == 0:
            fewest = min(len(index.round(r)[0]) for r in range(index.n_rounds))
            raise ValueError(
                f"{root}: {fewest} windows of {index.cfg.window} frames, fewer than one "
                f"batch of {batch_size} x {world} ranks; lower --batch-size or the window"
            )

    def __getstate__(self) -> dict:
        # each worker opens its own store and threads
        return {**self.__dict__, "_ds": None, "_plan": None, "_pool": None}

    def batches_in(self, epoch: int) -> int:
        """Whole global batches in an epoch (the last partial one is dropped)."""
        return len(self.index.round(epoch)[0]) // (self.batch_size * self.world)

    @property
    def batches_per_epoch(self) -> int:
        """Whole global batches in the first epoch (every epoch, without subselection rounds)."""
        return self.batches_in(0)

    def _round_sizes(self) -> list[int]:
        """Batches in the epochs of each subselection round."""
        return [self.batches_in(r) for r in range(self.index.n_rounds)]

    def _locate(self, g: int) -> tuple[int, int]:
        """(epoch, batch) of the g-th global batch, epochs of each round differing in length."""
        sizes = self._round_sizes()
        cycle, rest = divmod(g, sum(sizes))
        r = 0
        while rest >= sizes[r]:
            rest -= sizes[r]
            r += 1
        return cycle * len(sizes) + r, rest

    def _first(self, epoch: int) -> int:
        """The global batch number that starts `epoch`."""
        sizes = self._round_sizes()
        cycle, r = divmod(epoch, len(sizes))
        return cycle * sum(sizes) + sum(sizes[:r])

    def epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The epoch's window order, episodes and jittered starts (same on every rank/worker)."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        episode, first = self.index.round(epoch)
        rng = np.random.default_rng([self.state.seed, epoch])
        perm = rng.permutation(len(episode))
        jitter = rng.integers(0, max(self.index.cfg.jitter - 1, 1), len(episode))
        n = self.index.labels.lengths()[episode]
        start = np.minimum(first + jitter, n - self.index.cfg.window)
        self._plan = (epoch, (perm, episode, start))
        return perm, episode, start

    def windows(self, epoch: int, batch: int) -> list[tuple[int, int]]:
        """(episode index, start) of this rank's windows in one global batch."""
        perm, episode, start = self.epoch_plan(epoch)
        lo = (batch * self.world + self.rank) * self.batch_size
        sel = perm[lo : lo + self.batch_size]
        return list(zip(episode[sel].tolist(), start[sel].tolist(), strict=True))

    def read(self, windows: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """A batch of uint8 frames and labels for the given windows."""
        if self._ds is None:
            self._ds = open_dataset(self.root)
        lab, t = self.index.labels, self.index.cfg.window
        shape = (len(windows), t, DEFAULT.height, DEFAULT.width, 3)
        out = torch.empty(shape, dtype=torch.uint8)
        if get_worker_info() is not None:  # decode straight into the memory sent to the trainer
            out.share_memory_()
        frames = out.numpy()
        rows = np.empty((len(windows), t), np.int64)
        good, corrupt = [], []

        def fetch(i: int, name: str, s: int) -> CorruptFramesError | None:
            if name in self._bad:
                return None
            try:
                frames[i] = self._ds.frames(name, s, s + t)
            except CorruptFramesError as err:
                return err
            return None

        jobs = [(i, lab.episodes[e], s) for i, (e, s) in enumerate(windows)]
        if self.read_threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="csdm-read")
            errors = list(self._pool.map(lambda j: fetch(*j), jobs))
        else:
            errors = [fetch(*j) for j in jobs]
        for (i, name, s), err in zip(jobs, errors, strict=True):
            e = windows[i][0]
            if err is not None:
                if self.on_corrupt == "stop":
                    raise err
                self._bad.add(name)
            if name in self._bad:  # never train on bad bytes: the window leaves the batch
                corrupt.append(name)
                continue
            good.append(i)
            rows[i] = lab.offsets[e] + s + np.arange(t)
        if corrupt:
            out, rows = out[good], rows[good]
        return {
            "corrupt_episodes": corrupt,
            "frames": out,
            "keys": torch.from_numpy(lab.keys[rows]),
            "clicks": torch.from_numpy(lab.clicks[rows]),
            "mouse_x": torch.from_numpy(lab.mouse_x[rows]),
            "mouse_y": torch.from_numpy(lab.mouse_y[rows]),
            "kill": torch.from_numpy(lab.kill[rows]),
            "death": torch.from_numpy(lab.death[rows]),
        }

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        g = self._first(self.state.epoch) + self.state.cursor + worker
        while True:
            epoch, batch = self._locate(g)
            out = self.read(self.windows(epoch, batch))
            out["epoch"], out["batch"] = torch.tensor(epoch), torch.tensor(batch)
            yield out
            g += workers


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
        r[0] for r in con.execute("SELECT DISTINCT split FROM files WHERE split IS NOT NULL")
        .fetchall()
    )  # fmt: skip
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
            r[0] for r in con.execute("SELECT DISTINCT weapon FROM frames WHERE weapon IS NOT NULL")
            .fetchall()
        )  # fmt: skip
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


def make_loader(stream: WindowStream, workers: int = 2, pin: bool | None = None) -> DataLoader:
    """Batches from `workers` spawned processes (zarr v3 and fork deadlock), pinned on CUDA."""
    pin = torch.cuda.is_available() if pin is None else pin
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        multiprocessing_context="spawn" if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        pin_memory=pin,
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a (pinned) batch to the device without blocking the host."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def augment(frames: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """The seed's augmentation per window, on the device, each step clipped and truncated.

    Brightness x U(0.7, 1.3) with chance `p`, then contrast about 128 x U(0.7, 1.3) likewise.
    """
    b = frames.shape[0]
    x = frames.float()
    shape = (b,) + (1,) * (x.dim() - 1)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        on = torch.rand(b, generator=gen, device=gen.device) < p
        factor = torch.rand(b, generator=gen, device=gen.device) * 0.6 + 0.7
        return on.view(shape), factor.view(shape)

    on, bright = draw()
    x = torch.where(on, (x * bright).clamp(0, 255).floor(), x)
    on, contrast = draw()
    return torch.where(on, (128 + contrast * x - contrast * 128).clamp(0, 255).floor(), x)
