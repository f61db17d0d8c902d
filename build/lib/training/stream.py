"""A resumable, sharded stream of uint8 batches, and the DataLoader that runs it."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from storage.dataset import CorruptFramesError, Dataset, open_dataset
from storage.shards import fresh_array
from training.actions import DEFAULT
from training.device_decode import DECODES, PACKED_KEYS, Packer, decode_on_device
from training.windows import WindowIndex


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
        decode: str = "cpu",
    ) -> None:
        if on_corrupt not in ("stop", "skip"):
            raise ValueError(f"on_corrupt must be stop or skip, not {on_corrupt!r}")
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {', '.join(DECODES)}, not {decode!r}")
        # "cuda": batches carry compressed chunks; `to_device` decodes them on the GPU
        self.decode = decode
        self.root, self.index, self.batch_size = str(root), index, batch_size
        self.state, self.rank, self.world = state, rank, world
        self.on_corrupt = on_corrupt
        # windows read at once: object stores answer each range in tens of ms, so a batch's
        # reads overlap; memory stays one batch per DataLoader worker
        self.read_threads = max(1, read_threads)
        self._pool: ThreadPoolExecutor | None = None
        self._bad: set[str] = set()  # episodes found corrupt (skip mode)
        self._ds: Dataset | None = None
        self._pid = os.getpid()
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
        if self._ds is None or self._pid != os.getpid():  # a forked worker opens its own
            self._ds, self._pid = open_dataset(self.root), os.getpid()
        lab, t = self.index.labels, self.index.cfg.window
        if self.decode == "cuda":
            return self._read_packed(windows)
        shape = (len(windows), t, DEFAULT.height, DEFAULT.width, 3)
        if get_worker_info() is not None:  # decode straight into the memory sent to the trainer
            out = torch.empty(shape, dtype=torch.uint8).share_memory_()
        else:
            out = torch.from_numpy(fresh_array(shape))
        frames = out.numpy()
        rows = np.empty((len(windows), t), np.int64)
        good, corrupt = [], []

        def fetch(i: int, name: str, s: int) -> CorruptFramesError | None:
            if name in self._bad:
                return None
            try:
                self._ds.frames(name, s, s + t, out=frames[i])  # decoded in place
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
                self._skip(name, err)
            if name in self._bad:  # never train on bad bytes: the window leaves the batch
                corrupt.append(name)
                continue
            good.append(i)
            rows[i] = lab.offsets[e] + s + np.arange(t)
        if corrupt:
            out, rows = out[good], rows[good]
        return {"corrupt_episodes": corrupt, "frames": out, **self._labels(rows)}

    def _skip(self, name: str, err: CorruptFramesError) -> None:
        """A window's episode failed: stop, or remember to leave its windows out."""
        if self.on_corrupt == "stop":
            raise err
        self._bad.add(name)

    def _read_packed(self, windows: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """A batch for GPU decoding: the windows' compressed chunks, packed, with labels."""
        lab, t = self.index.labels, self.index.cfg.window
        packer, rows, corrupt = Packer(self._ds), [], []
        for e, s in windows:
            name = lab.episodes[e]
            if name not in self._bad:
                try:
                    packer.add(name, s, s + t)
                    rows.append(lab.offsets[e] + s + np.arange(t))
                    continue
                except CorruptFramesError as err:
                    self._skip(name, err)
            corrupt.append(name)
        rows = np.array(rows, np.int64).reshape(-1, t)
        return {
            "corrupt_episodes": corrupt,
            **packer.result(),
            "window": torch.tensor(t),
            **self._labels(rows),
        }

    def _labels(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        lab = self.index.labels
        return {
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


def to_device(
    batch: dict[str, torch.Tensor], device: torch.device | str
) -> dict[str, torch.Tensor]:
    """Copy a (pinned) batch to the device without blocking the host.

    A batch of compressed chunks (`WindowStream(decode="cuda")`) is decoded there into frames.
    """
    device = torch.device(device)
    if "chunk_data" not in batch:
        return {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }
    shape = (DEFAULT.height, DEFAULT.width, 3)
    frames = decode_on_device(batch, shape, int(batch["window"]), device)
    rest = {k: v for k, v in batch.items() if k not in PACKED_KEYS}
    return {**to_device(rest, device), "frames": frames}
