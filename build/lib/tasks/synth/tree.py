"""Write a small source tree in the exact public layout from simulated players (`csdm synth`)."""

from __future__ import annotations

import io
import pickle
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from storage.episode import Episode, write_episode
from storage.layout import METADATA_DIR, EpisodeId, metadata_chunk, metadata_name, tar_name
from storage.localfile import atomic_path
from tasks.synth import reference
from tasks.synth.frames import render
from tasks.synth.players import simulate

SCRAPED = "dm_july2021"
EXPERT = "dm_july2021_expert"
EXPERT_ZIP = "dataset_dm_expert_dust2"
# Scraped episodes cycle through these, so a demo set holds some the seed would reject.
SCRAPED_KINDS = ("normal", "normal", "idle", "normal", "desync", "thirdperson")


@dataclass(frozen=True)
class SynthConfig:
    """Shape of the synthetic tree; defaults make a demo set of a few hundred MB."""

    seed: int = 0
    frames: int = 200  # per episode; the public files have 1000
    tars: int = 2
    episodes_per_tar: int = 3
    expert_episodes: int = 2
    disagree: float = 0.02  # share of frames per label kind shipped with a changed label

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ValueError("frames must be >= 2")
        if min(self.tars, self.episodes_per_tar, self.expert_episodes) < 0:
            raise ValueError("counts must be >= 0")
        if not 0 <= self.disagree <= 1 / 3:
            raise ValueError("disagree must be between 0 and 1/3")


LABEL_KINDS = ("keys", "clicks", "mouse")


@dataclass(frozen=True)
class Disagreements:
    """Frames whose shipped labels differ from the seed's inference, on purpose, per kind.

    They give the agreement columns known values, on both sides csdm compares.
    """

    metadata: dict[str, np.ndarray]  # frames where `infer_a` in dataset_metadata/ was changed
    targets: dict[str, np.ndarray]  # frames where the HDF5's `y` was changed

    def agreement(self, frames: int, which: str) -> dict[str, float]:
        """The `agree_*` values csdm must find for `which` ("metadata" or "targets")."""
        changed = getattr(self, which)
        return {f"agree_{k}": 1 - len(changed[k]) / frames for k in LABEL_KINDS}


def disagreements(frames: int, seed: int, share: float) -> Disagreements:
    """Which frames get a changed label: `share` of them per kind, distinct within each side."""
    rng = np.random.default_rng([seed, 0xD15A])
    k = min(round(share * frames), frames // 3)
    picks = [rng.choice(frames, 3 * k, replace=False) for _ in range(2)]
    return Disagreements(
        *(
            {kind: np.sort(p[i * k : (i + 1) * k]) for i, kind in enumerate(LABEL_KINDS)}
            for p in picks
        )
    )


def _changed(acts: list[list], frames: dict[str, np.ndarray]) -> list[list]:
    """A copy of per-frame `[keys, mouse_x, mouse_y, lclick, rclick]` with the chosen changes."""
    out = [[list(a[0]), *a[1:]] for a in acts]
    for i in frames["keys"]:
        keys = out[i][0]
        keys.remove("w") if "w" in keys else keys.append("w")
    for i in frames["clicks"]:
        out[i][3] = 1 - int(out[i][3])
    for i in frames["mouse"]:  # one bin along, so every quantisation sees the change
        x = reference.nearest(out[i][1], reference.MOUSE_X)
        j = reference.MOUSE_X.index(x)
        out[i][1] = reference.MOUSE_X[j + 1 if j + 1 < len(reference.MOUSE_X) else j - 1]
    return out


@dataclass
class _Simulated:
    episode: EpisodeId
    labels: list  # per frame [curr_vars, infer_a, helperarr] as the metadata stores them
    arrays: Episode


def simulate_episode(
    ep: EpisodeId, frames: int, seed: int, kind: str, clean: bool, disagree: float = 0.0
) -> _Simulated:
    """Simulate, render and label one episode as the original pipeline did.

    Labels come from the per-frame reference of the seed's scripts, not from csdm's inference;
    `disagree` of the frames per kind get a deliberately different shipped label.
    """
    states = simulate(frames, seed, kind=kind, clean=clean)
    acts, _ = reference.infer_episode(states)
    changes = disagreements(frames, seed, disagree)
    shipped = _changed(acts, changes.metadata)
    ys, auxs, helpers = reference.targets(states, _changed(acts, changes.targets))
    labels = [[states[i], shipped[i], helpers[i]] for i in range(frames)]
    arrays = Episode(render(states, seed), np.array(ys), np.array(auxs), np.array(helpers))
    return _Simulated(ep, labels, arrays)


def episode_seed(cfg: SynthConfig, ep: EpisodeId) -> int:
    """The seed of one synthetic episode: its states, frames and label changes follow from it."""
    key = [cfg.seed, zlib.crc32(ep.dataset.encode()), ep.file_num]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def save_legacy_npy(path: Path, obj: object) -> None:
    """Save a pickled object as `.npy` the way numpy 1.x did (`numpy.core` names), atomically."""
    arr = np.empty((), dtype=object) if not isinstance(obj, np.ndarray) else obj
    if arr is not obj:
        arr[()] = obj
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, npy_format.header_data_from_array_1_0(arr))
    pickle.dump(arr, buf, protocol=3)  # protocol 3 spells globals as text we can rename
    data = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _pack(archive: Path, files: list[tuple[Path, str]]) -> None:
    with atomic_path(archive) as tmp:
        if archive.suffix == ".tar":
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
                for src, name in files:
                    tf.add(src, arcname=name, recursive=False)
        else:  # stored, not deflated: members stay seekable in place
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                for src, name in files:
                    zf.write(src, arcname=name)


def earlier_synth_files(out: str | Path) -> list[Path]:
    """Tars, zips and metadata files a synth (or a copy of the public layout) left in `out`."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [
        *out.glob("hdf5_*.tar"),
        *out.glob("dataset_*.zip"),
        *(out / METADATA_DIR).glob("currvarsv2_*.npy"),
    ]
    return sorted(p for p in found if p.is_file())


def write_synthetic_tree(
    out: str | Path,
    cfg: SynthConfig = SynthConfig(),
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write tars, an expert zip and `dataset_metadata/` under `out`; return the files."""
    out = Path(out)
    (out / METADATA_DIR).mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, list[tuple[EpisodeId, str, bool]]]] = []
    n = 0
    for t in range(cfg.tars):
        first = t * cfg.episodes_per_tar + 1
        last = first + cfg.episodes_per_tar - 1
        eps = []
        for num in range(first, last + 1):
            eps.append((EpisodeId(SCRAPED, num), SCRAPED_KINDS[n % len(SCRAPED_KINDS)], False))
            n += 1
        plan.append((tar_name(SCRAPED, first, last), eps))
    if cfg.expert_episodes:
        eps = [(EpisodeId(EXPERT, i), "normal", True) for i in range(1, cfg.expert_episodes + 1)]
        plan.append((f"{EXPERT_ZIP}.zip", eps))

    written: list[Path] = []
    metadata: dict[tuple[str, int, int], dict] = {}
    with tempfile.TemporaryDirectory(dir=out) as tmpdir:
        for archive, eps in plan:
            members = []
            for ep, kind, clean in eps:
                if progress:
                    progress(f"{ep.name} ({kind})")
                sim = simulate_episode(
                    ep, cfg.frames, episode_seed(cfg, ep), kind, clean, cfg.disagree
                )
                h5 = Path(tmpdir) / ep.hdf5_name
                write_episode(h5, sim.arrays)
                inner = ep.hdf5_name if archive.endswith(".tar") else f"{EXPERT_ZIP}/{ep.hdf5_name}"
                members.append((h5, inner))
                chunk = metadata.setdefault((ep.dataset, *metadata_chunk(ep.file_num)), {})
                for i, row in enumerate(sim.labels):
                    chunk[f"file_num{ep.file_num}_frame_{i}"] = row
            _pack(out / archive, members)
            written.append(out / archive)
            for h5, _ in members:
                h5.unlink()
    for (dataset, first, last), mapping in metadata.items():
        path = out / METADATA_DIR / metadata_name(dataset, first, last)
        save_legacy_npy(path, mapping)
        written.append(path)
    return written
