"""World-model segments from the store: DIAMOND's sampling, sharded and resumable like windows."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from storage.dataset import Dataset, open_dataset
from storage.diamond_layout import (
    EPISODE_LENGTH,
    default_test_split,
    diamond_records,
    parse_test_split,
    select_episodes,
    too_short,
)
from storage.fs import is_url
from storage.latents import FULL, as_tensor, latent_current, open_latent, read_latents
from storage.sidearrays import open_array, read_actions, read_views, view_current, view_key
from training.action_encodings import ENCODINGS, strided_actions
from training.diamond import SegmentId
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
    the stored view, a latent name (`csdm encode`) its latents as float32. Each batch holds
    `obs` (B, T, 3, h, w) RGB (or (B, T, C, h', w') latents), `act` (B, T, A) and
    `mask_padding` (B, T). `stride=k` takes every k-th frame (16/k fps) and `actions=` the
    encoding: "raw", "decoded" or "indices" (training/action_encodings.py has the rule).

    `obs="float"` (the default) gives DIAMOND's values: float32 in [-1, 1], padded steps 0.0,
    as DIAMOND pads after normalising. `obs="uint8"` moves 4x fewer bytes through DataLoader
    workers; its padded steps are 0 (which would normalise to -1), so mask them. `diamond=True`
    samples DIAMOND's episodes (the scraped dust2 set, duplicates included) split by DIAMOND's
    published test split, named by its file ids; `batch_fields=True` yields exactly the fields
    of DIAMOND's `Batch` (`Batch(**item)`). docs/world-models.md lists what still differs.
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
        obs: str = "float",
        diamond: bool = False,
        batch_fields: bool = False,
        diamond_length: int = EPISODE_LENGTH,
        stride: int = 1,
        actions: str = "raw",
    ) -> None:
        if obs not in ("float", "uint8"):
            raise ValueError(f"obs must be 'float' or 'uint8', not {obs!r}")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a whole number >= 1, not {stride!r}")
        if actions not in ENCODINGS:
            raise ValueError(f"actions must be one of {', '.join(ENCODINGS)}, not {actions!r}")
        self.stride, self.actions = stride, actions
        self.out = str(out) if is_url(str(out)) else os.path.abspath(out)  # workers start anywhere
        self.options = storage_options
        self.seq, self.batch_size, self.view = seq_length, batch_size, view
        self.state, self.rank, self.world = state, rank, world
        self.obs_kind, self.batch_fields = obs, batch_fields
        ds = open_dataset(out, storage_options)
        names, sources, lengths = _chosen(ds, split, kept_only, diamond and diamond_length)
        self.latent = view is not None and _check_view(ds, str(out), view, sources, diamond, obs)
        self.episodes, self._sources = names, sources
        # in steps: frames 0, k, 2k, ... of each episode
        self.lengths = (np.array(lengths, dtype=np.int64) + stride - 1) // stride
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

    def _obs(self, name: str, lo: int, hi: int) -> np.ndarray | torch.Tensor:
        """Steps `[lo, hi)`: frames lo*k, (lo+1)*k, ... as (t, 3, h, w), or latents."""
        k = self.stride
        a, b = lo * k, (hi - 1) * k + 1
        if self.view is None:  # BGR (t, h, w, 3) to RGB (t, 3, h, w)
            return self._ds.frames(name, a, b)[::k, ..., ::-1].transpose(0, 3, 1, 2)
        if name not in self._views:
            self._views[name] = (
                open_latent(self._ds.layout, self.view, name)
                if self.latent
                else open_array(self._ds.root, view_key(self._ds.layout, self.view, name))
            )
            if len(self._views) > ACTION_CACHE:
                self._views.popitem(last=False)
        self._views.move_to_end(name)
        arr = self._views[name]
        rows = arr[a:b][::k]
        return as_tensor(arr, rows).float() if self.latent else rows

    def read(self, episodes, starts, stops) -> dict[str, object]:
        """One batch: observations, actions and padding masks, zero where padded."""
        if self._ds is None or self._pid != os.getpid():  # forked workers open their own
            self._ds, self._pid = open_dataset(self.out, self.options), os.getpid()
            self._actions, self._views = OrderedDict(), OrderedDict()
        obs = act = None
        mask = torch.zeros((len(episodes), self.seq), dtype=torch.bool)
        kind = torch.float32 if self.obs_kind == "float" else torch.uint8
        for i, (e, start, stop) in enumerate(zip(episodes, starts, stops, strict=True)):
            name, lo = self._sources[e], max(0, int(start))
            left = lo - int(start)
            o = self._obs(name, lo, int(stop))
            a = strided_actions(self._action_rows(name), lo, int(stop), self.stride, self.actions)
            if obs is None:  # zeros: padded steps are 0.0 once normalised, as DIAMOND pads
                obs = torch.zeros((len(episodes), self.seq, *o.shape[1:]), dtype=kind)
                act = torch.zeros((len(episodes), self.seq, a.shape[1]), dtype=_torch(a.dtype))
            frames = o if self.latent else torch.from_numpy(np.ascontiguousarray(o))
            if kind == torch.float32 and not self.latent:  # DIAMOND's arithmetic, bit-equal
                frames = frames.div(255).mul(2).sub(1)
            obs[i, left : left + len(o)] = frames
            act[i, left : left + len(a)] = torch.from_numpy(np.asarray(a))
            mask[i, left : left + len(o)] = True
        if self.batch_fields:  # DIAMOND's `Batch`, field for field
            n = (len(episodes), self.seq)
            ids = [
                SegmentId(self.episodes[e], max(0, int(a)), int(b))
                for e, a, b in zip(episodes, starts, stops, strict=True)
            ]
            return {
                "obs": obs,
                "act": act,
                "rew": torch.zeros(n),
                "end": torch.zeros(n, dtype=torch.uint8),
                "trunc": torch.zeros(n, dtype=torch.uint8),
                "mask_padding": mask,
                "info": [{} for _ in episodes],
                "segment_ids": ids,
            }
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
            if not self.batch_fields:
                out["batch"] = torch.tensor(g)
            yield out
            g += workers


def _check_view(
    ds: Dataset, out: str, view: str, sources: list[str], diamond: int, obs: str
) -> bool:
    """That `view` is a stored view or latent, current for every episode; True for a latent."""
    views, latents = read_views(ds.layout), read_latents(ds.layout)
    if view in latents:
        spec = latents[view]
        if spec.view != FULL and spec.view not in views:
            raise ValueError(f"{out}: latent {view!r} was made from view {spec.view!r}, now gone")
        recipe = None if spec.view == FULL else views[spec.view].recipe
        if obs != "float":
            raise ValueError(f"{out}: latent {view!r} streams as float only, not obs={obs!r}")
        stale = [e for e in sources if not latent_current(ds.layout, spec, e, ds.sha256(e), recipe)]
        fix = f"rerun `csdm encode {out} --name {view} ...`"
    elif view in views:
        if diamond and not views[view].is_diamond:
            raise ValueError(
                f"{out}: view {view!r} is not DIAMOND's (bicubic, stretch, --overshoot wrap); "
                f"make one with `csdm views {out} --size 30x56 --overshoot wrap`"
            )
        recipe = views[view].recipe
        stale = [e for e in sources if not view_current(ds.layout, view, e, ds.sha256(e), recipe)]
        fix = "rerun `csdm views`"
    else:
        raise ValueError(
            f"{out}: no view or latent {view!r} (make one with `csdm views {out} --size HxW` "
            "or `csdm encode`)"
        )
    if stale:
        raise ValueError(
            f"{out}: {view} is missing or stale for {len(stale)} episode(s), e.g. {stale[0]}; "
            + fix
        )
    return view in latents


def _chosen(
    ds: Dataset, split: str | None, kept_only: bool, diamond: int
) -> tuple[list[str], list[str], list[int]]:
    """Names to report, the stored episodes to read, and their lengths, in sampling order.

    csdm's choice: every stored episode of a split (csdm's own), by name. DIAMOND's (when
    `diamond` is its episode length): its episodes of at least that length, read as that
    length, by number, split by its published test split, each read from its stored twin.
    """
    if not diamond:
        recs = sorted(
            (
                r
                for r in ds.state.committed.values()
                if (split is None or r.split == split) and (r.keep or not kept_only)
            ),
            key=lambda r: r.episode,
        )
        return [r.episode for r in recs], [r.episode for r in recs], [r.n_frames or 0 for r in recs]
    test = parse_test_split(default_test_split(), "DIAMOND's test split")
    usable, _ = too_short(select_episodes(diamond_records(ds.state), kept_only), diamond)
    chosen = [
        e
        for e in usable
        if split is None or (e.file_id.rsplit("/", 1)[1] in test) == (split == "test")
    ]
    return [e.file_id for e in chosen], [e.episode for e in chosen], [diamond] * len(chosen)


def _torch(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype
