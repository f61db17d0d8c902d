"""Columnar game state: optional keys tolerated, malformed rows refused with their location."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from storage.metadata import (
    MEMORY_FIELDS,
    MalformedMetadataError,
    game_state_table,
    load_metadata,
)
from tasks.synth.players import simulate
from tasks.synth.tree import save_legacy_npy


def _states(n: int = 40, seed: int = 0, clean: bool = False) -> list[dict]:
    return simulate(n, seed, clean=clean)


def test_every_seed_field_is_kept_with_values() -> None:
    states = _states()
    t = game_state_table(states, "x")
    for key in ("gsi_health", "obs_health", "xy_rad", "vel_mag", "itemdef", "obs_fov", "height"):
        assert t.column(key).to_pylist() == [s[key] for s in states]
    found = [s["found_active"] for s in states]
    assert t.column("weap_name").to_pylist() == [
        s["gsi_weap_active"]["name"] if f else None for s, f in zip(states, found, strict=True)
    ]
    assert t.column("tp_wasd").null_count == len(states)


def test_optional_keys_are_tolerated() -> None:
    states = _states(10, clean=True)
    states[3] = {k: v for k, v in states[3].items() if k not in ("tp_wasd", "tp_lclick")}
    states[4]["found_active"] = False
    del states[4]["gsi_weap_active"], states[4]["gsi_ammo"]
    states[5]["gsi_weap_active"] = {"name": "weapon_taser", "ammo_clip": 1, "state": "active"}
    t = game_state_table(states, "x")
    assert t.column("tp_wasd")[3].as_py() is None and t.column("tp_lclick")[3].as_py() is None
    assert t.column("tp_wasd")[2].as_py() == states[2]["tp_wasd"]
    assert t.column("weap_name")[4].as_py() is None and t.column("gsi_ammo")[4].as_py() is None
    assert t.column("weap_name")[5].as_py() == "weapon_taser"
    assert t.column("weap_type")[5].as_py() is None


def test_memory_fields_may_be_null() -> None:
    """A recording made without reading the game's memory has those fields as None."""
    states = _states(6, clean=True)
    for s in states:
        s.update(dict.fromkeys(MEMORY_FIELDS))
    states[2].update(tp_rclick=1, tp_mouse_x=-12.5, tp_mouse_y=None)
    t = game_state_table(states, "x")
    for name in MEMORY_FIELDS:
        assert t.column(name).null_count == 6, name
    assert t.column("gsi_health").to_pylist() == [s["gsi_health"] for s in states]
    assert t.column("tp_rclick").to_pylist() == [None, None, 1, None, None, None]
    assert t.column("tp_mouse_x")[2].as_py() == -12.5 and t.column("tp_mouse_y")[2].as_py() is None
    with pytest.raises(MalformedMetadataError, match="frame 4: missing key 'height'"):
        del states[4]["height"]
        game_state_table(states, "x")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s[6].pop("xy_rad"), "frame 6: missing key 'xy_rad'"),
        (lambda s: s[2].__setitem__("gsi_health", "full"), "frame 2: gsi_health='full'"),
        (lambda s: s[3].__setitem__("gsi_kills", None), "frame 3: gsi_kills is None"),
        (lambda s: s[3].__setitem__("vel_mag", None), "frame 3: vel_mag is None while other"),
        (lambda s: s[4].__setitem__("obs_fov", 90.5), "frame 4: obs_fov=90.5"),
        (lambda s: s[5].pop("gsi_weap_active"), "frame 5: found_active is true but"),
        (lambda s: s.__setitem__(1, [1, 2]), "frame 1: game state is list, not a dict"),
        (lambda s: s[7].__setitem__("gsi_weap_active", "ak"), "frame 7: gsi_weap_active is str"),
    ],
)
def test_malformed_rows_are_refused_clearly(mutate, message: str) -> None:
    states = copy.deepcopy(_states(10, seed=3))
    for s in states:  # make every frame carry a weapon so the weapon cases are reachable
        s["found_active"] = True
        s.setdefault("gsi_weap_active", {"name": "weapon_ak47", "type": "Rifle"})
        s.setdefault("gsi_ammo", 30)
    mutate(states)
    with pytest.raises(MalformedMetadataError, match=message.replace("(", r"\(")):
        game_state_table(states, "file.npy [dm_x_1]")


def _dict_file(path: Path, episodes: dict[int, list[dict]]) -> Path:
    mapping = {}
    for num, states in episodes.items():
        for i, s in enumerate(states):
            mapping[f"file_num{num}_frame_{i}"] = [
                s,
                [["w"], 1.5, -2.0, 0, 1],
                np.array([0.0, 1.0]),
            ]
    save_legacy_npy(path, mapping)
    return path


def test_dict_layout_groups_orders_and_isolates_bad_episodes(tmp_path: Path) -> None:
    good, also_good = _states(30, seed=1), _states(25, seed=2)
    bad = _states(20, seed=3)
    bad[7] = {k: v for k, v in bad[7].items() if k != "vel_3"}
    gap = _states(10, seed=4)
    path = tmp_path / "currvarsv2_dm_july2021_1_to_100.npy"
    # insertion order is deliberately not (episode, frame) order
    mapping_eps = {5: also_good, 2: good, 9: bad}
    _dict_file(path, mapping_eps)
    raw = load_metadata(path)
    assert [e.name for e in raw.episodes] == ["dm_july2021_2", "dm_july2021_5"]
    assert raw.lengths.tolist() == [30, 25]
    assert raw.state.column("xy_rad").to_pylist() == [s["xy_rad"] for s in good + also_good]
    assert raw.shipped.column("ship_mouse_x").to_pylist() == [1.5] * 55
    assert raw.shipped.column("ship_death").to_pylist() == [1.0] * 55
    ((ep, why),) = raw.failures
    assert ep.name == "dm_july2021_9" and "frame 7: missing key 'vel_3'" in why
    # a gap in frame numbers is an error for that episode only
    mapping = {
        f"file_num3_frame_{i}": [s, [[], 0.0, 0.0, 0, 0], np.zeros(2)]
        for i, s in enumerate(gap)
        if i != 4
    }
    save_legacy_npy(path, mapping)
    raw = load_metadata(path)
    assert raw.episodes == [] and "missing [4]" in raw.failures[0][1]


def test_recording_layout(tmp_path: Path) -> None:
    states = _states(12, seed=5)
    rows = np.empty((12, 3), dtype=object)
    for i, s in enumerate(states):
        rows[i, 0] = np.zeros((150, 280, 3), np.uint8)
        rows[i, 1] = s
        rows[i, 2] = [["a"], 0.5, 0.25, 1, 0]
    path = tmp_path / "dm_sample_7.npy"
    save_legacy_npy(path, rows)
    raw = load_metadata(path)
    assert [e.name for e in raw.episodes] == ["dm_sample_7"]
    assert raw.state.column("vel_mag").to_pylist() == [s["vel_mag"] for s in states]
    assert raw.shipped.column("ship_keys").to_pylist() == [["a"]] * 12
    assert raw.shipped.column("ship_kill").null_count == 12


def test_game_state_conversion_is_arrow_native() -> None:
    t = game_state_table(_states(5), "x")
    assert t.schema.field("tp_wasd").type == pa.list_(pa.string())
    assert t.num_rows == 5
