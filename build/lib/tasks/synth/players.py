"""A simulated deathmatch player that yields per-frame game state in the seed's `curr_vars` form.

Physics follow Source-engine movement closely enough to exercise every branch of the seed's
inference: acceleration and friction, counter-strafes, crouch, jumps, flicks across north,
weapon switches (knife, pistol, AWP with scope, taser), fire, reloads, deaths and respawns,
and GSI values that lag the memory readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DT = 1 / 16
GRAVITY = 800.0
JUMP_SPEED = 301.99
ACCEL, FRICTION, STOP_SPEED = 5.5, 5.2, 80.0
STAND, CROUCH = 64.06, 46.04
# relative heading of each movement key combination (radians clockwise from facing)
# a table: direction -> angle, rows around the compass
_KEY_DIRS = {
    "w": 0.0, "wd": math.pi / 4, "d": math.pi / 2, "sd": 3 * math.pi / 4, "s": math.pi,
    "as": 5 * math.pi / 4, "a": 3 * math.pi / 2, "wa": 7 * math.pi / 4,
}  # fmt: skip
EPISODE_KINDS = ("normal", "idle", "desync", "thirdperson")


@dataclass(frozen=True)
class Weapon:
    """A weapon as GSI reports it plus the memory-side facts the simulation needs."""

    name: str
    type: str | None  # None: GSI omits `type` (the taser)
    itemdef: int
    clip: int  # -1: no ammo (knife)
    speed: float
    fire_every: int  # frames between shots
    reload_frames: int


WEAPONS = {
    "ak47": Weapon("weapon_ak47", "Rifle", 7, 30, 215.0, 2, 40),
    "awp": Weapon("weapon_awp", "SniperRifle", 9, 10, 200.0, 24, 58),
    "deagle": Weapon("weapon_deagle", "Pistol", 1, 7, 230.0, 4, 35),
    "knife": Weapon("weapon_knife", "Knife", 42, -1, 250.0, 8, 0),
    "taser": Weapon("weapon_taser", None, 31, 1, 220.0, 16, 0),
}
_SWITCH_TO = ("ak47", "ak47", "awp", "deagle", "knife", "taser")


def _xy_rad(viewangle_xy: float) -> float:
    """The recorder's yaw convention: 0 at north, growing clockwise to 2pi."""
    deg = -viewangle_xy if viewangle_xy < 0 else 360 - viewangle_xy
    return deg / 360 * (2 * np.pi)


def _vel_theta_abs(vel_1: float, vel_2: float) -> float:
    """The recorder's velocity direction (vel_2 is flipped), in [0, 2pi)."""
    return float(math.atan2(-vel_2, vel_1) % (2 * math.pi))


class Player:
    """One spectated player; call `step()` once per 1/16 s frame."""

    def __init__(self, rng: np.random.Generator, kind: str = "normal", clean: bool = False):
        if kind not in EPISODE_KINDS:
            raise ValueError(f"episode kind must be one of {EPISODE_KINDS}, got {kind!r}")
        self.rng, self.kind, self.clean = rng, kind, clean
        self.team = "CT" if rng.random() < 0.5 else "T"
        self.kills, self.deaths = int(rng.integers(0, 30)), int(rng.integers(0, 30))
        self.yaw = float(rng.uniform(-180, 180))
        self.pitch, self.yaw_rate = 0.0, 0.0
        self.flick_left, self.flick_rate = 0, 0.0
        self.history: list[dict] = []
        self.t = 0
        self._spawn()
        self.dead_for = 0

    # --- lifecycle -------------------------------------------------------------------------
    def _spawn(self) -> None:
        rng = self.rng
        self.pos = np.array([rng.uniform(-2000, 1600), rng.uniform(-1000, 3000), 0.0])
        self.vel = np.zeros(2)
        self.vz, self.height, self.health = 0.0, STAND, 100
        self.weapon = WEAPONS["ak47"] if rng.random() < 0.8 else WEAPONS["awp"]
        self.ammo = {k: w.clip for k, w in WEAPONS.items()}
        self.keys, self.keys_left = "", 0
        self.walk = self.crouch = self.trigger = False
        self.fov, self.cooldown, self.reload_left = 90, 0, 0
        self.alive, self.loading = True, 1

    def _die(self) -> None:
        self.alive, self.health, self.deaths = False, 0, self.deaths + 1
        self.dead_for = int(self.rng.integers(18, 40))
        self.vel[:] = 0

    # --- one frame ---------------------------------------------------------------------------
    def step(self) -> dict:
        """Advance one frame and return its `curr_vars` dict."""
        self.t += 1
        pressed: list[str] = []
        if not self.alive:
            self.dead_for -= 1
            if self.dead_for <= 0:
                self._spawn()
        else:
            pressed = self._act()
        mem = self._memory_reading()
        self.history.append(mem)
        return self._with_gsi(mem, pressed)

    def _act(self) -> list[str]:
        rng = self.rng
        pressed: list[str] = []
        idle = self.kind == "idle" and (self.t % 300) < 260
        if self.loading:
            self.loading -= 1
        # movement intent: hold a key combination for a while, sometimes walk or crouch
        self.keys_left -= 1
        if self.keys_left <= 0:
            self.keys = "" if idle or rng.random() < 0.15 else str(rng.choice(list(_KEY_DIRS)))
            self.keys_left = int(rng.integers(4, 40))
            self.walk = rng.random() < 0.15
            self.crouch = rng.random() < 0.1
        pressed += list(self.keys)
        if self.crouch:
            pressed.append("ctrl")
        on_ground = self.pos[2] <= 0.0
        if on_ground and not idle and rng.random() < 0.02:
            self.vz = JUMP_SPEED
            pressed.append("space")
        self._move(on_ground)
        self._aim(idle)
        pressed += self._weapons(idle)
        # combat outcomes
        if self.trigger and rng.random() < 0.03:
            self.kills += 1
        if rng.random() < 0.008:
            self.health -= int(rng.integers(8, 45))
            if self.health <= 0:
                self._die()
        return pressed

    def _move(self, on_ground: bool) -> None:
        speed = np.hypot(*self.vel)
        if on_ground and speed > 0.1:  # friction
            drop = max(speed, STOP_SPEED) * FRICTION * DT
            self.vel *= max(speed - drop, 0.0) / speed
        top = self.weapon.speed * (0.5 if self.fov < 90 else 1.0)
        top *= 0.34 if self.crouch else 0.52 if self.walk else 1.0
        if self.keys:
            heading = _xy_rad(self.yaw) + _KEY_DIRS[self.keys]
            wish = np.array([math.cos(heading), math.sin(heading)])
            add = top - float(self.vel @ wish)
            if add > 0:
                self.vel += min(ACCEL * top * DT, add) * wish
        self.pos[:2] += self.vel * DT
        if not (-2200 < self.pos[0] < 1800 and -1100 < self.pos[1] < 3100):  # ran into a wall
            self.pos[:2] = np.clip(self.pos[:2], [-2199, -1099], [1799, 3099])
            self.vel[:] = 0
        if self.pos[2] > 0 or self.vz > 0:
            self.vz -= GRAVITY * DT
            self.pos[2] = max(self.pos[2] + self.vz * DT, 0.0)
            if self.pos[2] == 0.0:
                self.vz = 0.0
        target = CROUCH if self.crouch else STAND
        self.height += float(np.clip(target - self.height, -9.0, 9.0))

    def _aim(self, idle: bool) -> None:
        rng = self.rng
        if idle:
            self.yaw_rate = 0.0
        elif self.flick_left > 0:
            self.flick_left -= 1
            self.yaw_rate = self.flick_rate
        elif rng.random() < 0.03:
            self.flick_left = int(rng.integers(1, 4))
            self.flick_rate = float(rng.choice([-1, 1]) * rng.uniform(15, 60))
        else:
            self.yaw_rate = 0.8 * self.yaw_rate + float(rng.normal(0, 2.0))
        self.yaw = (self.yaw + self.yaw_rate + 180) % 360 - 180
        if not idle:
            self.pitch = float(np.clip(self.pitch + rng.normal(0, 1.0), -60, 60))

    def _weapons(self, idle: bool) -> list[str]:
        rng = self.rng
        pressed: list[str] = []
        w = self.weapon
        key = next(k for k, v in WEAPONS.items() if v is w)
        if self.reload_left > 0:
            self.reload_left -= 1
            if self.reload_left == 0:
                self.ammo[key] = w.clip
        if self.cooldown > 0:
            self.cooldown -= 1
        if not idle and self.reload_left == 0 and rng.random() < 0.01:
            nxt = str(rng.choice(_SWITCH_TO))
            if WEAPONS[nxt] is not w:
                self.weapon, self.fov = WEAPONS[nxt], 90
                return pressed
        if w.name == "weapon_awp" and rng.random() < 0.04:  # right click cycles the zoom
            self.fov = {90: 40, 40: 10, 10: 90}[self.fov]
        if rng.random() < 0.06:
            self.trigger = not self.trigger and not idle
        if self.trigger:
            pressed.append("lclick")
            if self.cooldown == 0 and self.reload_left == 0 and self.ammo[key] != 0:
                if w.clip > 0:
                    self.ammo[key] -= 1
                self.cooldown = w.fire_every
        want_reload = 0 <= self.ammo[key] < w.clip and w.reload_frames and not self.trigger
        if want_reload and self.reload_left == 0 and (self.ammo[key] == 0 or rng.random() < 0.02):
            self.reload_left = w.reload_frames
            pressed.append("r")
        return pressed

    # --- what the recorder saw ---------------------------------------------------------------
    def _memory_reading(self) -> dict:
        w = self.weapon
        key = next(k for k, v in WEAPONS.items() if v is w)
        vel_1, vel_2 = float(self.vel[0]), -float(self.vel[1])
        height = self.height if self.rng.random() > 0.005 else 0.0  # the seed's zero glitch
        third = self.kind == "thirdperson" and 20 <= self.t % 400 < 50
        return {
            "obs_health": max(self.health, 0),
            "obs_fov": self.fov if self.alive else 90,
            "obs_scope": int(self.fov < 90),
            "obs_mode": 5 if third else 4,
            "localpos1": float(self.pos[0]),
            "localpos2": float(self.pos[1]),
            "localpos3": float(self.pos[2]),
            "height": float(height),
            "vel_1": vel_1,
            "vel_2": vel_2,
            "vel_3": float(self.vz),
            "vel_mag": float(np.sqrt(vel_1**2 + vel_2**2)),
            "viewangle_vert": float(self.pitch),
            "viewangle_xy": float(self.yaw),
            "zvert_rads": (-self.pitch + 90) / 360 * (2 * np.pi),
            "xy_rad": _xy_rad(self.yaw),
            "vel_theta_abs": _vel_theta_abs(vel_1, vel_2),
            "itemdef": w.itemdef,
            "ammo_active": self.ammo[key],
            "_weapon": w,
            "_alive": self.alive and not self.loading,
            "_reloading": self.reload_left > 0,
            "_kills": self.kills,
            "_deaths": self.deaths,
        }

    def _with_gsi(self, mem: dict, pressed: list[str]) -> dict:
        """Attach GSI fields, which arrive a frame or more after the memory readings."""
        lag = (
            int(self.rng.integers(3, 6)) if self.kind == "desync" else int(self.rng.random() < 0.4)
        )
        old = self.history[max(0, len(self.history) - 1 - lag)]
        cv = {k: v for k, v in mem.items() if not k.startswith("_")}
        w: Weapon = old["_weapon"]
        cv.update(
            gsi_team=self.team,
            gsi_health=old["obs_health"],
            gsi_kills=old["_kills"],
            gsi_deaths=old["_deaths"],
            found_active=bool(old["_alive"]),
        )
        if old["_alive"]:
            weap = {"name": w.name, "ammo_clip": old["ammo_active"], "state": "active"}
            if old["_reloading"]:
                weap["state"] = "reloading"
            if w.type is not None:
                weap["type"] = w.type
            cv["gsi_weap_active"] = weap
            cv["gsi_ammo"] = -1 if w.type == "Knife" else old["ammo_active"]
        if self.clean:
            cv["tp_wasd"] = [k for k in ("w", "a", "s", "d", "r", "space") if k in pressed]
            cv["tp_lclick"] = int("lclick" in pressed)
        return cv


def simulate(n_frames: int, seed: int, kind: str = "normal", clean: bool = False) -> list[dict]:
    """Game state of one episode of `n_frames` frames, deterministic in `seed`."""
    player = Player(np.random.default_rng(seed), kind=kind, clean=clean)
    return [player.step() for _ in range(n_frames)]
