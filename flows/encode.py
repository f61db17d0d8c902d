"""The `encode` flow: latents of a view by a user's encoder, one Dask task per episode."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.jobs import run_jobs
from flows.process import dask_runner
from storage.latents import read_latents
from storage.layout import OutLayout
from tasks.encode import (
    EncodeError,
    EncodeJob,
    EncodeResult,
    encode_episode,
    finish_encode,
    plan_encode,
)


@task(name="encode-episode", retries=1, retry_delay_seconds=2)  # idempotent: resumes
def encode_task(job: EncodeJob) -> EncodeResult:
    """Write one episode's latents."""
    return encode_episode(job)


@flow(name="encode", log_prints=True, task_runner=dask_runner())
def encode_flow(
    out: str,
    encoder: str | None,
    view: str | None,
    name: str | None,
    device: str = "cpu",
    batch: int = 32,
    dtype: str = "float32",
    show_progress: bool = False,
    storage_options: dict[str, str] | None = None,
    refresh: bool = False,
) -> list[EncodeResult]:
    """Encode every episode's view (or full frames) to latents stored beside it; resumable.

    Args:
        out: A dataset written by `csdm process` (folder or URL).
        encoder: `MODULE:FACTORY`; FACTORY() returns a torch.nn.Module.
        view: A stored view's name, or "full".
        name: The latent's name.
        device: cpu or cuda.
        batch: Frames per encoder call.
        dtype: float32, float16 or bfloat16, as stored.
        show_progress: A progress bar on the terminal (the CLI sets it).
        storage_options: Non-secret fsspec options for URLs.
        refresh: Instead, remake every recorded latent where it is missing or stale, with
            its recorded encoder (which must still have the same parameters), view and dtype.

    """
    options = dict(storage_options or {})
    if refresh:
        asks = [
            (f"{s.module}:{s.factory}", s.view, s.name, s.dtype)
            for s in read_latents(OutLayout.at(out, options)).values()
        ]
    elif encoder and view and name:
        asks = [(encoder, view, name, dtype)]
    else:
        raise EncodeError("--encoder, --view and --name are needed (or --refresh)")
    jobs = []
    for target, v, n, d in asks:
        jobs += plan_encode(out, target, v, n, device, d, batch, options)
    results = run_jobs(encode_task.submit, jobs, "encode", show_progress, _failed)
    for r in results:
        if r.status == "failed":
            get_run_logger().error(r.reason)
    for spec in {j.spec.name: j.spec for j in jobs}.values():
        spec = finish_encode(out, spec, [r for r in results if r.view == spec.name], options)
        create_markdown_artifact(
            f"latent `{spec.name}` ({spec.module}:{spec.factory} on {spec.view}, "
            f"{spec.channels}x{spec.height}x{spec.width} {spec.dtype}): {spec.episodes} "
            f"episodes, {spec.stored_bytes:,} bytes stored",
            key="encode-size",
        )
    return results


def _failed(job: EncodeJob, reason: str) -> EncodeResult:
    return EncodeResult(job.episode, "failed", reason, view=job.spec.name)
