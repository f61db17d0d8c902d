"""Views of a processed dataset, stored beside its frames (`csdm views`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from storage.dataset import CorruptFramesError, open_dataset
from storage.latents import FULL, read_latents
from storage.layout import OutLayout, check_name
from storage.sidearrays import (
    ViewSpec,
    read_views,
    record_view,
    stored_size,
    view_current,
    view_key,
    write_view,
)
from training.view_resize import make_view as resize


class ViewClashError(ValueError):
    """A view or latent of that name exists with another recipe."""


@dataclass(frozen=True)
class ViewJob:
    """One episode's view to make: small enough to travel to a Dask worker."""

    out: str
    episode: str
    spec: ViewSpec
    options: dict | None = None


@dataclass(frozen=True)
class ViewResult:
    """What became of one job: `written`, `present` or `failed`, with the reason and bytes."""

    episode: str
    status: str
    reason: str | None = None
    stored_bytes: int = 0
    view: str = ""  # the view's (or latent's) name


def check_view(out: str, spec: ViewSpec, options: dict | None = None) -> None:
    """Refuse a name already used by a view of another recipe, or by a latent."""
    check_name(spec.name, "view")
    if spec.name == FULL:  # `csdm encode --view full` means the frames themselves
        raise ViewClashError(f"{out}: 'full' names the full frames; choose another --name")
    layout = OutLayout.at(out, options)
    old = read_views(layout).get(spec.name)
    if old is not None and old.recipe != spec.recipe:
        raise ViewClashError(
            f"{out}: view {spec.name!r} exists with another recipe ({_describe(old)}); "
            f"choose another --name"
        )
    if spec.name in read_latents(layout):
        raise ViewClashError(f"{out}: {spec.name!r} is a latent's name; choose another --name")


def _describe(spec: ViewSpec) -> str:
    return f"{spec.height}x{spec.width}, {spec.fit}, {spec.filter}, {spec.overshoot}"


def view_jobs(out: str, spec: ViewSpec, options: dict | None = None) -> list[ViewJob]:
    """A job per stored episode."""
    ds = open_dataset(out, options)
    return [ViewJob(out, e, spec, options) for e in ds.episodes]


def make_view(job: ViewJob) -> ViewResult:
    """Write one episode's view unless a current one is there (same frames, same recipe)."""
    ds = open_dataset(job.out, job.options)
    sha, spec = ds.sha256(job.episode), job.spec
    key = view_key(ds.layout, spec.name, job.episode)
    if view_current(ds.layout, spec.name, job.episode, sha, spec.recipe):
        size = stored_size(ds.layout, key)
        return ViewResult(job.episode, "present", stored_bytes=size, view=spec.name)

    def part(lo: int, hi: int):  # a chunk of frames at a time: memory bounded by the size
        return resize(ds.frames(job.episode, lo, hi), spec)

    try:
        n = write_view(ds.layout, spec, job.episode, ds.n_frames(job.episode), part, sha)
    except CorruptFramesError as e:
        return ViewResult(job.episode, "failed", str(e), view=spec.name)
    return ViewResult(job.episode, "written", stored_bytes=n, view=spec.name)


def finish_views(
    out: str, spec: ViewSpec, results: list[ViewResult], options: dict | None = None
) -> ViewSpec:
    """Record the view, its recipe and its stored size in the catalog (`catalog/views.json`)."""
    spec = replace(spec, **totals(results))
    record_view(OutLayout.at(out, options), spec)
    return spec


def totals(results: list[ViewResult]) -> dict[str, int]:
    """`episodes` stored and their `stored_bytes`, from a run's results (failures left out)."""
    done = [r for r in results if r.status != "failed"]
    return {"episodes": len(done), "stored_bytes": sum(r.stored_bytes for r in done)}
