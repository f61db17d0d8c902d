"""Export DIAMOND's low-res CS:GO data from a processed dataset, one episode file at a time."""

from __future__ import annotations

import io
import os
import pickle
import types
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from storage.dataset import CorruptFramesError, open_dataset
from storage.diamond_layout import (
    SPLITS,
    ExportPlan,
    diamond_records,
    episode_path,
    parse_test_split,
    select_episodes,
    split_digest,
    too_short,
)
from storage.fs import Root, root_of
from storage.records import FormatError
from storage.sidearrays import (
    SideArrayError,
    ViewSpec,
    open_array,
    read_actions,
    read_views,
    view_current,
    view_key,
)
from training.diamond_obs import low_res

LOW_RES = "low_res"


class ExportError(ValueError):
    """An export that cannot start: no episodes, a bad split file, another plan in DEST."""


@dataclass(frozen=True)
class EpisodeJob:
    """One episode file to write: small enough to travel to a Dask worker."""

    out: str
    dest: str
    split: str
    episode_id: int
    episode: str  # csdm's episode name
    file_id: str
    size: tuple[int, int]
    length: int
    options: dict | None = None  # non-secret storage options of both roots
    view: str | None = None  # a stored view with DIAMOND's recipe at `size`, read from

    @property
    def key(self) -> str:
        """The file's key under DEST."""
        return f"{LOW_RES}/{self.split}/{episode_path(self.episode_id)}"


@dataclass(frozen=True)
class EpisodeResult:
    """What became of one job: `written`, `present` (a rerun) or `failed`, with the reason."""

    file_id: str
    status: str
    reason: str | None = None


def plan_export(
    out: str,
    dest: str,
    test_split: str,
    split_source: str,
    size: tuple[int, int],
    length: int,
    kept_only: bool = False,
    options: dict | None = None,
) -> tuple[ExportPlan, list[EpisodeJob], list[str]]:
    """The plan, its jobs and one line per episode left out; refuses another plan in DEST."""
    test_names = parse_test_split(test_split, split_source)
    ds = open_dataset(out, options)
    chosen = select_episodes(diamond_records(ds.state), kept_only)
    if not chosen:
        what = "kept scraped dust2 episodes" if kept_only else "scraped dust2 episodes"
        raise ExportError(
            f"{ds.root}: no {what} (hdf5_dm_july2021_<n>.hdf5 from "
            "hdf5_dm_july2021_<a>_to_<b>.tar); nothing for DIAMOND"
        )
    usable, skipped = too_short(chosen, length)
    ids = {
        s: [e for e in usable if (e.file_id.rsplit("/", 1)[1] in test_names) == (s == "test")]
        for s in SPLITS
    }
    plan = ExportPlan(
        source=str(ds.root),
        size=size,
        length=length,
        kept_only=kept_only,
        test_split_sha256=split_digest(test_names),
        train=tuple(e.file_id for e in ids["train"]),
        test=tuple(e.file_id for e in ids["test"]),
        revision=ds.commit,  # on the Hub: the commit read
    )
    check_dest(ds.root, root_of(dest, options))
    _claim(root_of(dest, options), plan)
    view = diamond_view(ds.layout, size)
    jobs = [
        EpisodeJob(str(ds.root), dest, s, i, e.episode, e.file_id, size, length, options, view)
        for s in SPLITS
        for i, e in enumerate(ids[s])
    ]
    return plan, jobs, skipped


def check_dest(out: Root, dest: Root) -> None:
    """Refuse a DEST that is OUT or inside it (a publish would upload it), or not writable."""
    a, b = _where(out), _where(dest)
    if b == a or b.startswith(a + "/"):
        raise ExportError(
            f"{dest}: inside the dataset {out}; choose a DEST outside it (a publish of the "
            "dataset would upload the export)"
        )
    try:
        dest.check_access(writable=True)
    except OSError as e:
        raise ExportError(str(e)) from None


def _where(root: Root) -> str:
    return os.path.realpath(root.path) if root.local else root.url.rstrip("/")


def _claim(dest: Root, plan: ExportPlan) -> None:
    """Record the plan in DEST, or check that DEST holds this same plan (a resumed export)."""
    key = f"{LOW_RES}/{ExportPlan.FILE}"
    try:
        d = dest.read_json(key)
    except ValueError as e:
        raise ExportError(f"{dest.url_of(key)}: unreadable ({e}); export into a new DEST") from None
    if d is not None:
        try:
            old = ExportPlan.from_dict(d, dest.url_of(key))
        except FormatError as e:
            raise ExportError(str(e)) from None
        if not old.same_output(plan):
            raise ExportError(
                f"{dest.url_of(key)}: DEST holds another export (other episodes, "
                "split, size or length); export into a new DEST"
            )
    elif any(dest.exists(f"{LOW_RES}/{s}") for s in SPLITS):
        raise ExportError(
            f"{dest.url_of(LOW_RES)}: holds files csdm did not write; export into a new DEST"
        )
    dest.put_json(key, plan.to_dict())


def episode_payload(obs: torch.Tensor, act: np.ndarray, file_id: str) -> dict:
    """The dict DIAMOND's `Episode.save` writes for one episode, from its uint8 observations."""
    n = len(obs)
    return {
        "obs": obs,
        "act": torch.from_numpy(np.array(act)),
        "rew": torch.zeros(n),
        "end": torch.zeros(n, dtype=torch.uint8),
        "trunc": torch.zeros(n, dtype=torch.uint8),
        "info": {"original_file_id": file_id},
    }


class _Numpy1Pickler(pickle._Pickler):
    """Pickles numpy arrays as numpy 1 names them, which numpy 2 reads as well.

    numpy 2 names its array constructor `numpy._core.multiarray._reconstruct`; numpy 1.26,
    which DIAMOND pins, has no `numpy._core` and cannot load such a file. The pure-Python
    pickler lets one method write the older name of the same function (numpy 2 keeps
    `numpy.core` as an alias, so csdm reads these files too).
    """

    _OLD: ClassVar[dict[str, str]] = {"numpy._core.multiarray": "numpy.core.multiarray"}

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None)
        if module in self._OLD:
            self.write(
                pickle.GLOBAL + f"{self._OLD[module]}\n{name or obj.__qualname__}\n".encode()
            )
            self.memoize(obj)
            return
        super().save_global(obj, name)


_PICKLE = types.ModuleType("csdm_numpy1_pickle")  # torch.save asks its pickle module's name
_PICKLE.Pickler, _PICKLE.Unpickler = _Numpy1Pickler, pickle.Unpickler


def _saved(obj: object) -> bytes:
    """`torch.save`'s bytes of `obj`, loadable under numpy 1.26 (DIAMOND's) and numpy 2."""
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_module=_PICKLE)
    return buf.getvalue()


def diamond_view(layout, size: tuple[int, int]) -> str | None:
    """The name of a stored view with DIAMOND's recipe at `size`, if there is one."""
    views = read_views(layout).values()
    return next((v.name for v in views if v.is_diamond and (v.height, v.width) == size), None)


def export_episode(job: EpisodeJob) -> EpisodeResult:
    """Write one episode's `.pt`, unless a finished one is there; failures are returned."""
    dest = root_of(job.dest, job.options)
    if dest.exists(job.key):  # written whole (put_bytes), so present means complete
        return EpisodeResult(job.file_id, "present")
    ds = open_dataset(job.out, job.options)
    try:
        act = read_actions(ds.layout, job.episode)[: job.length]
        recipe = ViewSpec("-", *job.size).recipe  # the defaults are DIAMOND's recipe
        if job.view and view_current(
            ds.layout, job.view, job.episode, ds.sha256(job.episode), recipe
        ):
            # `csdm views` stored this very tensor: same arithmetic, same frames
            obs = open_array(ds.root, view_key(ds.layout, job.view, job.episode))[: job.length]
            obs = torch.from_numpy(obs)
        else:
            obs = low_res(ds.frames(job.episode, 0, job.length), job.size)
    except (CorruptFramesError, SideArrayError) as e:
        return EpisodeResult(job.file_id, "failed", str(e))
    if len(act) != len(obs):
        return EpisodeResult(
            job.file_id,
            "failed",
            f"{ds.root}: episode {job.episode} has {len(act)} action rows for {len(obs)} frames",
        )
    dest.put_bytes(job.key, _saved(episode_payload(obs, act, job.file_id)))
    return EpisodeResult(job.file_id, "written")


def info_state(n_episodes: int, length: int) -> dict:
    """DIAMOND's `Dataset.state_dict()` after adding `n_episodes` episodes of `length` steps."""
    lengths = np.full(n_episodes, length, dtype=np.int64)
    steps = n_episodes * length
    return {
        "is_static": False,
        "num_episodes": n_episodes,
        "num_steps": steps,
        "start_idx": np.arange(n_episodes, dtype=np.int64) * length,
        "lengths": lengths,
        # the sign of each float reward and each end flag, counted as DIAMOND counts them
        "counter_rew": Counter({0.0: steps}) if steps else Counter(),
        "counter_end": Counter({0: steps}) if steps else Counter(),
    }


def finish_export(plan: ExportPlan, dest: str, options: dict | None = None) -> list[str]:
    """Write each split's `info.pt` once all its episodes are there; return what is missing."""
    root = root_of(dest, options)
    missing = []
    for split in SPLITS:
        jobs = [
            EpisodeJob("", dest, split, i, "", fid, plan.size, plan.length)
            for i, fid in enumerate(plan.ids(split))
        ]
        absent = [j.file_id for j in jobs if not root.exists(j.key)]
        if absent:
            missing.extend(absent)
            continue
        root.put_bytes(f"{LOW_RES}/{split}/info.pt", _saved(info_state(len(jobs), plan.length)))
    return missing
