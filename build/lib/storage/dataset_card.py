"""The dataset card (`README.md`) of a published dataset: Hub metadata, provenance, how to read.

The YAML front matter points the Hub's viewer at the compacted catalog (`configs:`), so
`frames` and `files` show as tables; the prose says where the data came from and on which
terms, what it holds, and how to read it with csdm, with zarr and with DuckDB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from storage.records import Manifest

SOURCE_REPO = "TeaPearce/CounterStrike_Deathmatch"
SEED_PROJECT = "https://github.com/TeaPearce/Counter-Strike_Behavioural_Cloning"
CONFIGS = {"frames": "catalog/frames-*.parquet", "files": "catalog/files-*.parquet"}
QUALITY_LIMITS = (
    "dead_skipped",
    "ram_gsi_disagree_hp",
    "ram_gsi_disagree_ammo",
    "obs_count",
    "mouse_static",
    "vel_static",
    "per_frames",
)


@dataclass(frozen=True)
class Counts:
    """What a dataset holds, for the card."""

    episodes: int
    kept: int
    frames: int
    kept_frames: int
    by_split: dict[str, int]  # kept frames per split
    by_dataset: dict[str, int]  # episodes per source dataset

    @classmethod
    def of(cls, files: pa.Table) -> Counts:
        """Counts from the `files` table (stored episodes only)."""
        stored = files.filter(pc.equal(files["status"], "stored"))
        kept = stored.filter(pc.equal(stored["keep"], True))
        frames = pc.fill_null(stored["n_frames"], 0)
        kept_frames = pc.fill_null(kept["n_frames"], 0)

        def by(table: pa.Table, col: str, value) -> dict[str, int]:
            out: dict[str, int] = {}
            for key, v in zip(table[col].to_pylist(), value(table), strict=True):
                out[str(key)] = out.get(str(key), 0) + v
            return dict(sorted(out.items()))

        return cls(
            episodes=stored.num_rows,
            kept=kept.num_rows,
            frames=int(pc.sum(frames).as_py() or 0),
            kept_frames=int(pc.sum(kept_frames).as_py() or 0),
            by_split=by(kept, "split", lambda t: pc.fill_null(t["n_frames"], 0).to_pylist()),
            by_dataset=by(stored, "dataset", lambda t: [1] * t.num_rows),
        )


def _size_category(frames: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if frames < limit:
            return name
    return "10M<n<100M"


def front_matter(name: str, counts: Counts) -> str:
    """The card's YAML metadata (written by hand: every value is a plain, quoted scalar)."""
    lines = [
        "---",
        "license: other",
        "license_name: counter-strike-deathmatch-research-terms",
        "license_link: LICENSE.md",
        f"pretty_name: {json.dumps(name)}",
        "tags:",
        *[
            f"- {t}"
            for t in (
                "counter-strike",
                "csgo",
                "behavioural-cloning",
                "world-models",
                "video-game",
                "csdm",
                "zarr",
            )
        ],
        "task_categories:",
        "- reinforcement-learning",
        "size_categories:",
        f"- {_size_category(counts.frames)}",
        "configs:",
    ]
    for config, glob in CONFIGS.items():
        lines += [
            f"- config_name: {config}",
            "  data_files:",
            "  - split: train",
            f"    path: {json.dumps(glob)}",
        ]
        if config == "frames":
            lines.append("  default: true")
    return "\n".join([*lines, "---", ""])


def render_card(repo: str, manifest: Manifest, counts: Counts, csdm_version: str) -> str:
    """The whole README.md for `repo` (ORG/NAME)."""
    params = manifest.parameters
    limits = ", ".join(f"`{k}` {params[k]}" for k in QUALITY_LIMITS if k in params)
    sources = ", ".join(f"`{s}`" for s in manifest.sources) or "(none recorded)"
    splits = ", ".join(f"{k}: {v:,}" for k, v in counts.by_split.items()) or "none"
    datasets = ", ".join(f"`{k}` {v:,}" for k, v in counts.by_dataset.items())
    url = f"hf://datasets/{repo}"
    body = f"""# {repo.split("/")[1]}

The Counter-Strike deathmatch dataset of Pearce & Zhu (CoG 2022), processed by
[csdm]({SEED_PROJECT}) {csdm_version}: frames in a Zarr store, actions inferred and quality
judged per episode, and a Parquet catalog to query with SQL. Read it in place; nothing needs
to be downloaded whole.

## Terms of use

This is a derivative of `{SOURCE_REPO}` and carries its terms: its authors allow personal
projects and open research, and grant no licence for commercial use of any kind (see the
[seed project's licence]({SEED_PROJECT}#license), summarised in `LICENSE.md`; ask its
authors when unsure).

## Provenance

- source: {sources}; Hub revision of the source: `{manifest.revision or "not from the Hub"}`
- csdm {manifest.csdm_version} wrote the store (format version {manifest.format_version}),
  last updated {manifest.updated or "(unknown)"}
- frame codec: `{params.get("codec", "?")}` (lossless; named in each array's `zarr.json`)
- splits: test fraction {params.get("test_fraction", "?")}, seed {params.get("seed", "?")}
- quality limits: {limits or "(none recorded)"}

## Contents

- {counts.episodes:,} stored episodes ({datasets}), {counts.frames:,} frames
- {counts.kept:,} kept episodes, {counts.kept_frames:,} frames; kept frames per split: {splits}
- `frames.zarr/<episode>`: uint8 (T, 150, 280, 3) BGR frames
- `actions.zarr/<episode>`: the source's raw action rows
- `catalog/`: `frames-*.parquet` (one row per frame: actions, state, split) and
  `files-*.parquet` (one row per episode: counts, quality, keep), shown above as tables
- `manifest.json` and `catalog/index.json`: what a reader opens first

## Read it

With csdm installed, in place; each opening pins the revision's commit:

```python
from storage import open_dataset

ds = open_dataset("{url}")          # or "{url}@<revision>"
frames = ds.frames(ds.episodes[0], 0, 96)  # (96, 150, 280, 3) uint8
```

```bash
csdm query {url} "select split, count(*) from frames where keep group by all"
csdm train {url} --run runs/r1
csdm export-diamond {url} diamond/
```

With zarr (csdm installed registers its two codecs with Zarr):

```python
import zarr
frames = zarr.open_array("{url}/frames.zarr/<episode>", mode="r")
```

With DuckDB over the Parquet files:

```sql
select episode, keep, reject_reason from 'hf://datasets/{repo}/catalog/files-*.parquet';
```
"""
    return front_matter(repo.split("/")[1], counts) + body


def terms() -> str:
    """`LICENSE.md`: the source's terms, which the published data carries."""
    return f"""# Terms of use

This dataset is derived from the Counter-Strike deathmatch recordings of Tim Pearce and Jun
Zhu (`{SOURCE_REPO}` on the Hugging Face Hub). Their project's licence governs its use; in
short, it allows personal projects and open research, grants no licence for commercial use
in any form, and asks to be contacted for permission when in doubt. The authoritative
wording is the "License" section of {SEED_PROJECT}.

csdm, which processed it, adds no rights: the frames, actions and catalog are the source's
data in another layout.
"""
