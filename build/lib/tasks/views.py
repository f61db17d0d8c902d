"""Low-resolution views of a processed dataset, stored beside its frames (`csdm views`)."""

from __future__ import annotations

from dataclasses import dataclass

from storage.dataset import CorruptFramesError, open_dataset
from storage.layout import OutLayout
from storage.sidearrays import ViewSpec, record_view, view_current, view_name, write_view
from training.diamond_obs import low_res


@dataclass(frozen=True)
class ViewJob:
    """One episode's view to make: small enough to travel to a Dask worker."""

    out: str
    episode: str
    size: tuple[int, int]
    options: dict | None = None

    @property
    def spec(self) -> ViewSpec:
        """The view's parameters."""
        return ViewSpec(view_name(self.size), *self.size)


@dataclass(frozen=True)
class ViewResult:
    """What became of one job: `written`, `present` or `failed`, with the reason."""

    episode: str
    status: str
    reason: str | None = None


def view_jobs(out: str, size: tuple[int, int], options: dict | None = None) -> list[ViewJob]:
    """A job per committed episode."""
    ds = open_dataset(out, options)
    return [ViewJob(out, e, size, options) for e in ds.episodes]


def make_view(job: ViewJob) -> ViewResult:
    """Write one episode's view unless a current one is there (made from the same frames)."""
    ds = open_dataset(job.out, job.options)
    sha = ds.sha256(job.episode)
    if view_current(ds.layout, job.spec.name, job.episode, sha):
        return ViewResult(job.episode, "present")

    def part(lo: int, hi: int):  # a chunk of frames at a time: memory bounded by the size
        return low_res(ds.frames(job.episode, lo, hi), job.size).numpy()

    try:
        write_view(ds.layout, job.spec, job.episode, ds.n_frames(job.episode), part, sha)
    except CorruptFramesError as e:
        return ViewResult(job.episode, "failed", str(e))
    return ViewResult(job.episode, "written")


def finish_views(out: str, size: tuple[int, int], episodes: int, options=None) -> ViewSpec:
    """Record the view and its parameters in the catalog (`catalog/views.json`)."""
    spec = ViewSpec(view_name(size), *size, episodes=episodes)
    record_view(OutLayout.at(out, options), spec)
    return spec
