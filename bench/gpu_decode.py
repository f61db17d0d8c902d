"""`make gpu-check-decode`: frames decoded on the GPU (`--decode cuda`), in one prepared run.

A small realistic dataset is processed on the spot, and random 96-frame windows are read
both ways:
- the CPU path, `Dataset.frames`;
- the GPU path: the host packs the chunks (crc32c checked) and nvCOMP and torch decode them
  on the device.

Reported: bit-exactness, frames/s decoded on the device, and host CPU time per frame of each
path. The carry has no room for duckdb beside nvCOMP, so no labels are read and no training
is fed here; `make gpu-check` times training.

    python -m bench.gpu_decode [--out DIR]      # on the device, through `make gpu-check-decode`
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.repack import build_source
from storage.dataset import open_dataset
from storage.fs import Root
from tasks.params import ProcessParams
from tasks.process_source import process_source
from training.device_decode import Packer, check_device_decode, decode_on_device

WINDOW, SHAPE = 96, (150, 280, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    a = ap.parse_args()
    check_device_decode()
    device = torch.device("cuda")
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        build_source(tmp / "source", a.episodes, a.frames)
        process_source(Root(str(tmp / "source")), Root(str(tmp / "data")), ProcessParams())
        ds = open_dataset(tmp / "data")
        rng = np.random.default_rng(0)
        batches = [
            [
                (
                    ds.episodes[rng.integers(len(ds.episodes))],
                    int(rng.integers(0, a.frames - WINDOW)),
                )
                for _ in range(a.batch)
            ]
            for _ in range(a.batches)
        ]

        def pack(batch: list[tuple[str, int]]) -> dict:
            packer = Packer(ds)
            for e, s in batch:
                packer.add(e, s, s + WINDOW)
            return packer.result()

        pack(batches[0]), ds.frames(*batches[0][0][:1], 0, WINDOW)  # warm: indexes, kernels
        decode_on_device(pack(batches[0]), SHAPE, WINDOW, device)
        t = time.process_time()
        want = [np.stack([ds.frames(e, s, s + WINDOW) for e, s in b]) for b in batches]
        cpu_host = time.process_time() - t
        t = time.process_time()
        packed = [pack(b) for b in batches]
        got = [decode_on_device(p, SHAPE, WINDOW, device) for p in packed]
        torch.cuda.synchronize()
        gpu_host = time.process_time() - t
        result["bit_exact"] = all(
            np.array_equal(g.cpu().numpy(), w) for g, w in zip(got, want, strict=True)
        )
        on_device = [{**p, "chunk_data": p["chunk_data"].to(device)} for p in packed]
        torch.cuda.synchronize()
        t = time.perf_counter()
        for p in on_device:
            decode_on_device(p, SHAPE, WINDOW, device)
        torch.cuda.synchronize()
        n = a.batches * a.batch * WINDOW
        result |= {
            "frames": n,
            "device_decode_frames_per_s": round(n / (time.perf_counter() - t), 1),
            "host_cpu_us_per_frame_cpu_path": round(cpu_host / n * 1e6, 1),
            "host_cpu_us_per_frame_gpu_path": round(gpu_host / n * 1e6, 1),
            "host_cpu_gpu_over_cpu": round(gpu_host / cpu_host, 3),
        }
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "gpu_decode.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
