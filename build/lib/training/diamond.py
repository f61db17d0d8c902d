"""DIAMOND's full-resolution reader, served from the store: a drop-in for `CSGOHdf5Dataset`."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from storage.dataset import Dataset, open_dataset
from storage.diamond_layout import EPISODE_LENGTH, diamond_records, select_episodes, too_short
from storage.fs import is_url
from storage.sidearrays import read_actions
from training.diamond_obs import to_float

ACTION_CACHE = 64  # episodes whose action rows are kept (about 400 KB each)


@dataclass
class SegmentId:
    """DIAMOND's segment address: an episode (its file id here) and a half-open step range."""

    episode_id: int | str
    start: int
    stop: int


@dataclass
class Segment:
    """DIAMOND's segment fields; padded steps are zeros with `mask_padding` False."""

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor
    mask_padding: torch.Tensor
    info: dict[str, Any]
    id: SegmentId

    @property
    def effective_size(self) -> int:
        """Steps that are not padding."""
        return int(self.mask_padding.sum())


@dataclass
class Episode:
    """DIAMOND's episode fields."""

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor
    info: dict[str, Any]

    def __len__(self) -> int:
        return self.obs.size(0)


def padded(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """`x` with `left` and `right` zero steps added along time."""
    if not (left or right):
        return x
    out = torch.zeros((left + len(x) + right, *x.shape[1:]), dtype=x.dtype)
    out[left : left + len(x)] = x
    return out


class FullResDataset(TorchDataset):
    """DIAMOND's `CSGOHdf5Dataset` read from a processed dataset (a folder or a URL).

    Episodes are the scraped dust2 ones, keyed by DIAMOND's file id and ordered by number;
    each is read as `length` frames. No HDF5 and no untar: frames come from the Zarr shards,
    actions from the raw `frame_i_y` rows csdm keeps.
    """

    def __init__(
        self,
        out: str,
        storage_options: dict | None = None,
        length: int = EPISODE_LENGTH,
        kept_only: bool = False,
    ) -> None:
        super().__init__()
        # absolute: DIAMOND's Hydra runs in a folder of its own, and workers may start anywhere
        self._out = str(out) if is_url(str(out)) else os.path.abspath(out)
        self._options = storage_options
        self._ds: Dataset | None = open_dataset(out, storage_options)
        self._pid = os.getpid()  # a forked DataLoader worker opens its own (fsspec clients
        # of object stores are not fork-safe)
        chosen, _ = too_short(select_episodes(diamond_records(self._ds.state), kept_only), length)
        self._filenames = {e.file_id: e.episode for e in chosen}
        self._length_one_episode = length
        self.num_episodes = len(self._filenames)
        self.num_steps = length * self.num_episodes
        self.lengths = np.array([length] * self.num_episodes, dtype=np.int64)
        self._actions: OrderedDict[str, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:  # DataLoader workers open their own store
        return {**self.__dict__, "_ds": None, "_actions": OrderedDict()}

    def __len__(self) -> int:
        return self.num_steps

    @property
    def dataset(self) -> Dataset:
        """The processed dataset read."""
        if self._ds is None or self._pid != os.getpid():
            self._ds, self._pid = open_dataset(self._out, self._options), os.getpid()
            self._actions = OrderedDict()
        return self._ds

    def save_to_default_path(self) -> None:
        """Nothing to save, as for DIAMOND's reader."""

    def state_dict(self) -> dict[str, Any]:
        """The public fields, as DIAMOND's `StateDictMixin` gives them."""
        return {
            "num_episodes": self.num_episodes,
            "num_steps": self.num_steps,
            "lengths": self.lengths,
        }

    def episode_name(self, file_id: str) -> str:
        """The csdm name of the episode DIAMOND calls `file_id`."""
        try:
            return self._filenames[file_id]
        except KeyError:
            raise KeyError(
                f"{self._out}: no episode {file_id!r} (ids look like "
                "'1-200/hdf5_dm_july2021_7.hdf5')"
            ) from None

    def _action_rows(self, name: str) -> np.ndarray:
        if name not in self._actions:
            self._actions[name] = read_actions(self.dataset.layout, name)
            if len(self._actions) > ACTION_CACHE:
                self._actions.popitem(last=False)
        self._actions.move_to_end(name)
        return self._actions[name]

    def __getitem__(self, segment_id: SegmentId) -> Segment:
        n = self._length_one_episode
        want_start, want_stop = int(segment_id.start), int(segment_id.stop)
        if not (want_start < n and want_stop > 0 and want_start < want_stop):
            raise ValueError(
                f"segment [{want_start}, {want_stop}) of an episode of {n} steps: "
                "need start < length, stop > 0 and start < stop"
            )
        name = self.episode_name(segment_id.episode_id)
        start, stop = max(0, want_start), min(n, want_stop)
        left, right = start - want_start, want_stop - stop
        obs = to_float(self.dataset.frames(name, start, stop))
        act = torch.from_numpy(np.array(self._action_rows(name)[start:stop]))
        t = want_stop - want_start
        mask = torch.zeros(t, dtype=torch.bool)
        mask[left : left + stop - start] = True
        return Segment(
            padded(obs, left, right),
            padded(act, left, right),
            torch.zeros(t),
            torch.zeros(t, dtype=torch.uint8),
            torch.zeros(t, dtype=torch.uint8),
            mask,
            info={},
            id=SegmentId(segment_id.episode_id, start, stop),
        )

    def load_episode(self, episode_id: str) -> Episode:
        """A whole episode, as DIAMOND's reader returns it."""
        s = self[SegmentId(episode_id, 0, self._length_one_episode)]
        return Episode(s.obs, s.act, s.rew, s.end, s.trunc, s.info)
