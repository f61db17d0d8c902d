"""`csdm train`, `csdm export` and `csdm register`: thin glue over `training/` and the registry."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.cli_errors import fail
from flows.cli_options import StorageOptions, storage_options

console = Console(stderr=True)
report = Console()


def train(
    data: Annotated[
        str,
        typer.Argument(
            help="A dataset written by `csdm process`: a folder or a URL (s3://bucket/out)."
        ),
    ],
    run: Annotated[
        str, typer.Option(help="Run folder or bucket URL: checkpoint, config, metrics.")
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            help="tiny (CPU, seconds) or paper (the seed's). Default: tiny, or the preset of "
            "the --init-from or resumed run."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Total optimiser steps.")] = 20,
    resume: Annotated[bool, typer.Option(help="Continue RUN from its checkpoint.")] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Windows per step per GPU (default: tiny 2, paper 1)."),
    ] = None,
    window: Annotated[
        int | None, typer.Option(min=2, help="Frames per window (default: tiny 16, paper 96).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Loader threads per rank (default: tiny 0, paper 2)."),
    ] = None,
    read_threads: Annotated[
        int,
        typer.Option(
            min=1, help="Windows each loader process reads at once (object stores: 8-16)."
        ),
    ] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed of init, order and augmentation.")] = 0,
    split: Annotated[
        str, typer.Option(help="Catalog split to train on ('all': every one).")
    ] = "train",
    all_episodes: Annotated[bool, typer.Option(help="Include quality-rejected episodes.")] = False,
    subselect: Annotated[
        bool,
        typer.Option(
            help="The seed's subselection (AK-47 segments, kill segments, no motionless ones)."
        ),
    ] = False,
    weapon: Annotated[str | None, typer.Option(help="Only segments holding this weapon.")] = None,
    imagenet: Annotated[
        Path | None,
        typer.Option(help="torchvision efficientnet_b0 weights (needs --padding torch)."),
    ] = None,
    padding: Annotated[
        str | None,
        typer.Option(
            help="keras: stride-2 padding and BGR channels as the seed's Keras model; "
            "torch: as torchvision's weights expect. Default: keras, or the resumed or "
            "--init-from run's."
        ),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            help="Start from this run's weights (e.g. one written by `csdm import-keras`): "
            "fine-tuning with a fresh optimiser. Its network, preset and loss are kept."
        ),
    ] = None,
    keras_clip: Annotated[
        bool | None,
        typer.Option(help="Keras' clipped cross-entropy (default: on for paper, off for tiny)."),
    ] = None,
    augment: Annotated[bool, typer.Option(help="The seed's brightness/contrast jitter.")] = True,
    amp: Annotated[bool, typer.Option(help="Mixed precision on CUDA.")] = True,
    fold_mouse: Annotated[bool, typer.Option(help="Fold extreme mouse bins inward.")] = True,
    fill_clicks: Annotated[bool, typer.Option(help="Fill 101 / 1001 left-click gaps.")] = True,
    log_every: Annotated[int, typer.Option(min=1, help="Log metrics every N steps.")] = 5,
    ckpt_every: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps.")] = 50,
    on_corrupt: Annotated[
        str,
        typer.Option(
            help="A corrupt stored chunk: stop with its error, or skip its episode "
            "and count it (stop or skip)."
        ),
    ] = "stop",
    decode: Annotated[
        str,
        typer.Option(
            help="Where frames are decoded: cpu (loader threads) or cuda (the GPU, with "
            "nvCOMP; loaders only read)."
        ),
    ] = "cpu",
    config: Annotated[
        Path | None,
        typer.Option(
            help="A train config file (as the train flow writes for torchrun): it replaces "
            "every option above but --steps."
        ),
    ] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Train the policy on a processed dataset; under torchrun, one process per GPU (DDP)."""
    from dataclasses import replace

    from training.resolve import read_config_file, resolve_config
    from training.train import TrainConfig
    from training.train import train as run_training

    storage_options(storage_option)
    if on_corrupt not in ("stop", "skip"):
        fail(f"--on-corrupt must be stop or skip, not {on_corrupt!r}")
    from training.device_decode import DECODES, DeviceDecodeError, check_device_decode

    if decode not in DECODES:
        fail(f"--decode must be {' or '.join(DECODES)}, not {decode!r}")
    if decode == "cuda":
        try:
            check_device_decode()
        except DeviceDecodeError as e:
            fail(str(e))
    from training.checkpoint import CheckpointError, has_checkpoint, load_checkpoint

    if padding not in (None, "keras", "torch"):
        fail(f"--padding must be keras or torch, not {padding!r}")
    init = None
    if init_from is not None:
        try:
            init = TrainConfig.from_dict(load_checkpoint(init_from).config)
        except (FileNotFoundError, CheckpointError) as e:
            fail(str(e))
    resumed = None
    if resume and has_checkpoint(run):  # a resumed run keeps its network, loss and draws
        try:
            resumed = load_checkpoint(run)
        except CheckpointError as e:
            fail(str(e))
    try:
        if config is not None:
            cfg = replace(read_config_file(config), steps=steps)
        else:
            cfg = resolve_config(
                preset,
                init=init,
                resumed=resumed,
                subselect=subselect,
                sampler={
                    "window": window,
                    "split": None if split == "all" else split,
                    "keep_only": not all_episodes,
                    "weapon": weapon,
                },
                clean_ups={"fold_mouse_extremes": fold_mouse, "fill_click_gaps": fill_clicks},
                padding=padding,
                keras_clip=keras_clip,
                steps=steps,
                lr=lr,
                seed=seed,
                augment=augment,
                amp=amp,
                batch_size=batch_size,
                workers=workers,
                read_threads=read_threads,
                imagenet=str(imagenet) if imagenet else None,
                init_from=str(init_from) if init_from else None,
                log_every=log_every,
                ckpt_every=ckpt_every,
                on_corrupt=on_corrupt,
                decode=decode,
            )
    except ValueError as e:
        fail(str(e))
    from storage.dataset import DatasetFormatError, open_dataset

    try:
        open_dataset(data)
    except (DatasetFormatError, OSError) as e:
        fail(str(e))
    rank0 = os.environ.get("RANK", "0") == "0"
    bar = Progress(
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[item]}"),
        console=console,
        disable=not rank0,
    )
    with bar:
        task = bar.add_task("train", total=steps, item="")

        def on_log(row: dict) -> None:
            bar.update(
                task,
                completed=row["step"],
                item=f"loss {row['loss']:.4f} {row['frames_per_s']:.0f} frames/s",
            )

        try:
            result = run_training(data, run, cfg, resume=resume, on_log=on_log)
        except (FileExistsError, FileNotFoundError, ValueError) as e:
            fail(str(e))
    if rank0:
        report.print(
            f"trained {result.step} steps into {run} "
            f"({result.frames_per_s:.0f} frames/s this session)"
        )
        report.print(json.dumps(result.metrics, indent=None))
        report.print(f"next: csdm export {run} --out {run}/export")


def import_keras(
    prefix: Annotated[
        Path,
        typer.Argument(
            help="PREFIX of PREFIX.json and PREFIX.h5 as the seed's tp_save_model wrote them "
            "(its _stateful twin too)."
        ),
    ],
    run: Annotated[str, typer.Option(help="New run folder (or URL) for the imported checkpoint.")],
) -> None:
    """Import one of the seed's Keras models exactly (json and h5 only, no TensorFlow)."""
    from training.keras_import import KerasImportError, import_keras

    try:
        ckpt = import_keras(prefix, run)
    except (KerasImportError, FileExistsError) as e:
        fail(str(e))
    n = sum(v.numel() for v in ckpt.model.values())
    report.print(
        f"imported {prefix.name} into {run}/ckpt.pt ({n / 1e6:.2f}M values, padding "
        f"keras{', stateful twin' if ckpt.source['stateful'] else ''})"
    )
    report.print(f"next: csdm export {run} --out {run}/export   (play it, or register it)")
    report.print(f"      csdm eval {run} DATA --split test")
    report.print(f"      csdm train DATA --run RUN2 --init-from {run}   (fine-tune)")


def export(
    run: Annotated[str, typer.Argument(help="A run folder or URL written by `csdm train`.")],
    out: Annotated[str, typer.Option(help="Folder or URL for policy.onnx and policy.json.")],
) -> None:
    """Export a run as a single-step ONNX policy and its descriptor."""
    from training.export import export as run_export

    try:
        d = run_export(run, out)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    f = d["files"][d["model"]]
    report.print(
        f"exported step {d['training']['step']} of {run} to {out}/{d['model']} "
        f"({f['size'] / 1e6:.1f} MB, sha256 {f['sha256'][:12]})"
    )
    report.print(f"next: csdm register {out} --registry REG --name NAME")


def register(
    export_dir: Annotated[str, typer.Argument(help="A folder or URL written by `csdm export`.")],
    registry: Annotated[
        str,
        typer.Option(
            help="Registry folder, hf://owner/repo, or an object-store URL (s3://bucket/models)."
        ),
    ],
    name: Annotated[str, typer.Option(help="Model name in the registry.")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
) -> None:
    """Register an export as the next immutable version of NAME."""
    from storage.lease import LeaseHeldError
    from storage.registry import RegistryError, open_registry

    try:
        v = open_registry(registry, name).register(export_dir, alias=alias)
    except (RegistryError, LeaseHeldError) as e:
        fail(str(e))
    if v.existing:
        report.print(
            f"{export_dir} is already registered as {name} v{v.version} (the same model file); "
            "nothing new stored" + (f", alias {alias} now points at v{v.version}" if alias else "")
        )
        return
    report.print(
        f"registered {name} v{v.version} at {v.location}" + (f" (alias {alias})" if alias else "")
    )
