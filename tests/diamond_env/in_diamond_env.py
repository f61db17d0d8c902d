"""Checks run inside DIAMOND's pinned environment (Python 3.10, torch 2.4.1, numpy 1.26.0).

`python in_diamond_env.py reader STORE`: csdm's reader, as installed there, reads a store;
prints what it read as JSON for the caller to compare with csdm's own environment.
`... compare DIAMOND_LOW CSDM_LOW`: DIAMOND's `Dataset` loads both low_res folders; prints
how many observation values differ. `... lowres STORE DIAMOND_LOW`: csdm's resize under
DIAMOND's torch equals DIAMOND's preparation.
`... trainer-data LOW_RES STORE FULL_RES`: DIAMOND's trainer's data wiring, with csdm's
`FullResDataset` as docs/world-models.md says, 4 forked workers; batches checked against
DIAMOND's own `CSGOHdf5Dataset` over the untarred files.
"""

import hashlib
import json
import sys
from pathlib import Path

DIAMOND_SRC = Path(__file__).resolve().parents[3] / "shared" / "third_party" / "diamond" / "src"
PIPELINE = ("zarr", "h5py", "duckdb", "prefect", "dask", "onnx", "onnxruntime", "matplotlib")


def _digest(a) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


def reader(store: str) -> None:
    from storage import open_dataset
    from storage.sidearrays import read_actions
    from training.data import SamplerConfig, load_labels
    from training.segments import SegmentStream

    loaded = [m for m in PIPELINE if m in sys.modules]
    ds = open_dataset(store)
    out = {
        "python": sys.version_info[:2],
        "pipeline_modules": loaded,
        "episodes": ds.episodes,
        "frames": {e: _digest(ds.frames(e, 3, 37)) for e in ds.episodes},
        "actions": {e: _digest(read_actions(ds.layout, e)) for e in ds.episodes},
        "labels": len(load_labels(store, SamplerConfig(8, 4, None, False)).episodes),
    }
    s = SegmentStream(store, 8, 3)
    out["segments"] = _digest(s.read(*s.segments(0))["obs"].numpy())
    print(json.dumps(out))


def _diamond():
    sys.path.insert(0, str(DIAMOND_SRC))
    import data

    return data


def compare(diamond_low: str, csdm_low: str) -> None:
    import numpy as np
    import torch

    data = _diamond()
    stats = {"differing": 0, "values": 0, "max_levels": 0.0}
    for split in ("train", "test"):
        a = data.Dataset(Path(diamond_low) / split, None)
        b = data.Dataset(Path(csdm_low) / split, None)
        a.load_from_default_path()
        b.load_from_default_path()
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys(), (sa.keys(), sb.keys())
        for k in sa:
            if isinstance(sa[k], np.ndarray):
                assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
            else:
                assert type(sa[k]) is type(sb[k]) and sa[k] == sb[k], (k, sa[k], sb[k])
        assert a.num_episodes > 0, split
        for i in range(a.num_episodes):
            ea, eb = a.load_episode(i), b.load_episode(i)
            for f in ("act", "rew", "end", "trunc"):
                x, y = getattr(ea, f), getattr(eb, f)
                assert x.dtype == y.dtype and torch.equal(x, y), (split, i, f)
            assert ea.info == eb.info, (ea.info, eb.info)
            # obs: the uint8 levels each file holds (the resize kernel's float rounding may
            # differ between the torch that exported and the one DIAMOND pins)
            x, y = (e.obs.add(1).div(2).mul(255).round() for e in (ea, eb))
            assert ea.obs.shape == eb.obs.shape and ea.obs.dtype == eb.obs.dtype
            differ = (x != y).sum().item()
            stats["differing"] += differ
            stats["values"] += x.numel()
            stats["max_levels"] = max(stats["max_levels"], (x - y).abs().max().item())
    print(json.dumps(stats))


def lowres(store: str, diamond_low: str) -> None:
    """Csdm's resize, run with DIAMOND's torch, against DIAMOND's preparation: bit for bit."""
    import torch

    from storage import open_dataset
    from training.diamond_obs import low_res

    data = _diamond()
    ds = open_dataset(store)
    checked = 0
    for split in ("train", "test"):
        d = data.Dataset(Path(diamond_low) / split, None)
        d.load_from_default_path()
        for i in range(d.num_episodes):
            ep = d.load_episode(i)
            name = ep.info["original_file_id"].rsplit("/", 1)[1][len("hdf5_") : -len(".hdf5")]
            mine = low_res(ds.frames(name), tuple(ep.obs.shape[-2:])).div(255).mul(2).sub(1)
            assert torch.equal(mine, ep.obs), name
            checked += 1
    print(checked)


def trainer_data(low_res: str, store: str, full_res: str) -> None:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from training.diamond import FullResDataset

    data = _diamond()
    # trainer.py:95 as docs/world-models.md patches it, then its own lines 108-115 and 150-160
    dataset_full_res = FullResDataset(store)
    train = data.Dataset(Path(low_res) / "train", dataset_full_res, "train_dataset", False, False)
    test = data.Dataset(Path(low_res) / "test", dataset_full_res, "test_dataset", True)
    train.load_from_default_path()
    test.load_from_default_path()
    sampler = data.BatchSampler(train, 0, 1, 2, 5)
    loader = DataLoader(
        dataset=train,
        collate_fn=data.collate_segments_to_batch,
        num_workers=4,
        persistent_workers=True,
        batch_sampler=sampler,
    )
    assert loader.multiprocessing_context is None or "fork" in str(loader.multiprocessing_context)
    oracle = data.CSGOHdf5Dataset(Path(full_res))

    def check(info: dict, sid, mask: torch.Tensor) -> None:
        # a segment's id is clipped to the episode; the full-res one was asked unclipped
        start = int(sid.start) - int(mask.int().argmax())
        fid = train.load_episode(sid.episode_id).info["original_file_id"]
        want = oracle[data.SegmentId(fid, start, start + len(mask))].obs
        assert torch.equal(info["full_res"], want), (fid, start)

    np.random.seed(0)  # noqa: NPY002 - DIAMOND's sampler draws from the global state
    batches = iter(loader)
    for _ in range(3):
        batch = next(batches)
        for info, sid, mask in zip(batch.info, batch.segment_ids, batch.mask_padding, strict=True):
            check(info, sid, mask)
    for start in (-3, -4, 995):  # padded on the left; the last frames
        seg = train[data.SegmentId(0, start, start + 5)]
        check(seg.info, seg.id, seg.mask_padding)
    segs = data.DatasetTraverser(test, 2, 5)
    assert sum(1 for _ in segs) > 0
    print("batches")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    commands = {
        "reader": reader,
        "compare": compare,
        "lowres": lowres,
        "trainer-data": trainer_data,
    }
    commands[cmd](*args)
