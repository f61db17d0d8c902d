"""One way from a preset and overrides to a run's `TrainConfig`, for the CLI and the flow."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from storage.run import CONFIG_FORMAT
from training.checkpoint import Checkpoint
from training.data import SamplerConfig
from training.loss import LossOptions
from training.train import TrainConfig, continuing


def resolve_config(
    preset: str | None = None,
    *,
    init: TrainConfig | None = None,
    resumed: Checkpoint | None = None,
    sampler: dict | None = None,
    subselect: bool = False,
    clean_ups: dict | None = None,
    padding: str | None = None,
    keras_clip: bool | None = None,
    **fields,
) -> TrainConfig:
    """The config a run trains with: the preset, then each override, later ones winning.

    In order: the preset (default: `init`'s, else tiny); `init`'s network and loss; `sampler`
    fields over the seed's sampler (or its subselection), the preset's window and jitter
    unless given; `fields` (None keeps the preset's); `clean_ups` on a fresh loss; a resumed
    checkpoint's network, loss and draws; then `padding` and `keras_clip`.
    """
    cfg = TrainConfig.preset_config(preset or (init.preset if init else "tiny"))
    if init is not None:  # fine-tuning keeps the network and the loss it was trained with
        cfg = replace(cfg, model=init.model, loss=init.loss)
    if sampler is not None:
        base = SamplerConfig.seed_subselect() if subselect else SamplerConfig()
        given = dict(sampler)  # split None means every split; window and weapon None: default
        given["window"] = given.get("window") or cfg.sampler.window
        if given.get("weapon") is None:
            given.pop("weapon", None)
        cfg = replace(cfg, sampler=replace(base, jitter=cfg.sampler.jitter, **given))
    cfg = replace(cfg, **{k: v for k, v in fields.items() if v is not None})
    if clean_ups is not None:
        cfg = replace(cfg, loss=LossOptions(**clean_ups, keras_clip=cfg.loss.keras_clip))
    cfg = continuing(cfg, resumed)  # a resumed run keeps its network, loss and draws
    if padding is not None:
        cfg = replace(cfg, model=replace(cfg.model, padding=padding))
    if keras_clip is not None:
        cfg = replace(cfg, loss=replace(cfg.loss, keras_clip=keras_clip))
    return cfg


def write_config_file(cfg: TrainConfig, path: str | Path) -> Path:
    """A config for `csdm train --config` (torchrun's ranks read it), with its format version."""
    from storage.localfile import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"format_version": CONFIG_FORMAT, **cfg.to_dict()}, indent=2))
    return Path(path)


def read_config_file(path: str | Path) -> TrainConfig:
    """The config `write_config_file` wrote (or a run's config.json)."""
    try:
        return TrainConfig.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a csdm train config ({type(e).__name__}: {e})") from None
