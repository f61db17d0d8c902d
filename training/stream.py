"""A resumable, sharded stream of uint8 batches, and the DataLoader that runs it."""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

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
        self._opening = threading.Lock()  # loader threads share one store and one read pool
        self._plan: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        if min(self._round_sizes()) == 0:
            fewest = min(len(index.round(r)[0]) for r in range(index.n_rounds))
            raise ValueError(
                f"{root}: {fewest} windows of {index.cfg.window} frames, fewer than one "
                f"batch of {batch_size} x {world} ranks; lower --batch-size or the window"
            )

    def __getstate__(self) -> dict:
        # each worker opens its own store and threads
        return {**self.__dict__, "_ds": None, "_plan": None, "_pool": None, "_opening": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _opening=threading.Lock())

    def _open(self) -> Dataset:
        """The store, opened once per process (a forked worker opens its own)."""
        with self._opening:
            if self._ds is None or self._pid != os.getpid():
                self._ds, self._pid = open_dataset(self.root), os.getpid()
                self._pool = None
            if self.read_threads > 1 and self._pool is None:
                self._pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="csdm-read")
            return self._ds

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

    def read(
        self, windows: list[tuple[int, int]], pin: bool = False, buffers: BufferPool | None = None
    ) -> dict[str, torch.Tensor]:
        """A batch of uint8 frames and labels for the given windows.

        Frames are decoded into pinned memory if `pin`, else into a buffer of `buffers`.
        """
        self._open()
        lab, t = self.index.labels, self.index.cfg.window
        if self.decode == "cuda":
            return self._read_packed(windows, pin)
        shape = (len(windows), t, DEFAULT.height, DEFAULT.width, 3)
        if pin:  # decoded straight into page-locked memory: no second copy before the GPU
            out = torch.empty(shape, dtype=torch.uint8, pin_memory=True)  # torch reuses blocks
        elif buffers is not None:
            out = buffers.tensor(shape)
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

    def _read_packed(self, windows: list[tuple[int, int]], pin: bool) -> dict[str, torch.Tensor]:
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
        packed = packer.result(pin)
        return {
            "corrupt_episodes": corrupt,
            **packed,
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

    def first_batch(self) -> int:
        """The global batch number this stream's state starts at."""
        return self._first(self.state.epoch) + self.state.cursor

    def batch(
        self, g: int, pin: bool = False, buffers: BufferPool | None = None
    ) -> dict[str, torch.Tensor]:
        """Global batch `g` (this rank's share), tagged with its epoch and batch in the epoch."""
        epoch, batch = self._locate(g)
        out = self.read(self.windows(epoch, batch), pin, buffers)
        out["epoch"], out["batch"] = torch.tensor(epoch), torch.tensor(batch)
        return out

    def __iter__(self):
        # inside a user's own DataLoader, worker w takes every batch with g = w (mod workers)
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        g = self.first_batch() + worker
        while True:
            yield self.batch(g)
            g += workers


class BufferPool:
    """Frame buffers used again once nothing made from one (tensor, view, array) is left.

    A batch's tensor holds a numpy view of its buffer; when the last tensor or view sharing
    that memory is freed, the view is, and its finalizer gives the buffer back. So a buffer
    is never written while anything can still read it, and no page is faulted in twice.
    (`share_memory_()` moves a tensor's storage out of its buffer, as it moves it out of any
    memory; an array taken from the tensor before then sees the buffer's next batch.)
    No lock: a finalizer may run inside any allocation, even one of `tensor`, so the free
    buffers are deques, whose append and pop are atomic.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep  # free buffers kept per size; more are let go
        self.free: dict[int, deque[np.ndarray]] = {}

    def tensor(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised uint8 tensor of `shape` on a free buffer, or on a new one."""
        n = int(np.prod(shape))
        try:
            base = self.free[n].pop()
        except (KeyError, IndexError):
            base = fresh_array((n,))
        view = base.reshape(shape)  # torch keeps this view, not `base`, alive
        weakref.finalize(view, self._release, base)
        return torch.from_numpy(view)

    def _release(self, base: np.ndarray) -> None:
        free = self.free.get(base.size)
        if free is None:
            free = self.free.setdefault(base.size, deque(maxlen=self.keep))
        free.append(base)  # beyond `keep`, the oldest is let go


class BatchLoader:
    """A stream's batches read `workers` at a time by threads, in global order, bounded ahead.

    Threads, not processes: the read path releases the GIL (file reads, crc32c, zstd, the
    compiled predictor), so each thread runs near the in-process rate, while a worker process
    paid to fault in fresh shared memory for every batch (0.38x per core). Buffers come from a
    `BufferPool`: a batch the consumer holds, or any view of it, is never written again.
    """

    def __init__(
        self, stream: WindowStream, workers: int = 2, pin: bool | None = None, prefetch: int = 2
    ) -> None:
        if workers < 0 or prefetch < 1:
            raise ValueError(f"workers must be >= 0 and prefetch >= 1, not {workers}, {prefetch}")
        self.stream, self.workers = stream, workers
        self.pin = torch.cuda.is_available() if pin is None else pin
        # batches read ahead of the consumer: memory is this many batches plus those it holds
        self.depth = workers * prefetch

    def __iter__(self) -> Batches:
        return Batches(self)


class Batches:
    """One pass of a BatchLoader: `next` returns global batches in order, forever."""

    def __init__(self, loader: BatchLoader) -> None:
        self.stream, self.pin, self.depth = loader.stream, loader.pin, loader.depth
        self.g = self.stream.first_batch()
        self.pending: deque[Future] = deque()
        self.buffers = BufferPool(keep=self.depth + 2)
        self.closed = False
        self.pool = (
            ThreadPoolExecutor(loader.workers, thread_name_prefix="csdm-loader")
            if loader.workers
            else None
        )

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.closed:
            raise StopIteration
        if self.pool is None:  # no workers: read in the consumer's thread
            try:
                out = self.stream.batch(self.g, self.pin, self.buffers)
            except BaseException:
                self.close()  # as with workers: a failed read ends the pass
                raise
            self.g += 1
            return out
        while len(self.pending) < self.depth:
            job = self.pool.submit(self.stream.batch, self.g, self.pin, self.buffers)
            self.pending.append(job)
            self.g += 1
        try:
            return self.pending.popleft().result()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop reading ahead: batches not yet started are dropped, running ones finish."""
        self.closed = True
        if self.pool is not None:
            for f in self.pending:
                f.cancel()
            self.pending.clear()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def __del__(self) -> None:
        self.close()


def make_loader(stream: WindowStream, workers: int = 2, pin: bool | None = None) -> BatchLoader:
    """Batches of `stream` read by `workers` threads (0: by the consumer), pinned on CUDA."""
    return BatchLoader(stream, workers, pin)


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
