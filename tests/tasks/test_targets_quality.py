"""Mouse quantisation, quality verdicts and agreement with shipped labels."""

from __future__ import annotations

import numpy as np
import pytest

from storage.action_space import MOUSE_X_BINS, MOUSE_Y_BINS
from storage.catalog import COUNTERS
from storage.layout import EpisodeId
from storage.metadata import load_metadata
from tasks.actions.labels import key_matrix, label_batch
from tasks.actions.quality import QualityThresholds
from tasks.actions.targets import quantise
from tasks.synth.reference import MOUSE_X, MOUSE_Y, nearest
from tasks.synth.tree import disagreements, episode_seed
from tests.conftest import SMALL, known_agreement


def test_quantise_clips_and_sends_ties_to_the_lower_bin() -> None:
    values = np.array([-5000, -1000, -750, -750.0001, -3, -1, 0, 1, 3, 7, 749.9, 750, 99999.0])
    got = MOUSE_X_BINS[quantise(values, MOUSE_X_BINS)]
    assert got.tolist() == [-1000, -1000, -1000, -1000, -4, -2, 0, 0, 2, 4, 500, 500, 1000]
    # midpoints between every pair of bins go low, as the seed's min() over the list does
    for bins, ref_bins in ((MOUSE_X_BINS, MOUSE_X), (MOUSE_Y_BINS, MOUSE_Y)):
        mids = (bins[1:] + bins[:-1]) / 2
        np.testing.assert_array_equal(bins[quantise(mids, bins)], bins[:-1])
        np.testing.assert_array_equal(
            bins[quantise(mids, bins)], [nearest(float(m), ref_bins) for m in mids]
        )


def test_nan_mouse_falls_in_the_first_bin_like_the_seed() -> None:
    assert quantise(np.array([np.nan]), MOUSE_Y_BINS).tolist() == [0]
    assert nearest(float("nan"), MOUSE_Y) == MOUSE_Y[0]


def test_thresholds_scale_with_length_and_can_be_absolute() -> None:
    counters = {c: np.zeros(3, np.int64) for c in COUNTERS}
    counters["vel_static"][:] = [351, 36, 36]
    counters["obs_count"][:] = [0, 0, 1]
    n = np.array([1000, 100, 1000])
    keep, why = QualityThresholds().judge(counters, n)
    assert keep.tolist() == [False, False, False]
    assert why[0] == "vel_static=351>350" and why[1] == "vel_static=36>35"
    assert why[2] == "obs_count=1>0"
    keep, why = QualityThresholds(per_frames=None, obs_count=1).judge(counters, n)
    assert keep.tolist() == [False, True, True] and why[1] is None
    with pytest.raises(ValueError, match="mouse_static"):
        QualityThresholds(mouse_static=-1)


def test_key_matrix_ignores_unknown_names() -> None:
    import pyarrow as pa

    m = key_matrix(pa.array([["w", "r", "r"], [], ["jump", "3"]]))
    assert m.sum(axis=1).tolist() == [2, 0, 1]
    assert m[0, 0] and m[0, 10] and m[2, 9]


def test_agreement_with_shipped_labels(synth_tree) -> None:
    batch = load_metadata(synth_tree / "dataset_metadata" / "currvarsv2_dm_july2021_1_to_100.npy")
    files = label_batch(batch, QualityThresholds()).files.to_pandas().set_index("episode")
    # the synthesiser shipped some frames of each episode with a changed label, on purpose
    for ep in files.index:
        want = known_agreement(ep, "metadata")
        assert min(want.values()) < 1
        for col, value in want.items():
            assert files.loc[ep, col] == pytest.approx(value, abs=1e-12), (ep, col)
    # tamper with the shipped keys of the first episode's first 6 frames as well
    ship = batch.shipped
    keys = ship.column("ship_keys").to_pylist()
    for i in range(6):
        keys[i] = ["w", "a", "s", "d", "space", "1"]
    import pyarrow as pa

    batch.shipped = ship.set_column(0, "ship_keys", pa.array(keys, pa.list_(pa.string())))
    first, second = files.index[:2]
    files = label_batch(batch, QualityThresholds()).files.to_pandas().set_index("episode")
    changed = disagreements(
        SMALL.frames, episode_seed(SMALL, EpisodeId("dm_july2021", 1)), SMALL.disagree
    ).metadata["keys"]
    wrong = set(range(6)) | set(changed.tolist())
    assert first == "dm_july2021_1"
    assert files.loc[first, "agree_keys"] == pytest.approx(1 - len(wrong) / batch.lengths[0])
    assert files.loc[second, "agree_keys"] == known_agreement(second, "metadata")["agree_keys"]
