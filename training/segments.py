"""World-model segments from the store: DIAMOND's sampling, sharded and resumable like windows."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from storage.dataset import Dataset, open_dataset
from storage.sidearrays import open_array, read_actions, read_views, view_current, view_key
from training.stream import StreamState

ACTION_CACHE = 256  # episodes whose action rows are kept (about 400 KB each)


def sample_segments(
    rng: np.random.Generator, lengths: np.ndarray, mine: np.ndarray, batch: int, seq: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DIAMOND's draw: episodes by length, a step in each, a segment ending at or after it.

    Segments may start before the episode (left padding) but never run past its end.
    Returns episode indices (into `lengths`), starts and stops.
    """
    w = lengths[mine].astype(np.float64)
    episodes = rng.choice(mine, size=batch, replace=True, p=w / w.sum())
    steps = rng.integers(0, lengths[episodes])
    stops = np.minimum(lengths[episodes], steps + 1 + rng.integers(0, seq, batch))
    return episodes, stops - seq, stops


class SegmentStream(IterableDataset):
    """Endless batches of `batch_size` segments of `seq_length` steps for one rank.

    Rank r samples the episodes r, r + world, ... as DIAMOND's sampler does. Batch g of the
    rank is drawn from a generator seeded by (seed, rank, g), and DataLoader worker w makes
    the batches g = w (mod workers), so a `StreamState` cursor resumes the same sequence.
    `view=None` reads full-resolution frames; a view name (`csdm views`, e.g. "30x56") reads
    the stored low-res observations. Each batch holds `obs` (B, T, 3, h, w) uint8 RGB, `act`
    (B, T, 51) as the source stored it, and `mask_padding` (B, T).
    """

    def __init__(
        self,
        out: str,
        seq_length: int,
        batch_size: int,
        view: str | None = None,
        split: str | None = None,
        kept_only: bool = False,
        state: StreamState = StreamState(),  # noqa: B008  (frozen, so shared safely)
        rank: int = 0,
        world: int = 1,
        storage_options: dict | None = None,
    ) -> None:
        self.out, self.options = str(out), storage_options
        self.seq, self.batch_size, self.view = seq_length, batch_size, view
        self.state, self.rank, self.world = state, rank, world
        ds = open_dataset(out, storage_options)
        recs = [
            r
            for r in ds.state.committed.values()
            if (split is None or r.split == split) and (r.keep or not kept_only)
        ]
        recs.sort(key=lambda r: r.episode)
        if view is not None:
            if view not in read_views(ds.layout):
                raise ValueError(
                    f"{out}: no view {view!r} (make it with `csdm views {out} --size {view}`)"
                )
            stale = [
                r.episode for r in recs if not view_current(ds.layout, view, r.episode, r.sha256)
            ]
            if stale:
                raise ValueError(
                    f"{out}: view {view} is missing or stale for {len(stale)} "
                    f"episode(s), e.g. {stale[0]}; rerun `csdm views`"
                )
        self.episodes = [r.episode for r in recs]
        self.lengths = np.array([r.n_frames or 0 for r in recs], dtype=np.int64)
        self.mine = np.arange(rank, len(self.episodes), world)
        if len(self.mine) == 0 or self.lengths[self.mine].sum() == 0:
            raise ValueError(f"{out}: no episodes for rank {rank} of {world}")
        self._ds: Dataset | None = None
        self._pid = os.getpid()
        self._actions: OrderedDict[str, np.ndarray] = OrderedDict()
        self._views: OrderedDict[str, object] = OrderedDict()

    def __getstate__(self) -> dict:  # each worker opens its own store
        return {**self.__dict__, "_ds": None, "_actions": OrderedDict(), "_views": OrderedDict()}

    def segments(self, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The episodes, starts and stops of this rank's batch number `g`."""
        rng = np.random.default_rng([self.state.seed, self.rank, g])
        return sample_segments(rng, self.lengths, self.mine, self.batch_size, self.seq)

    def _action_rows(self, name: str) -> np.ndarray:
        if name not in self._actions:
            self._actions[name] = read_actions(self._ds.layout, name)
            if len(self._actions) > ACTION_CACHE:
                self._actions.popitem(last=False)
        self._actions.move_to_end(name)
        return self._actions[name]

    def _obs(self, name: str, lo: int, hi: int) -> np.ndarray:
        if self.view is None:  # BGR (t, h, w, 3) to RGB (t, 3, h, w)
            return self._ds.frames(name, lo, hi)[..., ::-1].transpose(0, 3, 1, 2)
        if name not in self._views:
            self._views[name] = open_array(
                self._ds.root, view_key(self._ds.layout, self.view, name)
            )
            if len(self._views) > ACTION_CACHE:
                self._views.popitem(last=False)
        self._views.move_to_end(name)
        return self._views[name][lo:hi]

    def read(self, episodes, starts, stops) -> dict[str, object]:
        """One batch: observations, actions and padding masks, zero where padded."""
        if self._ds is None or self._pid != os.getpid():  # forked workers open their own
            self._ds, self._pid = open_dataset(self.out, self.options), os.getpid()
            self._actions, self._views = OrderedDict(), OrderedDict()
        obs = act = None
        mask = torch.zeros((len(episodes), self.seq), dtype=torch.bool)
        for i, (e, start, stop) in enumerate(zip(episodes, starts, stops, strict=True)):
            name, lo = self.episodes[e], max(0, int(start))
            left = lo - int(start)
            o, a = self._obs(name, lo, int(stop)), self._action_rows(name)[lo : int(stop)]
            if obs is None:
                obs = torch.zeros((len(episodes), self.seq, *o.shape[1:]), dtype=torch.uint8)
                act = torch.zeros((len(episodes), self.seq, a.shape[1]), dtype=_torch(a.dtype))
            obs[i, left : left + len(o)] = torch.from_numpy(np.ascontiguousarray(o))
            act[i, left : left + len(a)] = torch.from_numpy(np.asarray(a))
            mask[i, left : left + len(o)] = True
        return {
            "obs": obs,
            "act": act,
            "mask_padding": mask,
            "episode": [self.episodes[e] for e in episodes],
            "start": torch.from_numpy(starts),
            "stop": torch.from_numpy(stops),
        }

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        g = self.state.cursor + worker
        while True:
            out = self.read(*self.segments(g))
            out["batch"] = torch.tensor(g)
            yield out
            g += workers


def _torch(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype
