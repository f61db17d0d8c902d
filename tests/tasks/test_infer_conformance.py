"""Vectorised inference against the per-frame reference of the seed, frame by frame."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.catalog import COUNTERS
from storage.metadata import game_state_table
from tasks.actions.infer import infer_actions
from tasks.actions.targets import training_targets
from tasks.synth import reference as ref
from tasks.synth.players import EPISODE_KINDS, simulate
from tests.game_states import episodes


def _check(states_per_episode: list[list[dict]]) -> None:
    flat = [s for ep in states_per_episode for s in ep]
    lengths = np.array([len(ep) for ep in states_per_episode])
    table = game_state_table(flat, "test")
    got = infer_actions(table, lengths)
    y, xaux, helper = training_targets(got, table, lengths)
    keys = got.keys.to_pylist()
    offset = 0
    for e, states in enumerate(states_per_episode):
        want, counters = ref.infer_episode(states)
        want_y, want_aux, want_helper = ref.targets(states, want)
        for i, (k, mx, my, lc, rc) in enumerate(want):
            j = offset + i
            assert keys[j] == k, f"episode {e} frame {i}: keys {keys[j]} != {k}"
            assert got.mouse_x[j] == mx, f"episode {e} frame {i}: mouse_x"
            assert got.mouse_y[j] == my, f"episode {e} frame {i}: mouse_y"
            assert (got.lclick[j], got.rclick[j]) == (lc, rc), f"episode {e} frame {i}: clicks"
        for c in COUNTERS:
            assert got.counters[c][e] == counters[c], f"episode {e}: {c}"
        sl = slice(offset, offset + len(states))
        np.testing.assert_array_equal(y[sl], np.array(want_y))
        np.testing.assert_array_equal(xaux[sl], np.array(want_aux))
        np.testing.assert_array_equal(helper[sl], np.array(want_helper))
        offset += len(states)


@pytest.mark.parametrize("kind", EPISODE_KINDS)
@pytest.mark.parametrize("clean", [False, True])
def test_matches_reference_on_simulated_episodes(kind: str, clean: bool) -> None:
    _check([simulate(400, seed, kind=kind, clean=clean) for seed in range(3)])


def test_simulated_episodes_exercise_every_branch() -> None:
    states = [simulate(1000, seed, kind="normal") for seed in range(3)]
    acts = [ref.infer_episode(s)[0] for s in states]
    seen = {k for ep in acts for a in ep for k in a[0]}
    assert seen >= {"w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r"}
    assert any(a[3] for ep in acts for a in ep) and any(a[4] for ep in acts for a in ep)
    # yaw crosses north, so the wrap-around branch runs
    assert any(
        abs(b["xy_rad"] - a["xy_rad"]) > np.pi for s in states for a, b in itertools.pairwise(s)
    )
    # counter-strafes: the seed writes the key opposite to the heading while braking hard
    dv = [b["vel_mag"] - a["vel_mag"] for s in states for a, b in itertools.pairwise(s)]
    assert min(dv) < -70


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(episodes, min_size=1, max_size=4))
def test_matches_reference_on_adversarial_sequences(eps: list[list[dict]]) -> None:
    _check(eps)


def _frame(**over) -> dict:
    base = {
        "gsi_health": 100,
        "obs_health": 100,
        "gsi_kills": 0,
        "gsi_deaths": 0,
        "gsi_team": "T",
        "found_active": True,
        "ammo_active": 30,
        "itemdef": 7,
        "obs_mode": 4,
        "obs_fov": 90,
        "obs_scope": 0,
        "localpos1": 0.0,
        "localpos2": 0.0,
        "localpos3": 0.0,
        "height": 64.06,
        "vel_1": 0.0,
        "vel_2": 0.0,
        "vel_3": 0.0,
        "vel_mag": 0.0,
        "vel_theta_abs": 0.0,
        "xy_rad": 1.0,
        "zvert_rads": 1.5,
        "viewangle_xy": 0.0,
        "viewangle_vert": 0.0,
        "gsi_weap_active": {
            "name": "weapon_ak47",
            "type": "Rifle",
            "ammo_clip": 30,
            "state": "active",
        },
        "gsi_ammo": 30,
    }
    base.update(over)
    return base


def test_named_edge_cases() -> None:
    """Cases the issue names, built by hand so each is certainly present."""
    n = 60
    # reload refill at frame 33 (search starts at frame 1) and one at frame 20 (too early)
    reload = [_frame(ammo_active=5 if i < 33 else 30) for i in range(n)]
    reload[20] = _frame(ammo_active=30)
    reload[19] = _frame(ammo_active=5)
    # deaths on the first and last frames
    deaths = [_frame() for _ in range(n)]
    deaths[0] = _frame(gsi_health=0, obs_health=0, found_active=False)
    deaths[-1] = _frame(gsi_health=0, obs_health=0)
    # scope and weapon switch on the same frame, fov 0, taser, yaw across north
    mixed = [_frame(xy_rad=0.01 * i) for i in range(n)]
    mixed[10] = _frame(obs_fov=40, itemdef=9, gsi_weap_active={"name": "weapon_awp"})
    mixed[11] = _frame(obs_fov=0, xy_rad=6.27)
    mixed[12] = _frame(xy_rad=0.02, gsi_weap_active={"name": "weapon_taser", "ammo_clip": 1})
    # yaw steps of exactly 0.001 (mouse_static bound) and exactly +-pi (wrap bound)
    for i, xy in enumerate([0.0, 0.001, 0.0, np.pi, 0.0, np.pi, 2 * np.pi, np.pi]):
        mixed[30 + i] = _frame(xy_rad=xy)
    # walking speed bounds: 60 scoped with the AWP, 140 otherwise (shift is inferred below)
    awp = {"name": "weapon_awp", "type": "SniperRifle", "ammo_clip": 10, "state": "active"}
    for i, (v, scope) in enumerate([(60.0, 1), (60.0, 1), (59.9, 1), (140.0, 0), (140.0, 0)]):
        mixed[40 + i] = _frame(vel_mag=v, obs_scope=scope, gsi_weap_active=awp, itemdef=9)
    # clean labels
    clean = [_frame(tp_wasd=["w", "r", "space"], tp_lclick=i % 2, vel_mag=200.0) for i in range(n)]
    _check([reload, deaths, mixed, clean])
    acts, _ = ref.infer_episode(reload)
    assert sum(a[0].count("r") for a in acts) == 1
