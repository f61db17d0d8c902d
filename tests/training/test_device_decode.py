"""GPU decoding up to the hand-off, here without a GPU; end to end where CUDA is present.

The device's two steps are restated on the CPU: zstd (imagecodecs in place of nvCOMP) and
torch's predictor inverse, then the gather. The frames must equal the CPU path's, bit for bit.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from storage.codecs import PredictorCodec
from storage.dataset import CorruptFramesError, open_dataset
from training.data import SamplerConfig, WindowStream, build_index, load_labels, to_device
from training.device_decode import (
    DeviceDecodeError,
    assemble,
    check_device_decode,
    undo_predictor_torch,
)

CSDM = str(Path(sys.executable).with_name("csdm"))
CUDA = torch.cuda.is_available()


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["up", "left", "gradient"]),
    st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 12), st.integers(1, 4)).flatmap(
        lambda s: arrays(np.uint8, s)
    ),
)
def test_torchs_inverse_undoes_the_codecs_encode(kind: str, a: np.ndarray) -> None:
    residuals = torch.from_numpy(PredictorCodec(kind=kind).encode_array(a))
    assert torch.equal(undo_predictor_torch(residuals, kind), torch.from_numpy(a))


def _streams(root: Path, t: int = 24, batch: int = 6):
    cfg = SamplerConfig(window=t, jitter=4, split=None, keep_only=False)
    index = build_index(load_labels(root, cfg), cfg)
    return (
        WindowStream(root, index, batch),
        WindowStream(root, index, batch, decode="cuda"),
        index,
    )


def _decode_like_the_device(batch: dict) -> torch.Tensor:
    """The device's decode with CPU zstd standing in for nvCOMP; the rest is its own code."""
    data, offsets = batch["chunk_data"].numpy(), batch["chunk_offsets"].tolist()
    raw = np.stack(
        [
            np.frombuffer(imagecodecs.zstd_decode(data[a:b]), np.uint8)
            for a, b in itertools.pairwise(offsets)
        ]
    )
    return assemble(torch.from_numpy(raw), batch, (150, 280, 3), int(batch["window"]))


def test_packed_batches_decode_to_the_cpu_paths_frames(processed: Path) -> None:
    cpu, gpu, _ = _streams(processed)
    for b in range(3):
        wins = cpu.windows(0, b)
        want, got = cpu.read(wins), gpu.read(wins)
        assert "frames" not in got and got["chunk_data"].dtype == torch.uint8
        # only compressed bytes travel: a fraction of the chunks' decoded size
        decoded = (len(got["chunk_offsets"]) - 1) * int(got["chunk_frames"]) * 150 * 280 * 3
        assert got["chunk_data"].numel() < 0.8 * decoded
        assert torch.equal(_decode_like_the_device(got), want["frames"])
        for k in ("keys", "clicks", "mouse_x", "mouse_y", "kill", "death"):
            assert torch.equal(got[k], want[k]), k


def test_a_corrupt_chunk_is_caught_on_the_host(processed: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(processed, root)
    victim = open_dataset(root).episodes[0]
    (shard,) = [p for p in (root / "frames.zarr" / victim / "c").rglob("*") if p.is_file()]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # inside the first chunk
    shard.write_bytes(bytes(data))
    _, gpu, index = _streams(root)
    e = index.labels.episodes.index(victim)
    with pytest.raises(CorruptFramesError, match=rf"episode {victim}, frames 0-15: .*crc32c"):
        gpu.read([(e, 0)])
    gpu.on_corrupt = "skip"
    got = gpu.read([(e, 0), (e + 1, 0)])
    assert got["corrupt_episodes"] == [victim] and len(got["keys"]) == 1


@pytest.mark.skipif(CUDA, reason="checks the message a machine without CUDA gets")
def test_without_cuda_one_line_says_what_is_missing(processed: Path, tmp_path: Path) -> None:
    with pytest.raises(DeviceDecodeError, match="needs a CUDA GPU: torch sees none"):
        check_device_decode()
    _, gpu, _ = _streams(processed)
    with pytest.raises(DeviceDecodeError, match="needs a CUDA GPU"):  # never a silent fallback
        to_device(gpu.read(gpu.windows(0, 0)), torch.device("cpu"))
    r = subprocess.run(
        [CSDM, "train", str(processed), "--run", str(tmp_path / "run"), "--decode", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--decode cuda needs a CUDA GPU" in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.skipif(not CUDA, reason="needs CUDA and nvCOMP (bench/gpu_check.py runs it)")
def test_frames_decoded_on_the_gpu_are_bit_exact(processed: Path) -> None:
    cpu, gpu, _ = _streams(processed)
    device = torch.device("cuda")
    for b in range(3):
        wins = cpu.windows(0, b)
        got = to_device(gpu.read(wins), device)["frames"]
        assert torch.equal(got.cpu(), cpu.read(wins)["frames"])
