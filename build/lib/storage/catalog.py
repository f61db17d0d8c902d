"""Schemas of the Parquet catalog and decoding of the shipped `frame_i_y` labels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from storage.action_space import KEYS, MOUSE_X_BINS, MOUSE_Y_BINS, Y

COUNTERS = (
    "dead_skipped",
    "skipped",
    "ram_gsi_disagree_hp",
    "ram_gsi_disagree_ammo",
    "obs_count",
    "mouse_static",
    "vel_static",
)
KEY_COLUMNS = tuple(f"key_{k}" for k in KEYS)

# Game-state columns of the frames catalog: catalog name -> GAME_STATE_SCHEMA name.
STATE_COLUMNS = {
    "pos_x": "localpos1",
    "pos_y": "localpos2",
    "pos_z": "localpos3",
    "health": "gsi_health",
    "obs_health": "obs_health",
    "team": "gsi_team",
    "weapon": "weap_name",
    "ammo": "ammo_active",
    "vel_mag": "vel_mag",
    "yaw": "xy_rad",
    "pitch": "zvert_rads",
    "fov": "obs_fov",
    "scoped": "obs_scope",
    "kills": "gsi_kills",
    "deaths": "gsi_deaths",
    "height": "height",
}

INFERRED_FIELDS = [
    pa.field("infer_keys", pa.list_(pa.string())),
    pa.field("infer_mouse_x", pa.float64()),
    pa.field("infer_mouse_y", pa.float64()),
    pa.field("infer_lclick", pa.int8()),
    pa.field("infer_rclick", pa.int8()),
    pa.field("infer_processed", pa.bool_()),  # the frame passed the seed's alive/weapon check
]
STATE_FIELDS = [
    pa.field("pos_x", pa.float64()),
    pa.field("pos_y", pa.float64()),
    pa.field("pos_z", pa.float64()),
    pa.field("health", pa.int32()),
    pa.field("obs_health", pa.int32()),
    pa.field("team", pa.string()),
    pa.field("weapon", pa.string()),
    pa.field("ammo", pa.int32()),
    pa.field("vel_mag", pa.float64()),
    pa.field("yaw", pa.float64()),
    pa.field("pitch", pa.float64()),
    pa.field("fov", pa.int32()),
    pa.field("scoped", pa.int32()),
    pa.field("kills", pa.int32()),
    pa.field("deaths", pa.int32()),
    pa.field("height", pa.float64()),
]
# Metadata-derived columns: null where an episode has no usable metadata.
METADATA_SCHEMA = pa.schema(INFERRED_FIELDS + STATE_FIELDS)

# The frames table: one file per committed episode until compaction merges them.
FRAMES_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("episode", pa.string(), nullable=False),
        pa.field("file_num", pa.int32(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        *[pa.field(c, pa.bool_(), nullable=False) for c in KEY_COLUMNS],
        pa.field("lclick", pa.bool_(), nullable=False),
        pa.field("rclick", pa.bool_(), nullable=False),
        pa.field("mouse_x", pa.float32(), nullable=False),
        pa.field("mouse_y", pa.float32(), nullable=False),
        pa.field("kill", pa.bool_(), nullable=False),
        pa.field("death", pa.bool_(), nullable=False),
        *METADATA_SCHEMA,
    ]
)

FILES_SCHEMA = pa.schema(
    [
        pa.field("episode", pa.string()),  # null only for a member that names no episode
        pa.field("dataset", pa.string()),
        pa.field("file_num", pa.int32()),
        pa.field("split", pa.string()),
        pa.field("container", pa.string(), nullable=False),
        pa.field("member", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("n_frames", pa.int32()),
        pa.field("stored_bytes", pa.int64()),
        pa.field("metadata_file", pa.string()),
        *[pa.field(c, pa.int32()) for c in COUNTERS],
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("reject_reason", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # stored | failed
        pa.field("agree_keys", pa.float64()),
        pa.field("agree_clicks", pa.float64()),
        pa.field("agree_mouse", pa.float64()),
        pa.field("duplicate_of", pa.string()),  # the twin whose bytes these equal
    ]
)


# `csdm infer`'s outputs: DIR/frames.parquet and DIR/files.parquet.
INFER_FRAMES_SCHEMA = pa.schema(
    [
        pa.field("episode", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("file_num", pa.int32(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        *INFERRED_FIELDS,
        pa.field("kill", pa.bool_(), nullable=False),
        pa.field("death", pa.bool_(), nullable=False),
    ]
)

INFER_FILES_SCHEMA = pa.schema(
    [
        pa.field("episode", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("file_num", pa.int32(), nullable=False),
        pa.field("metadata_file", pa.string(), nullable=False),
        pa.field("n_frames", pa.int32(), nullable=False),
        *[pa.field(c, pa.int32()) for c in COUNTERS],
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("reject_reason", pa.string()),
        # share of frames whose re-inferred label equals the shipped `infer_a` (null: none shipped)
        pa.field("agree_keys", pa.float64()),
        pa.field("agree_mouse", pa.float64()),
        pa.field("agree_clicks", pa.float64()),
    ]
)


def decode_y(y: np.ndarray) -> dict[str, np.ndarray]:
    """Shipped labels of `frame_i_y` rows: 11 key flags, clicks, mouse bin values."""
    out = {c: y[:, i] > 0.5 for i, c in enumerate(KEY_COLUMNS)}
    out["lclick"] = y[:, Y.lclick] > 0.5
    out["rclick"] = y[:, Y.rclick] > 0.5
    # + 0.0 turns the seed's -0.0 bin into 0.0
    out["mouse_x"] = (MOUSE_X_BINS[y[:, Y.mouse_x].argmax(axis=1)] + 0.0).astype(np.float32)
    out["mouse_y"] = (MOUSE_Y_BINS[y[:, Y.mouse_y].argmax(axis=1)] + 0.0).astype(np.float32)
    return out
