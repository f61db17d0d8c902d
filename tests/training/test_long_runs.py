"""World-model readers in long runs: forked DataLoader workers on any store, bounded caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from storage import dataset as dataset_module
from storage.dataset import open_dataset
from tests.training.test_diamond import LENGTH, reference, source, store  # noqa: F401
from training.diamond import FullResDataset, SegmentId
from training.segments import SegmentStream

IDS = [
    SegmentId("100-120/hdf5_dm_july2021_100.hdf5", -2, 6),
    SegmentId("1-20/hdf5_dm_july2021_2.hdf5", 3, 11),
    SegmentId("1-20/hdf5_dm_july2021_12.hdf5", LENGTH - 4, LENGTH + 4),
]


def _where(kind: str, store, request) -> str:  # noqa: F811
    if kind == "folder":
        return str(store)
    if kind == "s3":
        import fsspec

        bucket = request.getfixturevalue("bucket")
        fs = fsspec.filesystem("s3")
        for p in sorted(store.rglob("*")):
            if p.is_file():
                fs.put_file(str(p), f"{bucket[5:]}/out/{p.relative_to(store).as_posix()}")
        return f"{bucket}/out"
    from storage.hub_repo import parse_target
    from tasks.publish import publish

    request.getfixturevalue("hub")
    publish(store, parse_target("hf://datasets/team/cs-dm")[0])
    return "hf://datasets/team/cs-dm"


@pytest.mark.parametrize("kind", ["folder", "s3", "hub"])
def test_forked_workers_read_what_the_parent_reads(store, request, kind: str) -> None:  # noqa: F811
    url = _where(kind, store, request)
    full = FullResDataset(url, length=LENGTH)
    want = [full[i] for i in IDS]  # the parent's store and its clients are open: then fork
    loader = DataLoader(
        full,
        sampler=IDS,
        batch_size=None,
        collate_fn=lambda s: s,
        num_workers=2,
        multiprocessing_context="fork",
    )
    got = list(loader)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.obs, b.obs) and torch.equal(a.act, b.act)
        assert torch.equal(a.mask_padding, b.mask_padding)
    segs = SegmentStream(url, 6, 2)
    first = segs.read(*segs.segments(0))  # opened in the parent
    loader = DataLoader(segs, batch_size=None, num_workers=2, multiprocessing_context="fork")
    batches = {}
    for batch in loader:
        batches[int(batch["batch"])] = batch
        if len(batches) == 4:
            break
    assert torch.equal(batches[0]["obs"], first["obs"])
    for g, batch in batches.items():
        again = segs.read(*segs.segments(g))
        assert torch.equal(batch["obs"], again["obs"]) and torch.equal(batch["act"], again["act"])


def test_reader_caches_stay_within_their_byte_budget(store, monkeypatch) -> None:  # noqa: F811
    ds = open_dataset(store)
    one = ds.reader(ds.episodes[0]).footprint()
    monkeypatch.setattr(dataset_module, "READER_CACHE_BYTES", 2 * one)
    ds = open_dataset(store)
    for ep in ds.episodes:  # part of one chunk of each: the scratch buffer case
        got = ds.frames(ep, 1, 3)
        assert got.shape[0] == 2
        assert ds._reader_bytes <= 2 * one and len(ds._readers) <= 2
    assert len(ds.episodes) > 2
    # an evicted episode reads the same when it comes back
    first = ds.episodes[0]
    np.testing.assert_array_equal(ds.frames(first, 1, 3), open_dataset(store).frames(first, 1, 3))
