"""On-disk formats: the public source layout, containers, metadata and the action space."""

from storage.action_space import FPS, FRAME_SHAPE, KEYS, MOUSE_X_BINS, MOUSE_Y_BINS
from storage.containers import MemberRef, UnsafeMemberError, iter_container
from storage.dataset import Dataset, DatasetFormatError, open_dataset
from storage.episode import Episode, EpisodeFormatError, count_frames, read_episode, write_episode
from storage.layout import EpisodeId
from storage.metadata import (
    GAME_STATE_SCHEMA,
    MalformedMetadataError,
    MetadataBatch,
    game_state_table,
    load_metadata,
)
from storage.safepickle import UnsafePickleError, load_npy

__all__ = [
    "FPS",
    "FRAME_SHAPE",
    "GAME_STATE_SCHEMA",
    "KEYS",
    "MOUSE_X_BINS",
    "MOUSE_Y_BINS",
    "Dataset",
    "DatasetFormatError",
    "Episode",
    "EpisodeFormatError",
    "EpisodeId",
    "MalformedMetadataError",
    "MemberRef",
    "MetadataBatch",
    "UnsafeMemberError",
    "UnsafePickleError",
    "count_frames",
    "game_state_table",
    "iter_container",
    "load_metadata",
    "load_npy",
    "open_dataset",
    "read_episode",
    "write_episode",
]
