"""Frames decoded on the GPU: workers hand over compressed chunks, the device does the rest.

A loader worker reads each window's chunks (one range per shard, crc32c checked on the host)
and packs their zstd bodies into one byte tensor with offsets (`pack`), which the DataLoader
pins. On the device nvCOMP decompresses the batch of standard zstd frames (its RAW bitstream
kind, which is what Zarr writes), torch undoes the predictor with cumulative sums modulo 256,
and an index gathers the windows' frames (`decode_on_device`). Only compressed bytes cross
the bus. Nothing falls back silently: a machine without CUDA or nvCOMP is told which.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from storage.dataset import CorruptFramesError, Dataset
from storage.shards import ChunkError

DECODES = ("cpu", "cuda")
PACKED_KEYS = ("chunk_data", "chunk_offsets", "frame_index", "chunk_frames", "predictor", "window")
# predictors as tensors travel (a DataLoader batch holds tensors); 0: none
PREDICTOR_CODES = {
    None: torch.tensor(0),
    "up": torch.tensor(1),
    "left": torch.tensor(2),
    "gradient": torch.tensor(3),
}
PREDICTOR_NAMES = {0: "", 1: "up", 2: "left", 3: "gradient"}


class DeviceDecodeError(RuntimeError):
    """GPU decoding asked for where it cannot run (the message says what is missing)."""


def check_device_decode() -> None:
    """Raise `DeviceDecodeError` in one line unless CUDA and nvCOMP are both here."""
    if not torch.cuda.is_available():
        raise DeviceDecodeError(
            "--decode cuda needs a CUDA GPU: torch sees none on this machine (use --decode cpu)"
        )
    try:
        from nvidia import nvcomp  # noqa: F401
    except ImportError as e:  # its own words: a missing libnvcomp.so.6 is not a missing module
        raise DeviceDecodeError(
            f"--decode cuda needs nvCOMP's Python module (nvidia.nvcomp), which failed to "
            f"import ({e}); pip install nvidia-nvcomp-cu13 (or -cu12 to match CUDA), which "
            "brings nvidia-libnvcomp"
        ) from None


class Packer:
    """Collects the compressed chunks of a batch's windows, each chunk once, for one transfer."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.bodies: list[np.ndarray] = []
        self.slots: dict[tuple[str, int], int] = {}
        self.index: list[np.ndarray] = []
        self.layout = None

    def add(self, episode: str, lo: int, hi: int) -> None:
        """Add window `[lo, hi)` of `episode`, its chunks' crc32c checked here, on the host.

        A failing chunk raises `CorruptFramesError` and adds nothing.
        """
        reader = self.ds.reader(episode)
        lay = reader.layout if reader is not None else None
        if lay is None or not lay.zstd or lay.image is not None:
            raise DeviceDecodeError(
                f"{episode}: stored with a codec the GPU path does not "
                "decode (zstd, optionally after the predictor, is needed)"
            )
        if self.layout is not None and (lay.chunk, lay.predictor, lay.shape[1:]) != (
            self.layout.chunk,
            self.layout.predictor,
            self.layout.shape[1:],
        ):
            raise DeviceDecodeError(f"{episode}: chunks or predictor differ from the batch's")
        try:
            found = [(c, reader.body(c, data), a, b) for c, data, a, b in reader.chunks(lo, hi)]
        except ChunkError as bad:
            raise self.ds.corrupt_error(episode, bad.lo, bad.hi, bad.why) from None
        self.layout = lay
        for c, body, a, b in found:
            if (episode, c) not in self.slots:
                self.slots[episode, c] = len(self.bodies)
                self.bodies.append(body)
            self.index.append(np.arange(a, b) + (self.slots[episode, c] - c) * lay.chunk)

    def result(self, pin: bool = False) -> dict[str, object]:
        """The packed batch: `chunk_data`, `chunk_offsets`, `frame_index`, and the layout.

        `chunk_offsets` has n + 1 entries; `frame_index` gives, per output frame, its place in
        the decoded chunks (slot * chunk + frame in chunk). `pin`: packed into pinned memory.
        """
        sizes = np.array([len(b) for b in self.bodies], np.int64)
        data = torch.empty(int(sizes.sum()), dtype=torch.uint8, pin_memory=pin)
        if self.bodies:
            np.concatenate(self.bodies, out=data.numpy())
        index = np.concatenate(self.index) if self.index else np.zeros(0, np.int64)
        return {
            "chunk_data": data,
            "chunk_offsets": torch.from_numpy(np.r_[0, np.cumsum(sizes)]),
            "frame_index": torch.from_numpy(index),
            "chunk_frames": torch.tensor(self.layout.chunk if self.layout else 0),
            "predictor": PREDICTOR_CODES[self.layout.predictor if self.layout else None],
        }


def undo_predictor_torch(residuals: torch.Tensor, kind: str) -> torch.Tensor:
    """Frames (N, H, W, C) uint8 from `kind` residuals: cumulative sums modulo 256, any device."""
    if kind not in ("", "up", "left", "gradient"):
        raise ValueError(f"unknown predictor {kind!r}")
    if not kind:
        return residuals
    # summed in uint8: wraps modulo 256 exactly as the predictor did, with no wider copy
    # (int32, then cumsum's int64, held 8 GB on the device for a 0.45 GB batch)
    x = residuals
    if kind != "left":
        x = x.cumsum(-3, dtype=torch.uint8)
    if kind != "up":
        x = x.cumsum(-2, dtype=torch.uint8)
    return x


def _nvcomp_decompress(data: torch.Tensor, offsets: list[int], size: int) -> torch.Tensor:
    """Each zstd frame in `data` (on the device) decompressed, as one (n, size) uint8 tensor.

    nvCOMP 6's documented batch API: the compressed frames are carved out of `data` by one
    offset table (`as_arrays`), and decoded into one preallocated torch tensor, also carved
    by `as_arrays`, so the output's memory is torch's and outlives nvCOMP's views of it. One
    explicit CUDA stream, torch's current one, orders the host-to-device copy, the decode and
    what follows. A frame that decompresses to another size than a chunk's is an error.
    """
    from nvidia import nvcomp

    n = len(offsets) - 1
    out = torch.empty((n, size), dtype=torch.uint8, device=data.device)
    if n == 0:
        return out
    stream = torch.cuda.current_stream(data.device).cuda_stream
    codec = nvcomp.Codec(
        algorithm="Zstd",
        bitstream_kind=nvcomp.BitstreamKind.RAW,
        device_id=data.device.index or 0,
        cuda_stream=stream,
    )
    sizes = [b - a for a, b in itertools.pairwise(offsets)]
    srcs = nvcomp.as_arrays(data, offsets[:-1], sizes, cuda_stream=stream)
    dsts = nvcomp.as_arrays(
        out.view(-1), [i * size for i in range(n)], [size] * n, cuda_stream=stream
    )
    try:
        got = codec.decode(srcs, out=dsts)
    except ValueError as e:  # a frame larger than a chunk: nvCOMP refuses the fixed buffer
        raise CorruptFramesError(
            f"a chunk decompressed past {size} bytes on the GPU ({e})"
        ) from None
    # each frame's decompressed size, from its zstd header (a lookup; it waits for the
    # stream): a frame shorter than a chunk would leave part of nvCOMP's fixed output unset
    found = [codec.get_uncomp_buffer_size(srcs[i]) for i in range(n)]
    if any(f != size for f in found):
        raise CorruptFramesError(f"chunks decompress to {found} bytes on the GPU, {size} expected")
    del got  # `out` holds the frames; nvCOMP's batches only viewed `data` and `out`
    return out


def assemble(
    raw: torch.Tensor, batch: dict, frame_shape: tuple[int, ...], window: int
) -> torch.Tensor:
    """Windows (B, window, *frame_shape) from decompressed chunks `raw` (n, chunk bytes)."""
    kind = PREDICTOR_NAMES[int(batch["predictor"])]
    frames = undo_predictor_torch(raw.reshape(-1, *frame_shape), kind)
    index = batch["frame_index"].to(raw.device, non_blocking=True)
    return frames.index_select(0, index).view(-1, window, *frame_shape)


def decode_on_device(
    batch: dict, frame_shape: tuple[int, ...], window: int, device: torch.device
) -> torch.Tensor:
    """The batch's frames (B, window, *frame_shape) uint8 on `device`, from its packed chunks."""
    check_device_decode()
    data = batch["chunk_data"].to(device, non_blocking=True)
    size = int(batch["chunk_frames"]) * int(np.prod(frame_shape))
    raw = _nvcomp_decompress(data, batch["chunk_offsets"].tolist(), size)
    return assemble(raw, batch, frame_shape, window)
