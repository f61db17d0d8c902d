"""The sampler and the stream: catalog labels, subselection, sharding, resume, augmentation."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from storage.action_space import MOUSE_X_BINS, MOUSE_Y_BINS
from storage.dataset import open_dataset
from tests.training import seed_training_reference as ref
from training.data import (
    Labels,
    SamplerConfig,
    StreamState,
    WindowStream,
    augment,
    build_index,
    load_labels,
    make_loader,
    subselect,
)

CFG = SamplerConfig(window=8, jitter=4, split=None, keep_only=False)


def test_labels_come_from_the_catalog(processed: Path) -> None:
    ds = open_dataset(processed)
    lab = load_labels(processed, CFG)
    assert lab.episodes == ds.episodes and list(lab.lengths()) == [60] * 8
    cat = ds.catalog.to_table().sort_by([("episode", "ascending"), ("frame", "ascending")])
    np.testing.assert_array_equal(lab.keys[:, 0], cat["key_w"].to_numpy())
    np.testing.assert_array_equal(lab.clicks[:, 0], cat["lclick"].to_numpy())
    np.testing.assert_array_equal(MOUSE_X_BINS[lab.mouse_x], cat["mouse_x"].to_numpy())
    np.testing.assert_array_equal(MOUSE_Y_BINS[lab.mouse_y], cat["mouse_y"].to_numpy())
    # the default selection: kept episodes of the train split only
    files = ds.files.to_pandas()
    want = sorted(files[(files.split == "train") & files.keep].episode)
    assert load_labels(processed, SamplerConfig(window=8)).episodes == want
    assert pc.sum(cat["kill"]).as_py() == lab.kill.sum()


def test_windows_stay_inside_their_episode(processed: Path) -> None:
    idx = build_index(load_labels(processed, CFG), CFG)
    stream = WindowStream(processed, idx, batch_size=3)
    for epoch in range(3):
        _, _, start = stream.epoch_plan(epoch)
        assert (start >= 0).all() and (start + 8 <= 60).all()
    assert len(idx) == 8 * len(range(0, 60 - 8 - 4, 8))  # the seed's grid


def test_batches_hold_the_stored_frames_and_their_labels(processed: Path) -> None:
    lab = load_labels(processed, CFG)
    stream = WindowStream(processed, build_index(lab, CFG), batch_size=2)
    ds = open_dataset(processed)
    wins = stream.windows(0, 1)
    b = stream.read(wins)
    for i, (e, s) in enumerate(wins):
        np.testing.assert_array_equal(b["frames"][i].numpy(), ds.frames(lab.episodes[e], s, s + 8))
        rows = lab.offsets[e] + s + np.arange(8)
        np.testing.assert_array_equal(b["mouse_x"][i].numpy(), lab.mouse_x[rows])
    assert b["frames"].dtype == torch.uint8


def _take(it, n: int) -> list[tuple[int, int, list]]:
    out = []
    for _ in range(n):
        b = next(it)
        out.append((int(b["epoch"]), int(b["batch"]), b["frames"][:, 0, 0, 0, 0].tolist()))
    return out


def test_ranks_and_workers_split_an_epoch_without_overlap(processed: Path) -> None:
    idx = build_index(load_labels(processed, CFG), CFG)
    seen = []
    for rank in range(2):
        s = WindowStream(processed, idx, batch_size=2, rank=rank, world=2)
        for b in range(s.batches_per_epoch):
            seen += s.windows(0, b)
    assert len(seen) == len(set(seen)) == s.batches_per_epoch * 4
    assert len(idx) - len(seen) < 4  # only the last partial global batch is dropped


def test_loader_threads_yield_the_same_ordered_stream(processed: Path) -> None:
    idx = build_index(load_labels(processed, CFG), CFG)
    solo = _take(iter(WindowStream(processed, idx, batch_size=4)), 14)  # crosses an epoch
    loader = make_loader(WindowStream(processed, idx, batch_size=4), workers=2, pin=False)
    assert _take(iter(loader), 14) == solo
    assert solo[-1][0] == 1  # epoch 1 reached, reshuffled
    # resuming at (epoch 0, cursor 5) continues exactly where batch 5 was, with or without threads
    resumed = WindowStream(processed, idx, batch_size=4, state=StreamState(0, 0, 5))
    assert _take(iter(resumed), 9) == solo[5:]
    assert _take(iter(make_loader(resumed, workers=3, pin=False)), 9) == solo[5:]
    assert _take(iter(make_loader(resumed, workers=0, pin=False)), 9) == solo[5:]


def test_held_batches_are_never_overwritten(processed: Path) -> None:
    idx = build_index(load_labels(processed, CFG), CFG)
    stream = WindowStream(processed, idx, batch_size=3)
    batches = iter(make_loader(WindowStream(processed, idx, batch_size=3), workers=2, pin=False))
    held = [next(batches) for _ in range(6)]
    copies = [b["frames"].clone() for b in held]
    for _ in range(3 * stream.batches_per_epoch):  # many later batches, past an epoch
        next(batches)
    for g, (b, before) in enumerate(zip(held, copies, strict=True)):
        want = stream.batch(g)
        assert (int(b["epoch"]), int(b["batch"])) == (int(want["epoch"]), int(want["batch"]))
        assert torch.equal(b["frames"], before) and torch.equal(b["frames"], want["frames"])
        assert torch.equal(b["mouse_x"], want["mouse_x"])
    assert len({bytes(c.numpy().tobytes()) for c in copies}) == 6  # distinct: a reuse would show
    batches.close()
    with pytest.raises(StopIteration):
        next(batches)


def test_buffers_come_back_only_when_nothing_made_from_them_is_left(processed: Path) -> None:
    idx = build_index(load_labels(processed, CFG), CFG)
    stream = WindowStream(processed, idx, batch_size=3)
    batches = iter(make_loader(WindowStream(processed, idx, batch_size=3), workers=2, pin=False))
    # held three ways: a slice of the frames, a numpy view of them, a whole batch's frames
    first, second, third = next(batches), next(batches), next(batches)
    part = first["frames"][1:, 2]
    arr = second["frames"].numpy()[:, :4]
    whole = third["frames"]
    want = [stream.batch(g)["frames"] for g in range(3)]
    held = {b["frames"].data_ptr() for b in (first, second, third)}
    del first, second, third
    seen = set()
    for _ in range(4 * stream.batches_per_epoch):  # dropped at once: buffers go round
        b = next(batches)
        seen.add(b["frames"].data_ptr())
    assert len(seen) < 4 * stream.batches_per_epoch  # memory was reused
    assert torch.equal(part, want[0][1:, 2])
    np.testing.assert_array_equal(arr, want[1].numpy()[:, :4])
    assert torch.equal(whole, want[2])
    assert not held & seen  # never handed out again while anything made from them is held
    batches.close()


class _Counting(WindowStream):
    """A stream that records which global batches were read."""

    read_batches: list[int]

    def batch(self, g: int, pin: bool = False, buffers=None) -> dict:
        self.read_batches.append(g)
        return super().batch(g, pin, buffers)


def test_the_loader_reads_a_bounded_number_of_batches_ahead(processed: Path) -> None:
    idx = build_index(load_labels(processed, CFG), CFG)
    stream = _Counting(processed, idx, batch_size=2)
    stream.read_batches = []
    batches = iter(make_loader(stream, workers=2, pin=False))  # 2 threads x 2 ahead each
    for k in range(1, 7):
        next(batches)
        for f in list(batches.pending):
            f.result()  # whatever was started has finished: nothing else is running
        # the consumer took k batches; exactly 3 more are read and waiting, never more
        assert sorted(stream.read_batches) == list(range(k + 3))
    batches.close()


def test_a_failing_read_reaches_the_consumer(processed: Path) -> None:
    idx = build_index(load_labels(processed, CFG), CFG)
    stream = _Counting(processed, idx, batch_size=2)
    stream.read_batches = []

    def broken(windows, pin=False, buffers=None):
        raise OSError("disk gone")

    stream.read = broken
    for workers in (0, 2):
        batches = iter(make_loader(stream, workers=workers, pin=False))
        with pytest.raises(OSError, match="disk gone"):
            next(batches)
        with pytest.raises(StopIteration):  # closed: it never reads (ahead) again
            next(batches)


def test_a_buffer_given_back_during_an_allocation_does_not_block(monkeypatch) -> None:
    """A finalizer can run inside any allocation, even the pool's own (the collector)."""
    import training.stream as st

    pool = st.BufferPool(keep=2)
    spare = np.zeros(24, np.uint8)

    def allocating(shape):
        pool._release(spare)  # what a collected batch's finalizer does mid-allocation
        return np.zeros(shape, np.uint8)

    monkeypatch.setattr(st, "fresh_array", allocating)
    first = pool.tensor((2, 3, 4))
    assert first.shape == (2, 3, 4) and list(pool.free[24]) == [spare]
    again = pool.tensor((4, 6))  # a free buffer of the size is taken, whatever the shape
    assert again.data_ptr() == spare.ctypes.data and len(pool.free[24]) == 0
    other = pool.tensor((3,))  # another size: its own buffers, never the 24-byte one
    assert other.shape == (3,) and other.data_ptr() != spare.ctypes.data
    assert list(pool.free[24]) == [spare] and 3 not in pool.free


def test_subselection_draws_four_times_and_cycles_by_epoch(processed: Path) -> None:
    cfg = SamplerConfig(window=8, jitter=1, split=None, keep_only=False, keep_prob=0.5)
    idx = build_index(load_labels(processed, cfg), cfg)
    assert idx.n_rounds == 4  # the seed's data_list1..4, each fn_subselect-ed on its own
    rounds = [set(zip(e.tolist(), s.tolist(), strict=True)) for e, s in idx.rounds]
    assert len({frozenset(r) for r in rounds}) == 4 and len(set.union(*rounds)) > len(rounds[0])
    stream = WindowStream(processed, idx, batch_size=2)
    sizes = [stream.batches_in(e) for e in range(8)]
    assert sizes[:4] == sizes[4:] and len(set(sizes)) > 1  # epochs differ in length
    for epoch in range(8):  # jitter 1 keeps the grid starts: each epoch is its round, exactly
        got = {w for b in range(sizes[epoch]) for w in stream.windows(epoch, b)}
        assert got <= rounds[epoch % 4] and len(got) == 2 * sizes[epoch]
    it = iter(stream)
    order = [(int(b["epoch"]), int(b["batch"])) for b in itertools.islice(it, sum(sizes[:5]))]
    assert order == [(e, b) for e in range(5) for b in range(sizes[e])]
    # a resume in the middle of epoch 5 continues the same sequence
    resumed = iter(WindowStream(processed, idx, batch_size=2, state=StreamState(0, 5, 1)))
    b = next(resumed)
    assert (int(b["epoch"]), int(b["batch"])) == (5, 1)
    plain = build_index(load_labels(processed, CFG), CFG)
    assert plain.n_rounds == 1  # nothing random to draw: one selection for every epoch


def test_too_few_windows_is_a_clear_error(processed: Path) -> None:
    idx = build_index(load_labels(processed, CFG), CFG)
    with pytest.raises(ValueError, match="fewer than one batch"):
        WindowStream(processed, idx, batch_size=1000)


def _labels(weapons: list[str], kills: list[int], still: list[bool], n_ep: int = 1) -> Labels:
    n = len(weapons)
    keys = np.zeros((n, 11), np.uint8)
    keys[:, 0] = ~np.array(still)
    mx = np.where(still, 11, 14)
    return Labels(
        ["e"] * n_ep,
        np.array([0, n]),
        keys,
        np.zeros((n, 2), np.uint8),
        mx,
        np.full(n, 7),
        np.array(kills, np.uint8),
        np.zeros(n, np.uint8),
        np.array(weapons, object),
    )


def test_subselection_matches_the_seeds_rules() -> None:
    rng = np.random.default_rng(4)
    n, t = 1000, 96
    seg_w = rng.choice(["weapon_ak47", "weapon_m4a1", "mixed"], 10)
    seg_kill, seg_still = rng.random(10) < 0.3, rng.random(10) < 0.3
    weapons, kills, still = [], [], []
    for s in range(10):
        for j in range(t if s < 9 else n - 9 * t):
            w = seg_w[s] if seg_w[s] != "mixed" else ("weapon_ak47" if j % 2 else "weapon_glock")
            weapons.append(w)
            kills.append(int(seg_kill[s] and j == 5))
            still.append(bool(seg_still[s]))
    lab = _labels(weapons, kills, still)
    cfg = SamplerConfig.seed_subselect()
    start = np.arange(0, n - t - 20, t)
    draws = rng.random(len(start))
    got = np.flatnonzero(subselect(lab, np.zeros(len(start), int), start, cfg, draws))
    bounds = [*start.tolist(), 999]
    segs = [
        {
            "kills": sum(kills[a:b]),
            "ak_frames": sum("ak47" in w for w in weapons[a:b]),
            "still_wasd": sum(still[a:b]),
            "still_mouse": sum(still[a:b]),
            "first": i == 0,
        }
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]
    assert got.tolist() == ref.subselect(segs, 0.4, draws)


def test_augmentation_is_the_seeds_formula() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (6, 3, 4, 5, 3), dtype=torch.uint8)
    got = augment(x, gen)
    gen.manual_seed(5)  # replay the draws augment made, in its order
    on_b, f_b = torch.rand(6, generator=gen) < 0.5, torch.rand(6, generator=gen) * 0.6 + 0.7
    on_c, f_c = torch.rand(6, generator=gen) < 0.5, torch.rand(6, generator=gen) * 0.6 + 0.7
    assert on_b.any() and on_c.any() and not on_b.all()
    for i in range(6):
        want = ref.augment(x[i].numpy(), bool(on_b[i]), float(f_b[i]), bool(on_c[i]), float(f_c[i]))
        np.testing.assert_allclose(got[i].numpy(), want, atol=1.0001)
        assert (np.abs(got[i].numpy() - want) > 0).mean() < 0.01  # float32 vs float64 rounding


def test_a_kill_never_pulls_in_the_previous_episodes_segment() -> None:
    t, n = 96, 400
    weapons = ["weapon_ak47"] * (2 * n)
    kills = [0] * (2 * n)
    kills[n + 5] = 1  # in the first segment of the second episode
    lab = _labels(weapons, kills, [False] * (2 * n))
    lab.episodes, lab.offsets = ["e1", "e2"], np.array([0, n, 2 * n])
    start = np.arange(0, n - t - 20, t)
    ep = np.r_[np.zeros(len(start), int), np.ones(len(start), int)]
    starts = np.r_[start, start]
    cfg = SamplerConfig.seed_subselect(keep_prob=0.0)
    keep = subselect(lab, ep, starts, cfg, np.full(len(starts), 0.5))
    assert np.flatnonzero(keep).tolist() == [len(start)]  # only e2's first segment
    kills[n - 2] = 1  # the last frame the seed counts in e1's last segment (its 999)
    kills[n - 1] = 1  # and one it does not
    lab = _labels(weapons, kills, [False] * (2 * n))
    lab.episodes, lab.offsets = ["e1", "e2"], np.array([0, n, 2 * n])
    keep = subselect(lab, ep, starts, cfg, np.full(len(starts), 0.5))
    last_e1 = len(start) - 1
    assert keep[last_e1] and keep[last_e1 - 1] and keep[len(start)]
