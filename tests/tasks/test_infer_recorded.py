"""Frames without memory-read state (csdm-agent recordings): clean labels are the actions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from storage.action_space import KEYS
from storage.metadata import MEMORY_FIELDS, game_state_table
from tasks.actions.infer import MEMORY_COUNTERS, infer_actions
from tasks.actions.quality import QualityThresholds
from tasks.synth import reference as ref
from tasks.synth.players import simulate

RNG = np.random.default_rng(7)


def _recording(n: int) -> tuple[list[dict], list[dict]]:
    """GSI-only states with random true inputs, and the inputs."""
    states, truth = [], []
    for i in range(n):
        alive = not 20 <= i < 30  # dead for ten frames
        keys = sorted({str(k) for k in RNG.choice(KEYS, RNG.integers(0, 4))}, key=KEYS.index)
        if i in (49, 50, 52):  # inference would fill 'w' into the skipped frame 50
            keys = sorted({*keys, "w"} - ({"w"} if i == 50 else set()), key=KEYS.index)
        t = {
            "keys": keys,
            "lclick": int(RNG.random() < 0.3),
            "rclick": int(RNG.random() < 0.1),
            "mouse_x": float(RNG.normal(0, 40)),
            "mouse_y": float(RNG.normal(0, 10)),
        }
        s = dict.fromkeys(MEMORY_FIELDS)
        s.update(
            gsi_team="CT",
            gsi_health=100 if alive else 0,
            gsi_kills=i // 40,
            gsi_deaths=int(i >= 20),
            found_active=alive and i != 50,
            tp_wasd=keys,
            tp_lclick=t["lclick"],
            tp_rclick=t["rclick"],
            tp_mouse_x=t["mouse_x"],
            tp_mouse_y=t["mouse_y"],
        )
        if alive and i != 50:  # a switch every 7 frames, and into frames 1 and 31: inference
            # would write a digit back, also onto the unprocessed frames 0 and 30
            rifle = i // 7 % 2 or i in (0, 30)
            weapon = ("weapon_ak47", "Rifle") if rifle else ("weapon_knife", "Knife")
            s["gsi_weap_active"] = {
                "name": weapon[0],
                "type": weapon[1],
                "ammo_clip": 30,
                "state": "active",
            }
            s["gsi_ammo"] = -1 if weapon[1] == "Knife" else 30
        states.append(s)
        truth.append(t)
    return states, truth


def test_recorded_frames_keep_the_recorders_labels() -> None:
    rec, truth = _recording(80)
    seed = simulate(60, seed=5)  # a scraped episode with memory state, in the same batch
    table = game_state_table(rec + seed, "x")
    got = infer_actions(table, np.array([80, 60]))
    keys = got.keys.to_pylist()
    mx = got.columns()["infer_mouse_x"].to_pylist()
    for i, t in enumerate(truth):
        if i in (0, 50, 51) or 20 <= i <= 30:  # the first, no weapon, dead, and each after
            assert (keys[i], got.lclick[i], got.rclick[i], mx[i]) == ([], 0, 0, 0.0), i
            assert not got.key_matrix[i].any(), i  # what the training targets are built from
            continue
        assert keys[i] == t["keys"], i  # no gap fill, no digit written back
        assert (got.lclick[i], got.rclick[i]) == (t["lclick"], t["rclick"]), i
        assert mx[i] == t["mouse_x"] and got.mouse_y[i] == t["mouse_y"], i
        np.testing.assert_array_equal(got.key_matrix[i], [k in t["keys"] for k in KEYS])
    want, counters = ref.infer_episode(seed)  # the scraped episode is untouched
    assert keys[80:] == [w[0] for w in want]
    assert got.mouse_x[80:].tolist() == [w[1] for w in want]
    # GSI health stands in for memory's: ten dead frames; skipped: 30 (after respawn), 50, 51
    assert got.counter("dead_skipped", 0) == 10 and got.counter("skipped", 0) == 3
    for c in MEMORY_COUNTERS:
        assert got.counter(c, 0) is None and got.counter(c, 1) == counters[c], c
        assert got.counter_column(c).to_pylist() == [None, counters[c]]


def test_unknown_counters_never_reject() -> None:
    rec, _ = _recording(40)
    got = infer_actions(game_state_table(rec, "x"), np.array([40]))
    strict = QualityThresholds(**dict.fromkeys(MEMORY_COUNTERS, 0), dead_skipped=1000)
    keep, reasons = strict.judge(got.counters, np.array([40]), got.unknown)
    assert keep.tolist() == [True], reasons
    got.counters["vel_static"][0] = 999  # a value that would reject, were it known
    assert strict.judge(got.counters, np.array([40]), {})[0].tolist() == [False]


def test_a_move_without_view_angles_or_labels_is_null() -> None:
    rec, _ = _recording(12)
    for s in rec:
        del s["tp_mouse_x"], s["tp_mouse_y"], s["tp_wasd"]
    cols = infer_actions(game_state_table(rec, "x"), np.array([12])).columns()
    assert cols["infer_mouse_x"].to_pylist()[1:] == [None] * 11
    assert isinstance(cols["infer_mouse_x"], pa.Array) and cols["infer_mouse_x"][0].as_py() == 0.0
