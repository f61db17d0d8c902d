"""`make gpu-check-decode`: frames decoded on the GPU (`--decode cuda`), in one prepared run.

A small realistic dataset is processed on the spot, and random 96-frame windows are read
both ways:
- the CPU path, `Dataset.frames`;
- the GPU path: the host packs the chunks (crc32c checked) and nvCOMP and torch decode them
  on the device.

Steps, each under a time budget, each written to `$OUT/gpu_decode.json` as it ends (so a
failure at one still returns the others and its reason in one line): import; nvCOMP against
the CPU's zstd on 224 chunks, bit for bit; windows against the CPU path, bit for bit, with
host CPU time per frame of each path; frames/s decoded on the device and its peak memory;
the paper network's training rate fed by `csdm train --decode cuda` against compute alone;
`csdm encode --view full --device cuda` with the tests' tiny encoder, frames/s.
The budgets add up to under 10 minutes.

    python -m bench.gpu_decode [--out DIR]      # on the device, through `make gpu-check-decode`
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import imagecodecs
import numpy as np
import torch

from bench.device_steps import Steps
from bench.repack import build_source
from bench.train import fed_against_compute
from storage.dataset import open_dataset
from storage.fs import Root
from tasks.params import ProcessParams
from tasks.process_source import process_source
from training.device_decode import (
    Packer,
    _nvcomp_decompress,
    check_device_decode,
    decode_on_device,
)
from training.train import TrainConfig

WINDOW, SHAPE = 96, (150, 280, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=6, help="loader threads while training")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    a = ap.parse_args()
    steps = Steps(Path(a.out), "gpu_decode.json")
    state: dict = {}

    def imports() -> dict:
        from nvidia import nvcomp  # first: the carry's libnvcomp.so.6 loads without a GPU

        state["nvcomp"] = nvcomp.__version__
        check_device_decode()
        state["device"] = torch.device("cuda")
        return {
            "device": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "nvcomp": nvcomp.__version__,
        }

    if steps.run("import", 45, imports) is None:
        steps.result["steps"]["import"]["nvcomp_imported"] = state.get("nvcomp")
        steps.write()
        return
    device = state["device"]
    tmp_ = tempfile.TemporaryDirectory()
    tmp = Path(tmp_.name)

    def data() -> dict:
        build_source(tmp / "source", a.episodes, a.frames)
        process_source(Root(str(tmp / "source")), Root(str(tmp / "data")), ProcessParams())
        state["ds"] = open_dataset(tmp / "data")
        return {"episodes": len(state["ds"].episodes)}

    if steps.run("data", 120, data) is None:
        return
    ds = state["ds"]

    def chunks() -> dict:
        # 224 chunks decompressed by nvCOMP against the CPU's zstd, bit for bit
        bodies, raws = [], []
        for e in ds.episodes:
            reader = ds.reader(e)
            for c, blob, _a, _b in reader.chunks(0, reader.layout.shape[0]):
                body = reader.body(c, blob)
                bodies.append(np.asarray(body))
                raws.append(np.frombuffer(imagecodecs.zstd_decode(bytes(body)), np.uint8))
                if len(bodies) == 224:
                    break
            if len(bodies) == 224:
                break
        size = len(raws[0])
        offsets = np.r_[0, np.cumsum([len(b) for b in bodies])].tolist()
        data = torch.from_numpy(np.concatenate(bodies)).to(device)
        got = _nvcomp_decompress(data, offsets, size).cpu().numpy()
        same = all(np.array_equal(g, r) for g, r in zip(got, raws, strict=True))
        return {"chunks": len(bodies), "bit_exact": bool(same)}

    steps.run("nvcomp_vs_cpu_zstd", 60, chunks)
    rng = np.random.default_rng(0)
    batches = [
        [
            (ds.episodes[rng.integers(len(ds.episodes))], int(rng.integers(0, a.frames - WINDOW)))
            for _ in range(a.batch)
        ]
        for _ in range(a.batches)
    ]

    def pack(batch: list[tuple[str, int]]) -> dict:
        packer = Packer(ds)
        for e, s in batch:
            packer.add(e, s, s + WINDOW)
        return packer.result()

    def windows() -> dict:
        decode_on_device(pack(batches[0]), SHAPE, WINDOW, device)  # warm: kernels
        t = time.process_time()
        want = [np.stack([ds.frames(e, s, s + WINDOW) for e, s in b]) for b in batches]
        cpu_host = time.process_time() - t
        t = time.process_time()
        packed = [pack(b) for b in batches]
        got = [decode_on_device(p, SHAPE, WINDOW, device) for p in packed]
        torch.cuda.synchronize()
        gpu_host = time.process_time() - t
        state["packed"] = packed
        n = a.batches * a.batch * WINDOW
        exact = all(np.array_equal(g.cpu().numpy(), w) for g, w in zip(got, want, strict=True))
        return {
            "bit_exact": bool(exact),
            "host_cpu_us_per_frame_cpu_path": round(cpu_host / n * 1e6, 1),
            "host_cpu_us_per_frame_gpu_path": round(gpu_host / n * 1e6, 1),
            "host_cpu_gpu_over_cpu": round(gpu_host / cpu_host, 3),
        }

    if steps.run("windows_vs_cpu_path", 90, windows) is None:
        return

    def throughput() -> dict:
        on_device = [{**p, "chunk_data": p["chunk_data"].to(device)} for p in state["packed"]]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        for p in on_device:
            decode_on_device(p, SHAPE, WINDOW, device)
        torch.cuda.synchronize()
        n = a.batches * a.batch * WINDOW
        return {
            "frames": n,
            "device_decode_frames_per_s": round(n / (time.perf_counter() - t), 1),
            "peak_device_memory_mb": round(torch.cuda.max_memory_allocated(device) / 1e6, 1),
            "frames_mb_per_batch": round(a.batch * WINDOW * int(np.prod(SHAPE)) / 1e6, 1),
        }

    steps.run("decode_throughput", 60, throughput)

    def train_fed() -> dict:
        cfg = TrainConfig.preset_config("paper")
        cfg = replace(
            cfg,
            steps=a.train_steps + 1,
            batch_size=a.batch,
            workers=a.workers,
            decode="cuda",
            log_every=1,
            ckpt_every=10**9,
            sampler=replace(cfg.sampler, split=None, keep_only=False),
        )
        return fed_against_compute(tmp / "data", tmp / "run", cfg, a.train_steps, device)

    steps.run("train_fed_by_gpu_decode", 150, train_fed)

    def encode_full_res() -> dict:
        # `csdm encode --view full --device cuda`: frames decoded on the GPU, then encoded
        from tasks.encode import encode_episode, plan_encode

        target = "tests.encoders:tiny"
        jobs = plan_encode(str(tmp / "data"), target, "full", "tiny", device="cuda", batch=64)
        torch.cuda.synchronize()
        t = time.perf_counter()
        results = [encode_episode(j) for j in jobs]
        secs = time.perf_counter() - t
        n = sum(ds.n_frames(e) for e in ds.episodes)
        from storage.latents import as_tensor, open_latent
        from tests.encoders import tiny

        e = ds.episodes[0]
        arr = open_latent(ds.layout, "tiny", e)
        got = as_tensor(arr, arr[0:16]).float()
        rgb = torch.from_numpy(np.ascontiguousarray(ds.frames(e, 0, 16)[..., ::-1]))
        with torch.no_grad():
            want = tiny().eval()(rgb.permute(0, 3, 1, 2).float() / 255 * 2 - 1)
        return {
            "statuses": sorted({r.status for r in results}),
            "encode_frames_per_s": round(n / secs, 1),
            "max_abs_diff_vs_cpu_encoder": float((got - want).abs().max()),
        }

    steps.run("encode_full_res_cuda", 60, encode_full_res)
    tmp_.cleanup()


if __name__ == "__main__":
    main()
