"""Split assignment is deterministic, honours the fraction and reads DIAMOND's split file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.splits import SplitSpec, read_split_file

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "diamond_test_split.txt"


def test_seeded_fraction_is_deterministic_and_about_right() -> None:
    eps = [f"dm_july2021_{i}" for i in range(1, 5001)]
    a = [SplitSpec(test_fraction=0.1, seed=3).split_of(e) for e in eps]
    assert a == [SplitSpec(test_fraction=0.1, seed=3).split_of(e) for e in eps]
    assert 400 < a.count("test") < 600
    b = [SplitSpec(test_fraction=0.1, seed=4).split_of(e) for e in eps]
    assert a != b
    assert {SplitSpec().split_of(e) for e in eps} == {"train"}


def test_split_file(tmp_path: Path) -> None:
    f = tmp_path / "split.txt"
    f.write_text("# test set\nhdf5_dm_july2021_3.hdf5\n\ndm_july2021_expert_7\n")
    spec = read_split_file(f)
    assert spec.split_of("dm_july2021_3") == "test" and spec.split_of("dm_july2021_30") == "train"
    assert spec.split_of("dm_july2021_expert_7") == "test"
    f.write_text("hdf5_dm_july2021_3.hdf5\nnot an episode\n")
    with pytest.raises(ValueError, match=r"split.txt:2: 'not an episode'"):
        read_split_file(f)


@pytest.mark.skipif(not SHARED.exists(), reason="shared/ data not beside the checkout")
def test_diamond_split_file() -> None:
    spec = read_split_file(SHARED)
    assert len(spec.test_episodes) == 500
    assert spec.split_of("dm_july2021_3") == "test" and spec.split_of("dm_july2021_4") == "train"


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError):
        SplitSpec(test_fraction=1.5)
    with pytest.raises(ValueError):
        SplitSpec(test_fraction=0.2, test_episodes=frozenset({"a_1"}))
