"""The `encode` flow: latents of a view by a user's encoder, one Dask task per episode."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.diamond import run_jobs
from flows.process import dask_runner
from tasks.encode import EncodeJob, EncodeResult, encode_episode, finish_encode, plan_encode


@task(name="encode-episode", retries=1, retry_delay_seconds=2)  # idempotent: resumes
def encode_task(job: EncodeJob, encoder: str) -> EncodeResult:
    """Write one episode's latents."""
    return encode_episode(job, encoder)


@flow(name="encode", log_prints=True, task_runner=dask_runner())
def encode_flow(
    out: str,
    encoder: str,
    view: str,
    name: str,
    device: str = "cpu",
    batch: int = 32,
    dtype: str = "float32",
    show_progress: bool = False,
    storage_options: dict[str, str] | None = None,
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

    """
    options = dict(storage_options or {})
    jobs = plan_encode(out, encoder, view, name, device, dtype, batch, options)
    results = run_jobs(lambda j: encode_task.submit(j, encoder), jobs, "encode", show_progress)
    for r in results:
        if r.status == "failed":
            get_run_logger().error(r.reason)
    if jobs:
        spec = finish_encode(out, jobs[0].spec, results, options)
        create_markdown_artifact(
            f"latent `{spec.name}` ({spec.module}:{spec.factory} on {spec.view}, "
            f"{spec.channels}x{spec.height}x{spec.width} {spec.dtype}): {spec.episodes} "
            f"episodes, {spec.stored_bytes:,} bytes stored",
            key="encode-size",
        )
    return results
