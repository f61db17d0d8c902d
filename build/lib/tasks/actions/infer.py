"""The seed's action inference (`dm_infer_actions.py`), vectorised over whole files.

Frames of many episodes are processed at once; look-back writes never cross an episode
because the seed only makes them from frames far enough into the episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.action_space import KEY_INDEX, KEYS

MOUSE_CONST = 0.00096  # yaw change in radians per unit of mouse input (the seed's const_1)
RELOAD_LOOKBACK = 32  # the seed searches for the 'r' press from 32 frames before the refill
RELOAD_SEARCH = 10
RELOAD_QUIET = 5  # frames without fire needed before a reload can be pressed
_R_SLOTS = RELOAD_SEARCH - RELOAD_QUIET + 1  # a frame can be picked by up to 6 refills
_N_SLOTS = 9 + _R_SLOTS + 4  # space, r, 4 movement, shift, weapon, ctrl, r..., 4 gap fills
_KEY_NAMES = pa.array(KEYS)
_W, _A, _S, _D = (KEY_INDEX[k] for k in "wasd")
# (lower, upper] bounds of the seven non-forward headings, computed exactly as the seed does.
_SECTORS = [
    ((k / 4) * np.pi - (2 * np.pi / 16), (k / 4) * np.pi + (2 * np.pi / 16)) for k in range(1, 8)
]
# Heading sectors 0..7 are w, wd, d, sd, s, as, a, wa; 8 is "no clear heading".
_HAS = {
    "w": np.array([1, 1, 0, 0, 0, 0, 0, 1, 0], bool),
    "s": np.array([0, 0, 0, 1, 1, 1, 0, 0, 0], bool),
    "a": np.array([0, 0, 0, 0, 0, 1, 1, 1, 0], bool),
    "d": np.array([0, 1, 1, 1, 0, 0, 0, 0, 0], bool),
}
# Counters computed from memory-read state: unknown (null) for an episode that has none.
MEMORY_COUNTERS = (
    "ram_gsi_disagree_hp",
    "ram_gsi_disagree_ammo",
    "obs_count",
    "mouse_static",
    "vel_static",
)


@dataclass
class InferredActions:
    """Per-frame actions in the seed's format plus per-episode quality counters."""

    keys: pa.ListArray  # the seed's ordered key list per frame (a reload can repeat 'r')
    key_matrix: np.ndarray  # (n, 11) bool, KEYS order
    mouse_x: np.ndarray  # float64, continuous
    mouse_y: np.ndarray
    lclick: np.ndarray  # int64
    rclick: np.ndarray
    processed: np.ndarray  # bool: frame passed the seed's alive/weapon check
    counters: dict[str, np.ndarray]  # COUNTERS -> int64 per episode
    unknown: dict[str, np.ndarray] = field(default_factory=dict)  # counter -> bool per episode

    def counter(self, name: str, episode: int) -> int | None:
        """One episode's counter; None when its inputs were not recorded."""
        if name in self.unknown and self.unknown[name][episode]:
            return None
        return int(self.counters[name][episode])

    def counter_column(self, name: str) -> pa.Array:
        """A counter per episode as int32, null where unknown."""
        mask = self.unknown.get(name)
        return pa.array(self.counters[name].astype(np.int32), mask=mask)

    def columns(self) -> dict[str, pa.Array | np.ndarray]:
        """The per-frame `infer_*` catalog columns (storage.catalog.INFERRED_FIELDS).

        A mouse move that could not be inferred (no memory-read view angles) is null.
        """
        return {
            "infer_keys": self.keys,
            "infer_mouse_x": pa.array(self.mouse_x, mask=np.isnan(self.mouse_x)),
            "infer_mouse_y": pa.array(self.mouse_y, mask=np.isnan(self.mouse_y)),
            "infer_lclick": self.lclick.astype(np.int8),
            "infer_rclick": self.rclick.astype(np.int8),
            "infer_processed": self.processed,
        }


def frame_index(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(episode, local frame)` of every row of episodes concatenated with these lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return episode, np.arange(len(episode)) - starts[episode]


def _prev(x: np.ndarray) -> np.ndarray:
    """Value at the previous frame (frame 0 sees itself; it is never processed)."""
    return np.concatenate([x[:1], x[:-1]])


def _later(x: np.ndarray, k: int) -> np.ndarray:
    """Value at frame i+k (False past the end): moves a write from frame i to frame i-k."""
    out = np.zeros_like(x)
    out[:-k] = x[k:]
    return out


def _np(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _contains(col: pa.ChunkedArray, key: str, n: int) -> np.ndarray:
    """Row-wise `key in list` for a list<string> column (null lists give False)."""
    arr = col.combine_chunks()
    hit = pc.equal(pc.list_flatten(arr), key).to_numpy(zero_copy_only=False)
    out = np.zeros(n, bool)
    out[pc.list_parent_indices(arr).to_numpy()[hit]] = True
    return out


def _gap_fill(has: np.ndarray, in_range: np.ndarray) -> np.ndarray:
    """The seed's sequential pass `has[i] |= has[i-1] and has[i+2]`, solved in closed form.

    Within the range, frame i ends up set iff some frame m <= i is set and every frame from
    m+1 to i sees the key two frames ahead; a frame whose look-ahead fails is a barrier.
    """
    n = len(has)
    idx = np.arange(n)
    ahead = np.zeros(n, bool)
    ahead[:-2] = has[2:]
    barrier = ~(in_range & ahead)
    last_barrier = np.maximum.accumulate(np.where(barrier, idx, -1))
    last_set = np.maximum.accumulate(np.where(has, idx, -1))
    return np.where(in_range, last_set >= last_barrier, has)


def _heading(rel: np.ndarray) -> np.ndarray:
    """Sector 0..8 of the velocity direction relative to the facing direction."""
    conds = [
        (rel > (8 / 4) * np.pi - (2 * np.pi / 16)) | (rel <= (0 / 4) * np.pi + (2 * np.pi / 16))
    ]
    conds += [(rel > lo) & (rel <= hi) for lo, hi in _SECTORS]
    return np.select(conds, np.arange(8), default=8)


def _valid(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).is_valid().to_numpy(zero_copy_only=False)


def infer_actions(state: pa.Table, lengths: np.ndarray) -> InferredActions:
    """Infer actions for consecutive episodes of `lengths` frames from their game state.

    Frames without memory-read state (csdm-agent recordings) infer nothing from it; when they
    carry clean labels (`tp_*`) those are their actions, untouched by inference.
    """
    n = state.num_rows
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.sum() != n:
        raise ValueError(f"episode lengths sum to {lengths.sum()}, table has {n} rows")
    episode, local = frame_index(lengths)

    gh, oh = _np(state, "gsi_health"), _np(state, "obs_health")
    found = _np(state, "found_active")
    ammo, itemdef, fov = _np(state, "ammo_active"), _np(state, "itemdef"), _np(state, "obs_fov")
    xy, zv = _np(state, "xy_rad"), _np(state, "zvert_rads")
    vel, v3 = _np(state, "vel_mag"), _np(state, "vel_3")
    p_ammo, p_xy, p_vel = _prev(ammo), _prev(xy), _prev(vel)
    gsi_ammo = state.column("gsi_ammo").fill_null(0).to_numpy()
    clean_keys = _valid(state, "tp_wasd")
    clean_click = _valid(state, "tp_lclick")
    tp_click = state.column("tp_lclick").fill_null(0).to_numpy().astype(np.int64)
    tp = {k: _contains(state.column("tp_wasd"), k, n) for k in ("w", "a", "s", "d", "r", "space")}
    # storage.metadata admits memory-read fields all set or all None, so one column tells
    mem = _valid(state, "xy_rad")
    pair = mem & _prev(mem)  # this frame and the one before have memory-read state

    # --- the seed's per-frame checks; frames it skips infer nothing of their own
    skip = (gh == 0) | (_prev(gh) == 0) | ~found | ~_prev(found)
    first = local == 0
    skipped_any = ~first & skip
    ok = ~first & ~skip
    dead = np.where(mem, oh == 0, gh == 0)  # the game's own health stands in for memory's
    flags = {
        "dead_skipped": skipped_any & dead,
        "skipped": skipped_any & ~dead,
        "ram_gsi_disagree_hp": ok & pair & (oh != gh) & (_prev(oh) != gh),
        "ram_gsi_disagree_ammo": ok & pair & (ammo != gsi_ammo) & (p_ammo != gsi_ammo),
        "obs_count": ok & mem & (_np(state, "obs_mode") != 4),
        "mouse_static": ok & pair & (np.abs(xy - p_xy) < 0.001),
        "vel_static": ok & mem & (vel < 0.01),
    }
    inferred = ok & ~clean_keys
    clean = ok & clean_keys
    # a csdm-agent recording (only its recorder writes tp_mouse_x): its labels are the truth
    recording = clean_keys & ~mem & _valid(state, "tp_mouse_x")
    recorded = ok & recording

    jump = pair & (v3 > _prev(v3) + 150) & ~((v3 > -10.0) & (v3 < 10.0))
    space = np.where(clean, tp["space"], inferred & jump)
    height = _np(state, "height")
    ctrl = _later(ok & mem & (height < 50) & (height > 0.1) & (local > 1), 2)

    wtype = pc.dictionary_encode(state.column("weap_type").combine_chunks())
    tcode = wtype.indices.fill_null(-1).to_numpy()
    p_tcode = _prev(tcode)
    switch = ok & (tcode >= 0) & (p_tcode >= 0) & (tcode != p_tcode)
    digit = np.full(n, -1, np.int8)  # written to the frame before the switch
    if switch.any():
        names = np.array(wtype.dictionary.to_pylist(), dtype=object)
        kind = np.where(switch, tcode, 0)
        digit_now = np.select(
            [switch & (names[kind] == "Knife"), switch & (names[kind] == "Pistol"), switch],
            [KEY_INDEX["3"], KEY_INDEX["2"], KEY_INDEX["1"]],
            default=-1,
        )
        digit[:-1] = digit_now[1:]
    ram_switch = itemdef != _prev(itemdef)

    rclick = _later(ok & pair & (fov != _prev(fov)) & ~ram_switch, 1).astype(np.int64)
    fired = ok & pair & ~clean_click & (ammo < p_ammo) & ~ram_switch
    lclick = np.where(ok & clean_click, tp_click, fired.astype(np.int64))

    r_clean = clean & tp["r"]
    refill = inferred & pair & (ammo > p_ammo) & ~ram_switch & (local > RELOAD_LOOKBACK)
    r_count = _reload_presses(np.flatnonzero(refill), lclick, n)

    xd = xy - p_xy
    xd = np.where(xd < -np.pi, (2 * np.pi) + xd, xd)
    xd = np.where(xd > np.pi, xd - (2 * np.pi), xd)
    ratio = 90 / np.where(fov == 0, 90, fov)
    mouse_x = np.where(ok, xd * ratio / MOUSE_CONST, 0.0)
    mouse_y = np.where(ok, -(zv - _prev(zv)) * ratio / MOUSE_CONST, 0.0)

    # Slots in the order the seed appends to a frame's list: while processing the frame
    # itself, then frame+1 (weapon key), frame+2 (crouch), later refills ('r'), the gap pass.
    slots = np.full((n, _N_SLOTS), -1, np.int8)
    slots[space, 0] = KEY_INDEX["space"]
    slots[r_clean, 1] = KEY_INDEX["r"]
    shift = _movement(state, inferred, vel, p_vel, p_xy, clean, tp, slots[:, 2:6])
    slots[shift, 6] = KEY_INDEX["shift"]
    slots[:, 7] = digit
    slots[ctrl, 8] = KEY_INDEX["ctrl"]
    for j in range(_R_SLOTS):
        slots[r_count > j, 9 + j] = KEY_INDEX["r"]

    # gap-filling pass over w, s, a, d on frames 1 .. len-4 of each episode
    in_range = (local >= 1) & (local <= lengths[episode] - 4) & ~recording
    km = np.zeros((n, len(KEYS)), bool)
    move = slots[:, 2:6]
    for j, key in enumerate((_W, _S, _A, _D)):
        has = (move[:, 0] == key) | (move[:, 1] == key) | (move[:, 2] == key) | (move[:, 3] == key)
        filled = _gap_fill(has, in_range)
        km[:, key] = filled
        slots[filled & ~has, 9 + _R_SLOTS + j] = key

    km[:, KEY_INDEX["space"]] = space
    km[:, KEY_INDEX["ctrl"]] = ctrl
    km[:, KEY_INDEX["shift"]] = shift
    km[np.flatnonzero(digit >= 0), digit[digit >= 0]] = True
    km[:, KEY_INDEX["r"]] = r_clean | (r_count > 0)

    if recording.any():  # the recorder's labels replace whatever inference wrote back
        truth = np.column_stack(
            [tp[k] if k in tp else _contains(state.column("tp_wasd"), k, n) for k in KEYS]
        )
        truth &= recorded[:, None]  # frames the seed skips get nothing, as in the public sets
        km[recording] = truth[recording]
        slots[recording] = -1
        slots[recording, : len(KEYS)] = np.where(truth[recording], np.arange(len(KEYS)), -1)
        rclick = np.where(recorded, state.column("tp_rclick").fill_null(0).to_numpy(), rclick)
        for name, v in (("tp_mouse_x", mouse_x), ("tp_mouse_y", mouse_y)):
            v[recorded] = state.column(name).to_numpy()[recorded]  # null stays unknown: NaN

    present = slots >= 0
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.count_nonzero(present, axis=1), out=offsets[1:])
    keys = pa.ListArray.from_arrays(pa.array(offsets), _KEY_NAMES.take(pa.array(slots[present])))

    counters = {
        k: np.bincount(episode[v], minlength=len(lengths)).astype(np.int64)
        for k, v in flags.items()
    }
    no_memory = np.bincount(episode, weights=mem, minlength=len(lengths)) == 0
    unknown = {k: no_memory for k in MEMORY_COUNTERS}
    return InferredActions(
        keys, km, mouse_x, mouse_y, lclick, rclick.astype(np.int64), ok, counters, unknown
    )


def _reload_presses(refills: np.ndarray, lclick: np.ndarray, n: int) -> np.ndarray:
    """Count of 'r' presses written back to each frame by the refills at `refills`.

    The seed scans frames i-32 .. i-23 and presses 'r' on the first frame that ends a run of
    five frames without fire, so candidates are i-28 .. i-23 with five quiet frames behind.
    """
    fire_run = np.concatenate([[0], np.cumsum(lclick != 0)])
    idx = np.arange(n)
    quiet = np.zeros(n, bool)
    k = idx[RELOAD_QUIET - 1 :]
    quiet[k] = fire_run[k + 1] - fire_run[k + 1 - RELOAD_QUIET] == 0
    offsets = np.arange(RELOAD_QUIET - 1, RELOAD_SEARCH) - RELOAD_LOOKBACK
    cand = refills[:, None] + offsets[None, :]
    ok = quiet[cand]
    hit = ok.any(axis=1)
    target = cand[hit, ok[hit].argmax(axis=1)]
    return np.bincount(target, minlength=n)


def _movement(
    state: pa.Table,
    inferred: np.ndarray,
    vel: np.ndarray,
    p_vel: np.ndarray,
    p_xy: np.ndarray,
    clean: np.ndarray,
    tp: dict[str, np.ndarray],
    out: np.ndarray,
) -> np.ndarray:
    """Fill the four movement key slots `out` (n, 4) and return the shift flags.

    Inferred frames append w, s, a, d (or their opposites when braking hard) by heading;
    frames with clean labels append w, a, s, d as recorded.
    """
    rel = (2 * np.pi - p_xy) + _np(state, "vel_theta_abs")
    rel = np.where(rel > 2 * np.pi, rel - 2 * np.pi, rel)
    sector = _heading(rel)
    has = {k: v[sector] for k, v in _HAS.items()}
    dv = vel - p_vel
    still = vel < 0.1
    steady = ~still & (np.abs(dv) < 7)
    speeding = ~still & ~steady & (vel > p_vel)
    braking = ~still & ~steady & ~speeding & (vel < p_vel) & (dv < -70)
    forward = inferred & (steady | speeding)
    counter = inferred & braking
    for j, (k, c) in enumerate((("w", "s"), ("s", "w"), ("a", "d"), ("d", "a"))):
        out[forward & has[k], j] = KEY_INDEX[k]
        out[counter & has[k], j] = KEY_INDEX[c]
    for j, k in enumerate("wasd"):  # clean labels keep the recorder's w, a, s, d order
        out[clean & tp[k], j] = KEY_INDEX[k]
    awp = pc.equal(state.column("weap_name"), "weapon_awp").fill_null(False).to_numpy()
    scoped = awp & (_np(state, "obs_scope") == 1)
    return inferred & steady & np.where(scoped, vel < 60, vel < 140)
