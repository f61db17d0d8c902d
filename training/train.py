"""The training loop: one process, or one per GPU under `torchrun --no-python csdm train` (DDP).

`train(data, run, cfg)` streams windows from a processed dataset, optimises the seed's loss and
keeps `RUN/ckpt.pt` (model, optimiser, scaler, stream position, RNG states) current, so an
interrupted run resumes where it stopped with the same batches it would have seen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from storage.dataset import CorruptFramesError, open_dataset
from storage.metrics import SEED_ACCURACIES
from storage.run import CONFIG_FORMAT, MetricsLog, read_metrics, run_root, write_config
from training.actions import DEFAULT
from training.checkpoint import (
    Checkpoint,
    checkpoint_path,
    has_checkpoint,
    load_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from training.data import (
    SamplerConfig,
    StreamState,
    WindowStream,
    augment,
    build_index,
    dataset_identity,
    load_labels,
    make_loader,
    to_device,
    why_untrainable,
)
from training.loss import LossOptions, make_targets, metrics, seed_loss
from training.model import PRESETS, ModelConfig, Policy, count_parameters, load_trunk_weights

METRIC_NAMES = ("loss", *SEED_ACCURACIES, "value_mse", "seed_mean")
# the columns of RUN/metrics.csv
METRICS_FIELDS = (
    "step",
    "epoch",
    "frames",
    "seconds",
    "frames_per_s",
    "lr",
    "corrupt_windows",
    *METRIC_NAMES,
)


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint."""

    preset: str = "tiny"
    steps: int = 20
    batch_size: int = 2
    lr: float = 1e-4  # the seed's Adam learning rate
    grad_clip: float = 1.0  # 0 disables (the seed had none)
    amp: bool = True  # CUDA only: bf16 where supported, else fp16 with loss scaling
    augment: bool = True
    workers: int = 2  # loader threads per rank; 0 reads in the training thread
    seed: int = 0
    log_every: int = 5
    ckpt_every: int = 50
    imagenet: str | None = None  # torchvision efficientnet_b0 state dict file
    init_from: str | None = None  # a run whose weights start this one (fine-tuning)
    on_corrupt: str = "stop"  # a corrupt frame chunk: stop with its error, or "skip" its episode
    read_threads: int = 8  # windows each loader thread reads at once (object stores)
    decode: str = "cpu"  # "cuda": loaders hand over compressed chunks, the GPU decodes them
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossOptions = field(default_factory=LossOptions)

    @classmethod
    def preset_config(cls, name: str, **kw) -> TrainConfig:
        """`tiny`: seconds on a CPU (16-frame windows, a shrunken net); `paper`: the seed's."""
        if name == "tiny":
            base = dict(
                model=PRESETS["tiny"],
                sampler=SamplerConfig(window=16, jitter=4),
                batch_size=2,
                workers=0,
            )
        elif name == "paper":
            base = dict(
                model=PRESETS["paper"],
                sampler=SamplerConfig(),
                batch_size=1,
                loss=LossOptions(keras_clip=True),
            )
        else:
            raise ValueError(f"unknown preset {name!r}: use tiny or paper")
        return cls(preset=name, **{**base, **kw})

    def to_dict(self) -> dict:
        """JSON-ready form, stored in checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of `to_dict`."""
        d = dict(d)
        d.pop("data", None)  # a run's config.json also says which data (and commit) it read
        if d.pop("format_version", CONFIG_FORMAT) != CONFIG_FORMAT:
            raise ValueError(f"run config format version is not {CONFIG_FORMAT}; start a new run")
        d["model"] = ModelConfig.from_dict(d["model"])
        d["sampler"] = SamplerConfig.from_dict(d["sampler"])
        d["loss"] = LossOptions(**d["loss"])
        return cls(**d)


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run reports."""

    run: str
    step: int
    frames: int
    seconds: float
    frames_per_s: float
    metrics: dict[str, float]


def _dist() -> tuple[int, int, int]:
    """(rank, world, local rank) under torchrun, else (0, 1, 0)."""
    if "RANK" not in os.environ:
        return 0, 1, 0
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _init_from(model: Policy, cfg: TrainConfig) -> dict:
    """Start from another run's weights (an import or a trained run); its provenance is kept."""
    init = load_checkpoint(cfg.init_from)
    was = TrainConfig.from_dict(init.config).model
    if was != cfg.model:
        raise ValueError(
            f"{cfg.init_from}: its network ({was}) differs from this run's ({cfg.model}); "
            "fine-tune with the same preset and model options"
        )
    try:
        model.load_state_dict(init.model)
    except RuntimeError as e:  # another action space, or a hand-edited checkpoint
        first = str(e).strip().splitlines()[0]
        raise ValueError(
            f"{cfg.init_from}: its weights do not fit this network ({first})"
        ) from None
    return {"init_from": str(cfg.init_from), "step": init.step, "source": init.source}


def last_result(run: str | Path) -> TrainResult:
    """What a run's last logged step says (how the train flow reads a torchrun run)."""
    last = read_metrics(run)[-1]
    metrics = {k: last[k] for k in last if k.endswith(("acc", "mse")) or k in ("loss", "seed_mean")}
    return TrainResult(
        str(run), last["step"], last["frames"], last["seconds"], last["frames_per_s"], metrics
    )


def continuing(cfg: TrainConfig, ckpt: Checkpoint | None) -> TrainConfig:
    """`cfg` with the network, loss and subselection draws of the run's checkpoint, if any."""
    if ckpt is None:
        return cfg
    saved = TrainConfig.from_dict(ckpt.config)
    sampler = replace(cfg.sampler, draws=saved.sampler.draws)
    return replace(cfg, model=saved.model, loss=saved.loss, sampler=sampler)


def _next_state(state: StreamState, epoch: int, batch: int, per_epoch: int) -> StreamState:
    epoch, cursor = (epoch + 1, 0) if batch + 1 >= per_epoch else (epoch, batch + 1)
    return replace(state, epoch=epoch, cursor=cursor)


def train(
    data: str | Path,
    run: str | Path,
    cfg: TrainConfig,
    resume: bool = False,
    on_log: Callable[[dict], None] | None = None,
    quiet: bool = False,
) -> TrainResult:
    """Train `cfg.steps` optimiser steps in total (counting steps of a resumed checkpoint)."""
    rank, world, local_rank = _dist()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = _device(local_rank)
    run = run_root(run)
    ckpt_path = checkpoint_path(run)
    ckpt = None
    if has_checkpoint(run):
        if not resume:
            raise FileExistsError(
                f"{run}: holds a checkpoint; pass --resume to continue it, "
                "or choose a new --run folder"
            )
        ckpt = read_checkpoint(ckpt_path)
        if not ckpt.resumable:
            raise ValueError(
                f"{ckpt_path}: holds weights only (imported or untrained), nothing to resume; "
                f"fine-tune them into a new run: csdm train DATA --run NEW --init-from {run}"
            )
        saved = TrainConfig.from_dict(ckpt.config)
        if (saved.model, saved.sampler) != (cfg.model, cfg.sampler):
            was, now = (
                {**saved.model.to_dict(), **saved.sampler.to_dict()},
                {**cfg.model.to_dict(), **cfg.sampler.to_dict()},
            )
            diff = ", ".join(f"{k} {was[k]!r} -> {now[k]!r}" for k in was if was[k] != now[k])
            raise ValueError(
                f"{ckpt_path}: was trained with another network or sampler ({diff}); "
                "resume with the same --preset and options"
            )
        # the stream's cursor counts global batches of batch_size x ranks drawn from the seed
        was = (saved.seed, saved.batch_size, ckpt.world)
        if was != (cfg.seed, cfg.batch_size, world):
            raise ValueError(
                f"{ckpt_path}: seed, batch size and ranks were {was}, now "
                f"{(cfg.seed, cfg.batch_size, world)}; resume with the same ones (or start a "
                "new --run) so the batch order continues exactly"
            )
    ds = open_dataset(data)  # one opening serves every start-up check (a bucket: ~20 requests)
    identity = dataset_identity(ds)
    if ckpt is not None and ckpt.data.get("identity") not in (None, identity):
        raise ValueError(
            f"{ckpt_path}: was trained on another dataset ({ckpt.data.get('root')}: other "
            f"episodes or contents than {data}); resume on that dataset, or start a new --run"
        )
    labels = load_labels(ds, cfg.sampler)
    index = build_index(labels, cfg.sampler, cfg.seed)
    problem = why_untrainable(ds, cfg.sampler, labels, index, cfg.batch_size * world)
    if problem:
        raise ValueError(problem)

    torch.manual_seed(cfg.seed + rank)
    model = Policy(cfg.model, DEFAULT).to(device)
    if cfg.imagenet and ckpt is None:
        load_trunk_weights(model, cfg.imagenet)
    source = ckpt.source if ckpt is not None else None
    if cfg.init_from and ckpt is None:
        source = _init_from(model, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.amp and amp_dtype == torch.float16)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 1000 + rank)
    state, step = StreamState(seed=cfg.seed), 0
    if ckpt is not None:
        model.load_state_dict(ckpt.model)
        opt.load_state_dict(ckpt.optimizer)
        scaler.load_state_dict(ckpt.scaler)
        state, step = StreamState(**ckpt.stream), ckpt.step
    net = (
        DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
        if world > 1
        else model
    )

    stream = WindowStream(
        str(ds.root),  # on the Hub, the commit opened above: the branch may move meanwhile
        index,
        cfg.batch_size,
        state,
        rank,
        world,
        cfg.on_corrupt,
        cfg.read_threads,
        cfg.decode,
    )
    loader = make_loader(stream, cfg.workers)
    log = MetricsLog(run, METRICS_FIELDS)
    if rank == 0:  # only now: a run that could not start leaves no config behind
        write_config(run, {**cfg.to_dict(), "data": {"root": str(data), "commit": ds.commit}})
        log.truncate_after(step)
        if not quiet:
            print(
                f"[csdm train] {cfg.preset}: {count_parameters(model) / 1e6:.2f}M parameters, "
                f"{len(index)} windows of {cfg.sampler.window} frames, "
                f"{stream.batches_per_epoch} batches/epoch x {world} rank(s), {device}"
            )
    # what the run read: the source's Hub revision, the dataset's identity and its Hub commit
    inputs = {
        "root": str(data),
        "revision": ds.manifest.revision,
        "identity": identity,
        "commit": ds.commit,
    }
    frames_per_step = cfg.batch_size * cfg.sampler.window * world
    t0, done = time.perf_counter(), 0
    last = dict(ckpt.metrics) if ckpt is not None else {}  # if no step is left to do
    model.train()
    batches = iter(loader)
    if ckpt is not None:
        torch.set_rng_state(ckpt.rng[rank]["cpu"])
        gen.set_state(ckpt.rng[rank]["gen"])
        if cuda and ckpt.rng[rank].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt.rng[rank]["cuda"])
    corrupt_windows, corrupt_eps, empty_run = 0, set(), 0
    while step < cfg.steps:
        batch = next(batches)
        epoch, bidx = int(batch.pop("epoch")), int(batch.pop("batch"))
        bad = batch.pop("corrupt_episodes")
        if bad:
            corrupt_windows += len(bad)
            for name in sorted(set(bad) - corrupt_eps):
                print(
                    f"[csdm train] skipping corrupt episode {name} (--on-corrupt skip); "
                    f"`csdm verify {data}` lists every bad chunk",
                    flush=True,
                )
            corrupt_eps |= set(bad)
        if len(batch["keys"]) == 0:  # every window was corrupt: no step on this batch
            if world > 1:
                raise RuntimeError(f"{data}: a whole batch was corrupt on rank {rank}")
            empty_run += 1
            if empty_run >= max(1, stream.batches_per_epoch):  # a whole epoch of nothing
                raise CorruptFramesError(
                    f"{data}: no good episode left to train on ({len(corrupt_eps)} skipped as "
                    f"corrupt: {', '.join(sorted(corrupt_eps)[:5])}); `csdm verify {data} "
                    "--repair`, then `csdm process`"
                )
            state = _next_state(state, epoch, bidx, stream.batches_in(epoch))
            continue
        empty_run = 0
        batch = to_device(batch, device)
        targets = make_targets(batch, cfg.loss)
        frames = augment(batch["frames"], gen) if cfg.augment else batch["frames"]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda and cfg.amp):
            logits, _ = net(frames)
        loss = seed_loss(logits, targets, cfg.loss)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        step, done = step + 1, done + 1
        state = _next_state(state, epoch, bidx, stream.batches_in(epoch))
        if step % cfg.log_every == 0 or step == cfg.steps:
            m = {"loss": loss.detach(), **metrics(logits.detach(), targets, cfg.loss)}
            vals = torch.tensor([float(v) for v in m.values()], device=device)
            if world > 1:
                dist.all_reduce(vals)
                vals /= world
            secs = time.perf_counter() - t0
            last = dict(zip(m, vals.tolist(), strict=True))
            row = {
                "step": step,
                "epoch": epoch,
                "frames": step * frames_per_step,
                "seconds": round(secs, 3),
                "frames_per_s": done * frames_per_step / secs,
                "lr": cfg.lr,
                "corrupt_windows": corrupt_windows,
                **last,
            }
            if rank == 0:
                log.write(row)
                if not quiet:
                    print(
                        f"[csdm train] step {step}/{cfg.steps} loss {last['loss']:.4f} "
                        f"wasd {last['wasd_acc']:.3f} lclick {last['lclick_acc']:.3f} "
                        f"mouse_x {last['mouse_x_acc']:.3f} mouse_y {last['mouse_y_acc']:.3f} "
                        f"value_mse {last['value_mse']:.3f} "
                        f"{row['frames_per_s']:.0f} frames/s",
                        flush=True,
                    )
                if on_log:
                    on_log(row)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            _checkpoint(
                ckpt_path,
                model,
                opt,
                scaler,
                state,
                step,
                cfg,
                gen,
                world,
                rank,
                inputs,
                last,
                source,
            )
    batches.close()  # no more reading ahead
    secs = time.perf_counter() - t0
    if world > 1:
        dist.barrier()
    return TrainResult(
        str(run), step, done * frames_per_step, secs, done * frames_per_step / max(secs, 1e-9), last
    )


def _checkpoint(
    path: str,
    model,
    opt,
    scaler,
    state: StreamState,
    step: int,
    cfg: TrainConfig,
    gen: torch.Generator,
    world: int,
    rank: int,
    inputs: dict,
    last: dict,
    source: dict | None,
) -> None:
    """Every rank's RNG state is gathered; rank 0 writes the file atomically."""
    rng = {
        "cpu": torch.get_rng_state(),
        "gen": gen.get_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }
    rngs = [None] * world
    if world > 1:
        dist.all_gather_object(rngs, rng)
    else:
        rngs = [rng]
    if rank != 0:
        return
    ckpt = Checkpoint(
        model=model.state_dict(),
        config=cfg.to_dict(),
        action_space=DEFAULT.to_dict(),
        step=step,
        metrics=last,
        data=inputs,
        world=world,
        optimizer=opt.state_dict(),
        scaler=scaler.state_dict(),
        stream=state.to_dict(),
        rng=rngs,
        source=source,
    )
    write_checkpoint(path, ckpt)


def save_untrained(run: str | Path, preset: str, seed: int = 0) -> str:
    """A step-0 checkpoint of a freshly initialised `preset` network (export and latency checks)."""
    cfg = TrainConfig.preset_config(preset, seed=seed)
    torch.manual_seed(seed)
    model = Policy(cfg.model, DEFAULT).state_dict()
    ckpt = Checkpoint(model, cfg.to_dict(), DEFAULT.to_dict())
    return write_checkpoint(checkpoint_path(run), ckpt)
