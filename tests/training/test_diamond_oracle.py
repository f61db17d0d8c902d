"""csdm's world-model reads against DIAMOND's own code (`../shared/third_party/diamond`).

DIAMOND's `BatchSampler` draws the segments; DIAMOND's `CSGOHdf5Dataset` reads them from the
untarred HDF5 files and `collate_segments_to_batch` stacks them; csdm's `SegmentStream` and
`FullResDataset` read the same segments from the store. Values, padding and masks must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import diamond_code
from tests.training.test_diamond import LENGTH, reference, source, store  # noqa: F401
from training.diamond import FullResDataset
from training.segments import SegmentStream

pytestmark = pytest.mark.skipif(
    not diamond_code.available(), reason="DIAMOND's code not beside the checkout"
)


@pytest.fixture(scope="module")
def diamond(reference):  # noqa: F811
    data = diamond_code.diamond_data()
    full = data.CSGOHdf5Dataset(reference["full"])
    # the test episodes hold LENGTH frames, the public ones 1000 (DIAMOND's constant)
    full._length_one_episode = LENGTH
    full.num_steps = LENGTH * full.num_episodes
    full.lengths = np.full(full.num_episodes, LENGTH, dtype=np.int64)
    return data, full


def test_segments_equal_diamonds_batches_on_diamonds_draws(store, diamond) -> None:  # noqa: F811
    data, full = diamond
    ids = list(full._filenames)  # DIAMOND's episode order: by the number in the name
    # DIAMOND's own draw; its __init__ passes an argument torch's Sampler dropped after 2.4,
    # so the fields it would set are set here and `sample` runs as written
    sampler = object.__new__(data.BatchSampler)
    sampler.__dict__.update(
        dataset=full,
        rank=0,
        world_size=1,
        sample_weights=None,
        batch_size=6,
        seq_length=16,
        can_sample_beyond_end=False,
    )
    stream = SegmentStream(
        str(store), 16, 6, diamond=True, batch_fields=True, diamond_length=LENGTH
    )
    assert stream.episodes == ids
    np.random.seed(7)  # noqa: NPY002 (DIAMOND's sampler draws from numpy's global generator)
    for _ in range(4):
        draw = sampler.sample()
        want = data.collate_segments_to_batch(
            [full[data.SegmentId(ids[s.episode_id], int(s.start), int(s.stop))] for s in draw]
        )
        got = stream.read(
            np.array([s.episode_id for s in draw]),
            np.array([s.start for s in draw]),
            np.array([s.stop for s in draw]),
        )
        batch = data.Batch(**got)  # DIAMOND's own Batch takes csdm's fields as they are
        for field in ("obs", "act", "rew", "end", "trunc", "mask_padding"):
            a, b = getattr(batch, field), getattr(want, field)
            assert a.dtype == b.dtype and torch.equal(a, b), field
        assert [(i.episode_id, i.start, i.stop) for i in batch.segment_ids] == [
            (i.episode_id, i.start, i.stop) for i in want.segment_ids
        ]
        assert batch.info == want.info


def test_full_res_equals_diamonds_reader_padding_included(store, diamond) -> None:  # noqa: F811
    data, full = diamond
    ours = FullResDataset(str(store), length=LENGTH)
    for fid in full._filenames:
        for start, stop in ((-5, 3), (0, 16), (LENGTH - 4, LENGTH + 3), (10, 11)):
            want = full[data.SegmentId(fid, start, stop)]
            got = ours[data.SegmentId(fid, start, stop)]
            for field in ("obs", "act", "rew", "end", "trunc", "mask_padding"):
                a, b = getattr(got, field), getattr(want, field)
                assert a.dtype == b.dtype and torch.equal(a, b), (fid, start, field)
            assert (got.id.start, got.id.stop) == (want.id.start, want.id.stop)


def test_diamonds_test_split_is_the_published_one(store) -> None:  # noqa: F811
    from storage.diamond_layout import default_test_split, parse_test_split

    names = {
        line.strip() for line in diamond_code.TEST_SPLIT.read_text().splitlines() if line.strip()
    }
    assert parse_test_split(default_test_split(), "csdm's copy") == names
    every = SegmentStream(str(store), 8, 2, diamond=True, diamond_length=LENGTH).episodes
    train = SegmentStream(str(store), 8, 2, diamond=True, split="train", diamond_length=LENGTH)
    assert train.episodes == [e for e in every if e.rsplit("/", 1)[1] not in names]
