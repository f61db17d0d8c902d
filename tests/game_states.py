"""Hypothesis strategies for adversarial `curr_vars` sequences."""

from __future__ import annotations

import math

from hypothesis import strategies as st

TWO_PI = 2 * math.pi
# Values on and next to the seed's sector bounds, north, and the wrap point.
_EDGES = [(k / 4) * math.pi + s * (2 * math.pi / 16) for k in range(9) for s in (-1, 1)]
# 0.0 vs 0.001 sits exactly on the mouse_static bound; 0.0 vs pi exactly on the wrap bound.
ANGLES = st.one_of(
    st.sampled_from([0.0, 0.001, math.pi, TWO_PI, TWO_PI - 0.0005]),
    st.sampled_from(_EDGES),
    st.floats(0.0, TWO_PI, allow_nan=False),
)
WEAPONS = st.sampled_from(
    [
        {"name": "weapon_ak47", "type": "Rifle", "ammo_clip": 3, "state": "active"},
        {"name": "weapon_awp", "type": "SniperRifle", "ammo_clip": 2, "state": "active"},
        {"name": "weapon_deagle", "type": "Pistol", "ammo_clip": 1, "state": "reloading"},
        {"name": "weapon_knife", "type": "Knife", "ammo_clip": 0, "state": "active"},
        {"name": "weapon_taser", "ammo_clip": 1, "state": "active"},  # GSI gives no type
    ]
)


@st.composite
def game_state(draw: st.DrawFn) -> dict:
    """One frame's `curr_vars`, drawn from small sets so that neighbours collide often."""
    found = draw(st.booleans().filter(lambda b: b) | st.booleans())
    s = {
        "gsi_health": draw(st.sampled_from([0, 57, 100])),
        "obs_health": draw(st.sampled_from([0, 57, 100])),
        "gsi_kills": draw(st.integers(0, 2)),
        "gsi_deaths": draw(st.integers(0, 2)),
        "gsi_team": draw(st.sampled_from(["CT", "T"])),
        "found_active": found,
        "ammo_active": draw(st.integers(-1, 3)),
        "itemdef": draw(st.sampled_from([7, 7, 7, 9, 42])),
        "obs_mode": draw(st.sampled_from([4, 4, 4, 5])),
        "obs_fov": draw(st.sampled_from([90, 90, 90, 40, 10, 0])),
        "obs_scope": draw(st.sampled_from([0, 1])),
        "localpos1": 1.0,
        "localpos2": 2.0,
        "localpos3": 3.0,
        "height": draw(st.sampled_from([64.06, 46.04, 50.0, 0.1, 0.0, 0.2])),
        "vel_1": 0.0,
        "vel_2": 0.0,
        "vel_3": draw(st.sampled_from([0.0, 5.0, -5.0, 10.0, -10.0, 151.0, 160.0, 301.99, -300.0])),
        "vel_mag": draw(
            st.one_of(
                st.sampled_from([0.0, 0.005, 0.05, 0.1, 59.9, 60.0, 139.9, 140.0, 215.0, 250.0]),
                st.floats(0.0, 260.0, allow_nan=False),
            )
        ),
        "vel_theta_abs": draw(ANGLES),
        "xy_rad": draw(ANGLES),
        "zvert_rads": draw(st.sampled_from([0.0, 1.0, math.pi / 2, math.pi])),
        "viewangle_xy": 0.0,
        "viewangle_vert": 0.0,
    }
    if found:
        s["gsi_weap_active"] = dict(draw(WEAPONS))
        s["gsi_ammo"] = draw(st.integers(-1, 3))
    if draw(st.integers(0, 9)) == 0:  # clean expert labels on some frames
        s["tp_wasd"] = draw(
            st.lists(st.sampled_from(["w", "a", "s", "d", "r", "space"]), unique=True)
        )
    if draw(st.integers(0, 9)) == 0:
        s["tp_lclick"] = draw(st.sampled_from([0, 1]))
    return s


episodes = st.lists(game_state(), min_size=1, max_size=80)
