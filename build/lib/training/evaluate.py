"""`csdm eval`: a model's (or several models') seed metrics on a split, episode by episode.

A model is a run folder (torch), an export folder (ONNX) or a registry reference
(`NAME@production`, `NAME@v3`, `NAME`). Each episode is played through from a zero state, as
the agent plays, and scored against its labels with the seed's clean-ups applied.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from storage.dataset import Dataset, open_dataset
from storage.evaluation import EvalReport, ModelEval
from storage.fs import is_url, root_of
from storage.policy import DESCRIPTOR
from storage.registry import export_payload, open_registry
from training.actions import DEFAULT, ActionSpace
from training.checkpoint import CKPT, has_checkpoint, load_checkpoint
from training.data import Labels, SamplerConfig, load_labels
from training.loss import SEED_ACCURACIES, LossOptions, Targets, make_targets, seed_metrics

CHUNK = 64  # frames per forward pass of a torch model, the state carried between passes
# metrics where lower is better; every other one is better higher
LOWER_IS_BETTER = frozenset({"value_mse"})


class EvalError(ValueError):
    """A model or dataset that cannot be evaluated, with what to do instead."""


@dataclass
class Predictor:
    """Plays one episode's frames through a model from a zero state; returns probabilities."""

    name: str
    kind: str
    source: dict
    space: ActionSpace
    play: Callable[[np.ndarray], np.ndarray]  # (T, H, W, 3) uint8 -> (T, n_outputs)


def _torch_predictor(name: str, run: Path | str, device: str = "cpu") -> Predictor:
    from training.export import policy_from_checkpoint
    from training.model import probabilities

    ckpt = load_checkpoint(run)
    model = policy_from_checkpoint(ckpt).to(device)

    @torch.no_grad()
    def play(frames: np.ndarray) -> np.ndarray:
        out, state = [], None
        for i in range(0, len(frames), CHUNK):
            x = torch.from_numpy(frames[i : i + CHUNK])[None].to(device)
            logits, state = model(x, state)
            out.append(probabilities(logits[0], model.space).cpu().numpy())
        return np.concatenate(out)

    source = {"run": str(run), "step": ckpt.step, "source": ckpt.source}
    return Predictor(name, "run", source, model.space, play)


def _onnx_predictor(name: str, folder: Path, kind: str, extra: dict | None = None) -> Predictor:
    from training.export import OnnxSteps

    steps = OnnxSteps(folder)
    d = steps.descriptor
    space = ActionSpace.from_dict(d["action_space"])
    if steps.names != list(space.heads):
        raise EvalError(f"{folder}: outputs {steps.names}, expected the heads {list(space.heads)}")

    def play(frames: np.ndarray) -> np.ndarray:
        return np.concatenate(list(steps.run(frames).values()), -1)

    source = {
        "folder": str(folder),
        "model_sha256": d["files"][d["model"]]["sha256"],
        "step": d.get("training", {}).get("step"),
        **(extra or {}),
    }
    return Predictor(name, kind, source, space, play)


def resolve_model(
    spec: str, registry: str | None = None, workdir: Path | None = None, device: str = "cpu"
) -> Predictor:
    """A Predictor: a run (torch, on `device`), an export or `NAME@alias|vN` (ONNX, CPU)."""
    if is_url(spec):  # a run or an export on a bucket
        root = root_of(spec)
        if has_checkpoint(root):
            return _torch_predictor(spec, spec, device)
        if root.exists(DESCRIPTOR):
            workdir = workdir or Path(tempfile.mkdtemp(prefix="csdm-eval-"))
            folder = workdir / f"export-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
            if not folder.exists():  # exactly the bytes the descriptor vouches for
                folder.mkdir(parents=True)
                for name, data in export_payload(root).items():
                    (folder / name).write_bytes(data)
            return _onnx_predictor(spec, folder, "export", {"url": spec})
    path = Path(spec)
    if (path / CKPT).is_file():
        return _torch_predictor(spec, path, device)
    if (path / DESCRIPTOR).is_file():
        return _onnx_predictor(spec, path, "export")
    if registry is None:
        raise EvalError(
            f"{spec}: not a run folder (no {CKPT}) nor an export (no policy.json); for a "
            "registered model give NAME@alias, NAME@vN or NAME with --registry"
        )
    name, _, ref = spec.partition("@")
    version = int(ref[1:]) if ref[:1] == "v" and ref[1:].isdigit() else None
    alias = ref if ref and version is None else None
    reg = open_registry(registry, name)
    v = reg.resolve(version=version, alias=alias)
    folder = Path(v.location)
    if not folder.is_dir():  # an object store or the Hub: a verified download first
        workdir = workdir or Path(tempfile.mkdtemp(prefix="csdm-eval-"))
        folder = reg.download(v, workdir / name / f"v{v.version}")
    extra = {"registry": str(registry), "name": name, "version": v.version}
    return _onnx_predictor(spec, folder, "registry", extra)


def _targets(lab: Labels, i: int, opts: LossOptions) -> Targets:
    rows = slice(lab.offsets[i], lab.offsets[i + 1])
    batch = {
        k: torch.from_numpy(getattr(lab, k)[rows])[None]
        for k in ("keys", "clicks", "mouse_x", "mouse_y", "kill", "death")
    }
    return make_targets(batch, opts)


def _f1(pred: np.ndarray, true: np.ndarray) -> dict[str, float | None]:
    tp = int((pred & true).sum())
    fp, fn = int((pred & ~true).sum()), int((~pred & true).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,  # None: never pressed
        "support": int(true.sum()),
    }


def _overall(rows: list[dict]) -> dict[str, float]:
    """Frame-weighted means of episode metrics (the TD error over each episode's steps)."""
    n = np.array([r["frames"] for r in rows], np.float64)
    out = {k: float(np.average([r[k] for r in rows], weights=n)) for k in SEED_ACCURACIES}
    steps = np.maximum(n - 1, 0)  # a 1-frame episode has no TD step (and a NaN mean)
    vals = np.nan_to_num([r["value_mse"] for r in rows])
    out["value_mse"] = float(np.average(vals, weights=steps)) if steps.sum() else 0.0
    out["seed_mean"] = float(np.mean([out[k] for k in SEED_ACCURACIES]))
    return out


def check_split(data: str | Path | Dataset, split: str | None) -> Dataset:
    """The dataset, once `split` (None: all) is one its episodes have."""
    ds = open_dataset(data)
    splits = sorted({s for s in ds.files.column("split").to_pylist() if s})
    if split is not None and split not in splits:
        have = ", ".join(splits) or "no split at all"
        raise EvalError(
            f"--split {split}: no episode of {ds.root.url} has that split (it has "
            f"{have}; or pass --split all)"
        )
    return ds


def evaluate(
    models: list[Predictor],
    data: str | Path | Dataset,
    split: str | None = "test",
    opts: LossOptions | None = None,
    on_episode: Callable[[int, int, str], None] | None = None,
    all_episodes: bool = False,
) -> EvalReport:
    """Score every model on the same episodes of `split` (None: every split).

    Only the episodes the quality filter kept, unless `all_episodes`.
    """
    opts = opts or LossOptions()
    ds = check_split(data, split)
    for m in models:
        if m.space != DEFAULT:
            raise EvalError(f"{m.name}: its action space differs from the dataset's labels")
    lab = load_labels(ds, SamplerConfig(split=split, keep_only=not all_episodes))
    if not lab.episodes:
        kept = "" if all_episodes else "kept, "
        raise EvalError(
            f"{ds.root.url}: no {kept}stored episodes in split {split!r}; evaluate another "
            "--split (or --all-episodes), or process with --test-fraction to hold episodes out"
        )
    probs: list[list[np.ndarray]] = [[] for _ in models]
    rows: list[list[dict]] = [[] for _ in models]
    targets = []
    for i, name in enumerate(lab.episodes):
        frames = ds.frames(name, 0, int(lab.lengths()[i]))
        t = _targets(lab, i, opts)
        targets.append(t)
        for j, m in enumerate(models):
            p = m.play(frames)
            probs[j].append(p)
            metrics = seed_metrics(torch.from_numpy(p)[None], t, opts, DEFAULT)
            rows[j].append({"episode": name, "frames": len(frames), **metrics})
        if on_episode:
            on_episode(i + 1, len(lab.episodes), name)
    keys = np.concatenate([t.keys[0].numpy() for t in targets]).astype(bool)
    clicks = np.concatenate([t.clicks[0].numpy() for t in targets]).astype(bool)
    mx = np.concatenate([t.mouse_x[0].numpy() for t in targets])
    my = np.concatenate([t.mouse_y[0].numpy() for t in targets])
    out = []
    for j, m in enumerate(models):
        p = np.concatenate(probs[j])
        heads = dict(
            zip(
                DEFAULT.heads,
                np.split(p, np.cumsum(list(DEFAULT.heads.values()))[:-1], axis=1),
                strict=True,
            )
        )
        per_key = {
            k: _f1(heads["keys"][:, i] > 0.5, keys[:, i]) for i, k in enumerate(DEFAULT.keys)
        }
        per_key |= {
            c: _f1(heads["clicks"][:, i] > 0.5, clicks[:, i])
            for i, c in enumerate(("lclick", "rclick"))
        }
        confusion = {}
        for head, true in (("mouse_x", mx), ("mouse_y", my)):
            n = DEFAULT.heads[head]
            cm = np.zeros((n, n), np.int64)
            np.add.at(cm, (true, heads[head].argmax(1)), 1)
            confusion[head] = cm.tolist()
        out.append(
            ModelEval(m.name, m.kind, m.source, _overall(rows[j]), per_key, confusion, rows[j])
        )
    return EvalReport(
        data=ds.root.url,
        data_commit=ds.commit,
        split=split,
        episodes=len(lab.episodes),
        frames=int(lab.offsets[-1]),
        models=out,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        targets=opts.to_dict(),
    )


def better(new: dict[str, float], old: dict[str, float], metric: str) -> bool:
    """Whether `new` beats `old` on `metric` (strictly; lower wins for errors)."""
    if metric not in new or metric not in old:
        raise EvalError(f"no metric {metric!r}; choose one of {sorted(new)}")
    if metric in LOWER_IS_BETTER:
        return new[metric] < old[metric]
    return new[metric] > old[metric]


GATE_METRICS = (*SEED_ACCURACIES, "seed_mean", "value_mse")


def gate(
    export_dir: str | Path,
    data: str,
    registry: str,
    name: str,
    metric: str = "seed_mean",
    split: str = "test",
    baseline: str = "production",
) -> tuple[bool, EvalReport | None]:
    """Evaluate a new export and the registry's `baseline` alias on the same split.

    Passes when the new model beats the baseline on `metric`, or when there is no baseline yet
    (then the report is None if the split has nothing to evaluate on).
    """
    if metric not in GATE_METRICS:
        raise EvalError(f"no metric {metric!r}; choose one of {', '.join(GATE_METRICS)}")
    has_baseline = baseline in open_registry(registry, name).index().get("aliases", {})
    with tempfile.TemporaryDirectory(prefix="csdm-gate-") as tmp:
        new = resolve_model(str(export_dir), None, Path(tmp))  # a folder or a bucket URL
        models = [replace(new, name="new")]
        if has_baseline:  # a baseline that fails verification is an error, never a free pass
            models.append(resolve_model(f"{name}@{baseline}", registry, Path(tmp)))
        try:
            report = evaluate(models, data, split)
        except EvalError:
            if has_baseline:
                raise
            return True, None
    if len(report.models) == 1:
        return True, report
    return better(report.models[0].metrics, report.models[1].metrics, metric), report
