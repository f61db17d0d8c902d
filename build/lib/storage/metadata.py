"""Metadata `.npy` files (both layouts) as one columnar Arrow table of game state."""

from __future__ import annotations

import gc
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.layout import EpisodeId, metadata_dataset, recording_episode
from storage.safepickle import load_npy

_FLOATS = (
    "localpos1",
    "localpos2",
    "localpos3",
    "height",
    "vel_1",
    "vel_2",
    "vel_3",
    "vel_mag",
    "vel_theta_abs",
    "xy_rad",
    "zvert_rads",
    "viewangle_xy",
    "viewangle_vert",
)
_INTS = (
    "gsi_health",
    "obs_health",
    "gsi_kills",
    "gsi_deaths",
    "ammo_active",
    "itemdef",
    "obs_mode",
    "obs_fov",
    "obs_scope",
)
# Read from the game's memory by the seed's recorder; csdm's own recorder never reads memory
# and writes them as None (null), which is accepted: inference and counters skip such frames.
MEMORY_FIELDS = frozenset(_FLOATS) | {
    "obs_health",
    "ammo_active",
    "itemdef",
    "obs_mode",
    "obs_fov",
    "obs_scope",
}
# Keys of `gsi_weap_active` kept as `weap_<key>` columns.
_WEAPON = {"name": pa.string(), "type": pa.string(), "ammo_clip": pa.int32(), "state": pa.string()}

GAME_STATE_SCHEMA = pa.schema(
    [pa.field(k, pa.float64(), nullable=k in MEMORY_FIELDS) for k in _FLOATS]
    + [pa.field(k, pa.int32(), nullable=k in MEMORY_FIELDS) for k in _INTS]
    + [
        pa.field("gsi_team", pa.string(), nullable=False),
        pa.field("found_active", pa.bool_(), nullable=False),
        pa.field("gsi_ammo", pa.int32()),  # absent when no active weapon was found
    ]
    + [pa.field(f"weap_{k}", t) for k, t in _WEAPON.items()]  # null: no weapon / no `type`
    + [
        pa.field("tp_wasd", pa.list_(pa.string())),  # clean key labels, expert recordings only
        pa.field("tp_lclick", pa.int32()),
        # csdm-agent recordings only: the true right click and mouse move (seed units)
        pa.field("tp_rclick", pa.int32()),
        pa.field("tp_mouse_x", pa.float64()),
        pa.field("tp_mouse_y", pa.float64()),
    ]
)

SHIPPED_SCHEMA = pa.schema(
    [
        pa.field("ship_keys", pa.list_(pa.string())),
        pa.field("ship_mouse_x", pa.float64()),
        pa.field("ship_mouse_y", pa.float64()),
        pa.field("ship_lclick", pa.float64()),
        pa.field("ship_rclick", pa.float64()),
        pa.field("ship_kill", pa.float64()),
        pa.field("ship_death", pa.float64()),
    ]
)


class MalformedMetadataError(ValueError):
    """A metadata row that lacks a key the seed relies on, or has the wrong type."""


@dataclass
class MetadataBatch:
    """Episodes of one metadata file, concatenated in (episode, frame) order."""

    source: str
    episodes: list[EpisodeId]
    lengths: np.ndarray  # frames per episode, same order
    state: pa.Table  # GAME_STATE_SCHEMA
    shipped: pa.Table | None  # SHIPPED_SCHEMA, when the file carries `infer_a` labels
    failures: list[tuple[EpisodeId, str]] = field(default_factory=list)


# every row has these keys; memory-read ones may hold None
_REQUIRED = tuple(f.name for f in GAME_STATE_SCHEMA if not f.nullable or f.name in MEMORY_FIELDS)
_OPTIONAL = ("gsi_ammo", "tp_wasd", "tp_lclick", "tp_rclick", "tp_mouse_x", "tp_mouse_y")
_get_required = operator.itemgetter(*_REQUIRED)


def _get_optional(row: dict) -> tuple:
    return (*map(row.get, _OPTIONAL), row.get("gsi_weap_active"))


_get_numbers = operator.itemgetter(1, 2, 3, 4)


def _locate_bad_row(rows: list[Any], label: str) -> MalformedMetadataError:
    """Name the first row that is not a dict or lacks a required key."""
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            return MalformedMetadataError(
                f"{label}: frame {i}: game state is {type(r).__name__}, not a dict"
            )
        for key in _REQUIRED:
            if key not in r:
                return MalformedMetadataError(f"{label}: frame {i}: missing key {key!r}")
    return MalformedMetadataError(f"{label}: unreadable game state")


def _convert(values: Any, typ: pa.DataType, nullable: bool) -> pa.Array:
    """Convert a column; ints are inferred then safely cast, so 90.5 is refused, not truncated."""
    if pa.types.is_integer(typ) or pa.types.is_boolean(typ):
        arr = pa.array(values)
        if not (
            pa.types.is_integer(arr.type)
            or pa.types.is_floating(arr.type)
            or pa.types.is_boolean(arr.type)
            or pa.types.is_null(arr.type)
        ):
            raise TypeError(f"{arr.type} values")
        arr = arr.cast(typ, safe=True)
    else:  # explicit types convert ~40x faster than inference for floats
        arr = pa.array(values, type=typ)
    if not nullable and arr.null_count:
        raise ValueError("None")
    return arr


_CONVERSION_ERRORS = (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowTypeError)


def _to_arrow(values: Any, typ: pa.DataType, key: str, label: str, nullable: bool) -> pa.Array:
    try:
        return _convert(values, typ, nullable)
    except _CONVERSION_ERRORS as e:
        for i, v in enumerate(values):  # slow path: only to name the bad row
            try:
                _convert([v], typ, nullable)
            except _CONVERSION_ERRORS:
                if v is None:
                    raise MalformedMetadataError(f"{label}: frame {i}: {key} is None") from None
                raise MalformedMetadataError(
                    f"{label}: frame {i}: {key}={v!r} is not a valid {typ}"
                ) from None
        raise MalformedMetadataError(f"{label}: column {key}: {e}") from None


def _transpose(rows: list[tuple], width: int) -> list[Any]:
    """Columns of a list of equal-length tuples (numpy's C loop beats zip(*rows) by ~3x)."""
    grid = np.empty((len(rows), width), dtype=object)
    try:
        grid[:] = rows
    except ValueError:  # some values are sequences themselves; the slow transpose copes
        return [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * width
    return [grid[:, j] for j in range(width)]


def _check_memory_all_or_none(cols: dict[str, pa.Array], label: str) -> None:
    """A row holds every memory-read value or none (a recording): a lone None is an error."""
    names = sorted(MEMORY_FIELDS)
    nulls = np.column_stack([cols[k].is_null().to_numpy(zero_copy_only=False) for k in names])
    partial = nulls.any(axis=1) & ~nulls.all(axis=1)
    if partial.any():
        i = int(np.flatnonzero(partial)[0])
        key = names[int(np.flatnonzero(nulls[i])[0])]
        raise MalformedMetadataError(
            f"{label}: frame {i}: {key} is None while other memory-read fields are set"
        )


def game_state_table(states: list[dict], label: str) -> pa.Table:
    """Columnar game state of consecutive frames; raises MalformedMetadataError with the row."""
    try:  # one C-level pass over the dicts, then a transpose
        rows = list(map(_get_required, states))
        extra = list(map(_get_optional, states))
    except (KeyError, TypeError, AttributeError):
        raise _locate_bad_row(states, label) from None
    required = _transpose(rows, len(_REQUIRED))
    optional = dict(
        zip((*_OPTIONAL, "gsi_weap_active"), _transpose(extra, len(_OPTIONAL) + 1), strict=True)
    )
    cols: dict[str, pa.Array] = {}
    for name, values in zip(_REQUIRED, required, strict=True):
        f = GAME_STATE_SCHEMA.field(name)
        cols[name] = _to_arrow(values, f.type, name, label, f.nullable)
    for name in _OPTIONAL:
        typ = GAME_STATE_SCHEMA.field(name).type
        cols[name] = _to_arrow(optional[name], typ, name, label, True)
    weapons = optional["gsi_weap_active"]
    found = cols["found_active"].to_numpy(zero_copy_only=False)
    missing = np.fromiter((w is None for w in weapons), bool, len(weapons))
    no_ammo = cols["gsi_ammo"].is_null().to_numpy(zero_copy_only=False)
    bad = found & (missing | no_ammo)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MalformedMetadataError(
            f"{label}: frame {i}: found_active is true but gsi_weap_active/gsi_ammo is missing"
        )
    _check_memory_all_or_none(cols, label)
    none = (None,) * len(_WEAPON)
    try:
        fields = [none if w is None else tuple(map(w.get, _WEAPON)) for w in weapons]
    except AttributeError:
        i = next(i for i, w in enumerate(weapons) if w is not None and not isinstance(w, dict))
        raise MalformedMetadataError(
            f"{label}: frame {i}: gsi_weap_active is {type(weapons[i]).__name__}, not a dict"
        ) from None
    for (k, typ), values in zip(_WEAPON.items(), _transpose(fields, len(_WEAPON)), strict=True):
        cols[f"weap_{k}"] = _to_arrow(values, typ, f"gsi_weap_active.{k}", label, nullable=True)
    if pc.any(pc.and_(cols["found_active"], cols["weap_name"].is_null())).as_py():
        raise MalformedMetadataError(f"{label}: an active weapon has no 'name'")
    return pa.table([cols[f.name] for f in GAME_STATE_SCHEMA], schema=GAME_STATE_SCHEMA)


def shipped_table(actions: list[Any], helpers: list[Any] | None, label: str) -> pa.Table:
    """Columnar `infer_a` labels `[keys, mouse_x, mouse_y, lclick, rclick]` and helper flags."""
    try:
        if any(len(a) != 5 for a in actions):
            raise ValueError
        keys = [a[0] for a in actions]
        parts = [keys, *_transpose(list(map(_get_numbers, actions)), 4)]
    except (TypeError, ValueError, IndexError):
        raise MalformedMetadataError(
            f"{label}: infer_a must be [keys, mouse_x, mouse_y, lclick, rclick] on every frame"
        ) from None
    names = SHIPPED_SCHEMA.names
    cols = [
        _to_arrow(v, SHIPPED_SCHEMA.field(n).type, n, label, nullable=False)
        for n, v in zip(names[:5], parts, strict=True)
    ]
    if helpers is None:
        cols += [pa.nulls(len(actions), pa.float64())] * 2
    else:
        try:
            h = np.concatenate(helpers).astype(np.float64).reshape(len(actions), 2)
        except (ValueError, TypeError):
            raise MalformedMetadataError(f"{label}: helperarr must be [kill, death]") from None
        cols += [pa.array(h[:, 0]), pa.array(h[:, 1])]
    return pa.table(cols, schema=SHIPPED_SCHEMA)


def _frame_keys(keys: list[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    parsed = pc.extract_regex(pa.array(keys, pa.string()), r"^file_num(?P<f>\d+)_frame_(?P<i>\d+)$")
    if parsed.null_count:
        bad = keys[int(np.flatnonzero(parsed.is_null().to_numpy(zero_copy_only=False))[0])]
        raise MalformedMetadataError(f"{label}: key {bad!r} is not file_num<n>_frame_<i>")
    f = pc.cast(parsed.field("f"), pa.int64()).to_numpy()
    i = pc.cast(parsed.field("i"), pa.int64()).to_numpy()
    return f, i


def _columnar(label: str, rows: list, triple: bool) -> tuple[pa.Table, pa.Table | None]:
    width = 3 if triple and len(rows[0]) > 2 else 2 if triple else 1
    try:
        parts = [[r[j] for r in rows] for j in range(width)]
    except (IndexError, TypeError, KeyError):
        raise MalformedMetadataError(
            f"{label}: rows must be [curr_vars, infer_a, helperarr] (or the seed's recording rows)"
        ) from None
    state = game_state_table(parts[0], label)
    if not triple:
        return state, None
    return state, shipped_table(parts[1], parts[2] if width > 2 else None, label)


def _build(source: str, groups: list[tuple[EpisodeId, list]], triple: bool) -> MetadataBatch:
    """Columnarise episodes; `groups` hold per-frame rows `[state, infer_a?, helper?]`."""
    lengths = np.array([len(rows) for _, rows in groups], dtype=np.int64)
    try:  # fast path: the whole file at once
        rows = [r for _, g in groups for r in g]
        state, shipped = _columnar(source, rows, triple) if rows else (None, None)
        return MetadataBatch(
            source=source,
            episodes=[e for e, _ in groups],
            lengths=lengths,
            state=state if state is not None else GAME_STATE_SCHEMA.empty_table(),
            shipped=shipped,
        )
    except MalformedMetadataError:
        pass
    ok, tables, shipped_parts, failures = [], [], [], []
    for ep, rows in groups:  # slow path: find the bad episodes, keep the good ones
        try:
            state, ship = _columnar(f"{source} [{ep.name}]", rows, triple)
        except MalformedMetadataError as e:
            failures.append((ep, str(e)))
            continue
        ok.append((ep, len(rows)))
        tables.append(state)
        shipped_parts.append(ship)
    return MetadataBatch(
        source=source,
        episodes=[e for e, _ in ok],
        lengths=np.array([n for _, n in ok], dtype=np.int64),
        state=pa.concat_tables(tables) if tables else GAME_STATE_SCHEMA.empty_table(),
        shipped=pa.concat_tables(shipped_parts) if triple and shipped_parts else None,
        failures=failures,
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a metadata file is unpickled and columnarised.

    The file becomes millions of acyclic objects; collections triggered while they are built
    re-scan all of them, which is about half the load time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_metadata(path: str | Path) -> MetadataBatch:
    """Load a `currvarsv2_*` dict file or a seed per-recording list file."""
    with _gc_paused():
        return _load_metadata(Path(path))


def _load_metadata(path: Path) -> MetadataBatch:
    source = str(path)
    obj = load_npy(path)
    if obj.dtype != object:
        raise MalformedMetadataError(f"{source}: holds a {obj.dtype} array, not game-state rows")
    if obj.shape == () and isinstance(obj.item(), dict):
        return _load_dict_layout(source, obj.item(), metadata_dataset(path.name))
    return _load_recording_layout(source, obj, recording_episode(path.name))


def _load_dict_layout(source: str, d: dict, named: tuple[str, int, int] | None) -> MetadataBatch:
    if named is None:
        raise MalformedMetadataError(
            f"{source}: a currvarsv2 dict file must be named currvarsv2_<stub><a>_to_<b>.npy "
            "so its dataset is known"
        )
    dataset = named[0]
    keys = list(d.keys())
    values = list(d.values())
    file_num, frame = _frame_keys(keys, source)
    order = np.lexsort((frame, file_num))
    file_num, frame = file_num[order], frame[order]
    rows = [values[i] for i in order]
    bounds = np.flatnonzero(np.diff(file_num)) + 1
    starts = np.concatenate([[0], bounds]) if len(rows) else np.array([], dtype=np.int64)
    stops = np.concatenate([bounds, [len(rows)]]) if len(rows) else starts
    groups, gaps = [], []
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        ep = EpisodeId(dataset, int(file_num[a]))
        if not np.array_equal(frame[a:b], np.arange(b - a)):
            missing = sorted(set(range(int(frame[b - 1]) + 1)) - set(frame[a:b].tolist()))
            gaps.append(
                (
                    ep,
                    f"{source} [{ep.name}]: frames not contiguous from 0 "
                    f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''})",
                )
            )
            continue
        groups.append((ep, rows[a:b]))
    batch = _build(source, groups, triple=True)
    batch.failures[:0] = gaps
    return batch


def _load_recording_layout(source: str, arr: np.ndarray, ep: EpisodeId) -> MetadataBatch:
    rows = list(arr)
    if not rows or not all(len(r) >= 2 for r in rows):
        raise MalformedMetadataError(f"{source}: rows must be [img, curr_vars, ...]")
    width = len(rows[0])
    # seed layouts: [img, vars], [img, vars, infer_a], [img, vars, infer_a, y, xaux, helper]
    trimmed = [
        (r[1], r[2], r[5]) if width >= 6 else (r[1], r[2]) if width >= 3 else (r[1],) for r in rows
    ]
    return _build(source, [(ep, trimmed)], triple=width >= 3)
