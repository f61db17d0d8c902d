"""A plain per-frame re-statement of the seed's `dm_infer_actions.py` and target building.

Independent of `tasks/actions/` on purpose: it walks the frames of one episode one by one, over
the original `curr_vars` dicts, mutating per-frame action lists exactly as the seed does. The
synthetic source labels its episodes with it, and the conformance tests check csdm against it.
"""

from __future__ import annotations

import math

PI = math.pi
# a table: the seed's bins in one run, as its code lists them
MOUSE_X = [-1000.0, -500.0, -300.0, -200.0, -100.0, -60.0, -30.0, -20.0, -10.0, -4.0, -2.0,
           -0.0, 2.0, 4.0, 10.0, 20.0, 30.0, 60.0, 100.0, 200.0, 300.0, 500.0, 1000.0]  # fmt: skip
# a table: the seed's bins in one run, as its code lists them
MOUSE_Y = [-200.0, -100.0, -50.0, -20.0, -10.0, -4.0, -2.0, -0.0, 2.0, 4.0, 10.0, 20.0, 50.0,
           100.0, 200.0]  # fmt: skip
KEY_ORDER = ["w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r"]


def _heading(rel: float) -> str:
    if rel > (8 / 4) * PI - (2 * PI / 16) or rel <= (0 / 4) * PI + (2 * PI / 16):
        return "w"
    for k, name in enumerate(["wd", "d", "sd", "s", "as", "a", "wa"], start=1):
        if (k / 4) * PI - (2 * PI / 16) < rel <= (k / 4) * PI + (2 * PI / 16):
            return name
    return ""


def infer_episode(states: list[dict]) -> tuple[list[list], dict]:
    """Return per-frame `[keys, mouse_x, mouse_y, lclick, rclick]` and the seven counters."""
    acts = [[[], 0.0, 0.0, 0, 0] for _ in states]
    c = dict.fromkeys(
        [
            "dead_skipped",
            "skipped",
            "ram_gsi_disagree_hp",
            "ram_gsi_disagree_ammo",
            "obs_count",
            "mouse_static",
            "vel_static",
        ],
        0,
    )
    for i in range(1, len(states)):
        cur, prv = states[i], states[i - 1]
        if (
            cur["gsi_health"] == 0
            or prv["gsi_health"] == 0
            or not cur["found_active"]
            or not prv["found_active"]
        ):
            c["dead_skipped" if cur["obs_health"] == 0 else "skipped"] += 1
            continue
        if cur["obs_health"] != cur["gsi_health"] and prv["obs_health"] != cur["gsi_health"]:
            c["ram_gsi_disagree_hp"] += 1
        if cur["ammo_active"] != cur["gsi_ammo"] and prv["ammo_active"] != cur["gsi_ammo"]:
            c["ram_gsi_disagree_ammo"] += 1
        if cur["obs_mode"] != 4:
            c["obs_count"] += 1
        if abs(cur["xy_rad"] - prv["xy_rad"]) < 0.001:
            c["mouse_static"] += 1
        if cur["vel_mag"] < 0.01:
            c["vel_static"] += 1
        clean_keys = "tp_wasd" in cur
        clean_click = "tp_lclick" in cur
        keys = acts[i][0]

        if clean_keys:
            if "space" in cur["tp_wasd"]:
                keys.append("space")
        elif cur["vel_3"] > prv["vel_3"] + 150 and not -10.0 < cur["vel_3"] < 10.0:
            keys.append("space")

        if 0.1 < cur["height"] < 50 and i > 1:
            acts[i - 2][0].append("ctrl")

        wc, wp = cur["gsi_weap_active"], prv["gsi_weap_active"]
        if "type" in wc and "type" in wp and wc["type"] != wp["type"]:
            acts[i - 1][0].append({"Knife": "3", "Pistol": "2"}.get(wc["type"], "1"))

        item_switch = cur["itemdef"] != prv["itemdef"]
        if cur["obs_fov"] != prv["obs_fov"] and not item_switch:
            acts[i - 1][4] = 1

        if clean_click:
            acts[i][3] = cur["tp_lclick"]
        elif cur["ammo_active"] < prv["ammo_active"] and not item_switch:
            acts[i][3] = 1

        if clean_keys:
            if "r" in cur["tp_wasd"]:
                keys.append("r")
        elif cur["ammo_active"] > prv["ammo_active"] and not item_switch and i > 32:
            run = 0
            for j in range(10):
                run = run + 1 if acts[i - 32 + j][3] == 0 else 0
                if run > 4:
                    acts[i - 32 + j][0].append("r")
                    break

        dz = cur["zvert_rads"] - prv["zvert_rads"]
        dxy = cur["xy_rad"] - prv["xy_rad"]
        if dxy < -PI:
            dxy = 2 * PI + dxy
        if dxy > PI:
            dxy = dxy - 2 * PI
        fov = cur["obs_fov"] or 90
        acts[i][1] = dxy * (90 / fov) / 0.00096
        acts[i][2] = -dz * (90 / fov) / 0.00096

        rel = (2 * PI - prv["xy_rad"]) + cur["vel_theta_abs"]
        if rel > 2 * PI:
            rel -= 2 * PI
        head = _heading(rel)
        dv = cur["vel_mag"] - prv["vel_mag"]
        if clean_keys:
            keys.extend(k for k in "wasd" if k in cur["tp_wasd"])
        elif cur["vel_mag"] < 0.1:
            pass
        elif abs(dv) < 7:
            keys.extend(k for k in "wsad" if k in head)
            if "ctrl" not in keys:
                w = cur["gsi_weap_active"]
                if w["name"] == "weapon_awp" and cur["obs_scope"] == 1:
                    if cur["vel_mag"] < 60:
                        keys.append("shift")
                elif cur["vel_mag"] < 140:
                    keys.append("shift")
        elif cur["vel_mag"] > prv["vel_mag"]:
            keys.extend(k for k in "wsad" if k in head)
        elif cur["vel_mag"] < prv["vel_mag"] and dv < -70:
            opposite = {"w": "s", "s": "w", "a": "d", "d": "a"}
            keys.extend(opposite[k] for k in "wsad" if k in head)

    for i in range(1, len(states) - 3):
        for k in "wsad":
            if k not in acts[i][0] and k in acts[i - 1][0] and k in acts[i + 2][0]:
                acts[i][0].append(k)
    return acts, c


def nearest(value: float, bins: list[float]) -> float:
    """The bin closest to `value` after clipping to the range, as the seed picks it."""
    v = min(max(value, bins[0]), bins[-1])
    return min(bins, key=lambda b: abs(b - v))


def targets(states: list[dict], acts: list[list]) -> tuple[list, list, list]:
    """Per-frame `y` (51), `xaux` (54) and `helperarr` (2) as `dm_pretrain_process.py`."""
    ys, mice, auxs, helpers = [], [], [], []
    for i, (keys, mx, my, lc, rc) in enumerate(acts):
        qx, qy = nearest(mx, MOUSE_X), nearest(my, MOUSE_Y)
        y = [1.0 if k in keys else 0.0 for k in KEY_ORDER] + [float(lc), float(rc)]
        y += [1.0 if j == MOUSE_X.index(qx) else 0.0 for j in range(len(MOUSE_X))]
        y += [1.0 if j == MOUSE_Y.index(qy) else 0.0 for j in range(len(MOUSE_Y))]
        ys.append(y)
        mice.append([qx / 1000.0, qy / 200.0])
        aux = [0.0] * 54
        for j in range(3):
            if j > i - 1:
                break
            s = states[i - j - 1]
            block = (
                ys[i - j - 1][:13]
                + mice[i - j - 1]
                + [
                    s["gsi_health"] / 100,
                    s["ammo_active"] / 30,
                    1.0 if s["gsi_team"] == "CT" else 0.0,
                ]
            )
            aux[j * 18 : (j + 1) * 18] = block
        auxs.append(aux)
        h = [0.0, 0.0]
        if i > 0:
            cur, prv = states[i], states[i - 1]
            if cur["gsi_kills"] == prv["gsi_kills"] + 1 and cur["gsi_deaths"] == prv["gsi_deaths"]:
                h[0] = 1.0
            if cur["gsi_deaths"] == prv["gsi_deaths"] + 1 and cur["gsi_kills"] == prv["gsi_kills"]:
                h[1] = 1.0
        helpers.append(h)
    return ys, auxs, helpers
