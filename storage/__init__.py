"""On-disk formats: the public source layout, containers, metadata and the action space.

The names most users need, imported on first use: a reader of a processed dataset loads only
what reading needs (no Zarr, no HDF5), wherever csdm's reader is installed.
"""

from __future__ import annotations

from storage.lazy_names import lazy_getattr

_API = {
    "FPS": "storage.action_space",
    "FRAME_SHAPE": "storage.action_space",
    "KEYS": "storage.action_space",
    "MOUSE_X_BINS": "storage.action_space",
    "MOUSE_Y_BINS": "storage.action_space",
    "MemberRef": "storage.containers",
    "UnsafeMemberError": "storage.containers",
    "iter_container": "storage.containers",
    "Dataset": "storage.dataset",
    "DatasetFormatError": "storage.dataset",
    "open_dataset": "storage.dataset",
    "Episode": "storage.episode",
    "EpisodeFormatError": "storage.episode",
    "count_frames": "storage.episode",
    "read_episode": "storage.episode",
    "write_episode": "storage.episode",
    "EpisodeId": "storage.layout",
    "GAME_STATE_SCHEMA": "storage.metadata",
    "MalformedMetadataError": "storage.metadata",
    "MetadataBatch": "storage.metadata",
    "game_state_table": "storage.metadata",
    "load_metadata": "storage.metadata",
    "UnsafePickleError": "storage.safepickle",
    "load_npy": "storage.safepickle",
}
__all__ = sorted(_API)

__getattr__ = lazy_getattr("storage", _API)
