"""Latents of a view or of the full frames, made by a user's encoder (`csdm encode`)."""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, replace

import numpy as np
import torch

from storage.action_space import FRAME_SHAPE
from storage.dataset import CorruptFramesError, open_dataset
from storage.latents import (
    FULL,
    Encoder,
    LatentSpec,
    latent_current,
    latent_key,
    read_latents,
    record_latent,
    write_latent,
)
from storage.layout import OutLayout, check_name
from storage.sidearrays import (
    SideArrayError,
    open_array,
    read_views,
    stored_size,
    view_current,
    view_key,
)
from tasks.views import ViewResult, totals
from training.diamond_obs import to_float

_LOADED: dict[str, tuple[torch.nn.Module, Encoder]] = {}  # one encoder per worker process


class EncodeError(ValueError):
    """An encoder that cannot be used, or a view or name that cannot be encoded, in one line."""


@dataclass(frozen=True)
class EncodeJob:
    """One episode to encode: small enough to travel to a Dask worker."""

    out: str
    episode: str
    spec: LatentSpec
    view_recipe: dict | None
    device: str = "cpu"
    batch: int = 32
    options: dict | None = None


EncodeResult = ViewResult  # the same outcome: written, present or failed, with bytes


def load_encoder(target: str, device: str = "cpu") -> tuple[torch.nn.Module, Encoder]:
    """`MODULE:FACTORY` called once per process, in eval mode on `device`, with its identity."""
    if target in _LOADED:
        return _LOADED[target]
    module_name, sep, factory = target.partition(":")
    if not sep or not module_name or not factory:
        raise EncodeError(f"encoder {target!r} is not MODULE:FACTORY, e.g. mymodels:make_vae")
    try:
        make = getattr(importlib.import_module(module_name), factory)
    except ImportError as e:
        raise EncodeError(
            f"encoder {target!r}: module {module_name!r} does not import ({e})"
        ) from None
    except AttributeError:
        raise EncodeError(f"encoder {target!r}: {module_name} has no {factory!r}") from None
    try:
        model = make()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"it returned {type(model).__name__}, not a torch.nn.Module")
        model = model.to(device).eval()
        identity = Encoder(module_name, factory, params_sha256(model))
    except Exception as e:  # the user's code: any failure is one line naming it
        why = f"{factory}() failed ({type(e).__name__}: {e})"
        raise EncodeError(f"encoder {target!r}: {why}") from None
    _LOADED[target] = (model, identity)
    return _LOADED[target]


def params_sha256(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer: names, dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # flattened first: a 0-d buffer (BatchNorm's `num_batches_tracked`) has no byte view
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def encode_batch(model: torch.nn.Module, x: torch.Tensor, dtype: str) -> torch.Tensor:
    """(B, 3, h, w) float in [-1, 1] to (B, C, h', w') latents of `dtype`, checked."""
    with torch.no_grad():
        y = model(x)
    if not isinstance(y, torch.Tensor) or y.dim() != 4 or y.shape[0] != x.shape[0]:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise EncodeError(
            f"the encoder maps {tuple(x.shape)} to {got}; it must return (B, C, h', w') with "
            f"B = {x.shape[0]}"
        )
    return y.to(getattr(torch, dtype))


def plan_encode(
    out: str,
    target: str,
    view: str,
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    batch: int = 32,
    options: dict | None = None,
) -> list[EncodeJob]:
    """Check the name, view and encoder (one probe batch), and make a job per episode."""
    check_name(name, "latent")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise EncodeError(f"dtype {dtype!r}: one of float32, float16, bfloat16")
    if batch < 1:
        raise EncodeError(f"batch {batch}: must be at least 1")
    ds = open_dataset(out, options)
    views = read_views(ds.layout)
    if name in views or name == FULL:
        raise EncodeError(f"{out}: {name!r} is a view's name; choose another --name")
    if view != FULL and view not in views:
        raise EncodeError(
            f"{out}: no view {view!r} (stored: {', '.join(sorted(views)) or 'none'}; "
            f"`csdm views` makes one, or use --view full)"
        )
    recipe = None if view == FULL else views[view].recipe
    h, w = FRAME_SHAPE[:2] if view == FULL else (views[view].height, views[view].width)
    model, encoder = load_encoder(target, device)
    probe = encode_batch(model, torch.zeros((1, 3, h, w), device=device), dtype)
    _, c, lh, lw = probe.shape
    spec = LatentSpec(name, view, *encoder.to_dict().values(), dtype, c, lh, lw)
    old = read_latents(ds.layout).get(name)
    if old is not None and replace(old, episodes=0, stored_bytes=0) != spec:
        raise EncodeError(
            f"{out}: latent {name!r} exists from another encoder, view or dtype "
            f"({old.module}:{old.factory} on {old.view}, {old.dtype}); choose another --name"
        )
    return [EncodeJob(out, e, spec, recipe, device, batch, options) for e in ds.episodes]


def encode_episode(job: EncodeJob) -> EncodeResult:
    """Write one episode's latents unless current ones are there."""
    ds = open_dataset(job.out, job.options)
    spec, sha = job.spec, ds.sha256(job.episode)
    target = f"{spec.module}:{spec.factory}"
    key = latent_key(ds.layout, spec.name, job.episode)
    if latent_current(ds.layout, spec, job.episode, sha, job.view_recipe):
        size = stored_size(ds.layout, key)
        return EncodeResult(job.episode, "present", stored_bytes=size, view=spec.name)
    model, encoder = load_encoder(target, job.device)
    if encoder != spec.encoder:
        return EncodeResult(
            job.episode,
            "failed",
            f"{target}: this worker's encoder has other parameters than the planned one "
            "(a factory must return the same weights each call: load or seed them)",
            view=spec.name,
        )
    if spec.view != FULL and not view_current(
        ds.layout, spec.view, job.episode, sha, job.view_recipe
    ):
        why = f"{job.episode}: view {spec.view} is stale; rerun `csdm views`"
        return EncodeResult(job.episode, "failed", why, view=spec.name)
    frames = frame_source(ds, job)

    def part(lo: int, hi: int) -> np.ndarray:
        out = []
        for a in range(lo, hi, job.batch):
            y = encode_batch(model, frames(a, min(hi, a + job.batch)), spec.dtype).cpu()
            out.append((y.view(torch.uint16) if spec.dtype == "bfloat16" else y).numpy())
        return np.concatenate(out)

    try:
        n = write_latent(
            ds.layout, spec, job.episode, ds.n_frames(job.episode), part, sha, job.view_recipe
        )
    except (CorruptFramesError, SideArrayError, EncodeError) as e:
        return EncodeResult(job.episode, "failed", str(e), view=spec.name)
    return EncodeResult(job.episode, "written", stored_bytes=n, view=spec.name)


def frame_source(ds, job: EncodeJob, gpu_decode: bool | None = None):
    """`frames(lo, hi)`: (B, 3, h, w) float in [-1, 1] on the job's device.

    Full frames are decoded on the GPU when the device is CUDA (or `gpu_decode`).
    """
    device = torch.device(job.device)
    if job.spec.view != FULL:
        arr = open_array(ds.root, view_key(ds.layout, job.spec.view, job.episode))
        return lambda lo, hi: _scale(torch.from_numpy(arr[lo:hi]).to(device))
    if gpu_decode is None:
        gpu_decode = device.type == "cuda"
    if gpu_decode:  # only compressed chunks cross the bus
        from training.device_decode import Packer, check_device_decode, decode_on_device

        check_device_decode()

        def on_device(lo: int, hi: int) -> torch.Tensor:
            packer = Packer(ds)
            packer.add(job.episode, lo, hi)
            return to_float(decode_on_device(packer.result(), FRAME_SHAPE, hi - lo, device)[0])

        return on_device
    return lambda lo, hi: to_float(torch.from_numpy(ds.frames(job.episode, lo, hi)).to(device))


def _scale(x: torch.Tensor) -> torch.Tensor:
    """A view's uint8 RGB to float32 in [-1, 1], as `to_float` does full BGR frames."""
    return x.float().div(255).mul(2).sub(1)


def finish_encode(
    out: str, spec: LatentSpec, results: list[EncodeResult], options: dict | None = None
) -> LatentSpec:
    """Record the latent, its encoder and its stored size in `catalog/latents.json`."""
    spec = replace(spec, **totals(results))
    record_latent(OutLayout.at(out, options), spec)
    return spec
