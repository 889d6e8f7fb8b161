"""Scale-out on Ray: the blocks of one ``datagen generate`` run spread over Ray tasks.

The driver loads and checks everything (recipe, model, library) exactly as a
local run does and creates the output (``info.json`` and the store's
metadata), so a bad recipe fails before anything is scheduled. The blocks still
to do are dealt round-robin to ``num_tasks`` Ray tasks; each task loads the
model on its own worker (on the GPU Ray gave it, when the cluster has GPUs),
opens its own writer on the shared output with its own ``shard_index`` and
renders its explicit block list through the same code as a local run
(:func:`datagen.generate.run_job`: layout prefetch, background writing). The
on-disk format is the one of local and sharded runs; blocks land whole in the
manifest, so a failed or interrupted Ray run is resumed with ``resume=True``
(by Ray or locally) and the result validates with ``datagen validate``.

Every sample depends only on (recipe, seed, index), so the output equals a
single-process run bit for bit when the workers compute like the local
process: same device type and the same torch intra-op thread count (float
reductions are grouped by thread). ``threads`` sets it in every task; by
default it is the task's CPU count (``cpus_per_task``, default 1).

Multi-node: every node needs the same ``datagen`` install and must see the
recipe, the model, the vector library and the output directory at the same
paths (a shared file system). See docs/scale-out.md.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from ..errors import DatagenError, UsageError, arg

_INSTALL_HINT = (f"{arg('engine', 'ray')} needs Ray, which is not installed: pip install 'datagen[ray]' "
                 f"(or pip install ray), or use {arg('engine', 'local')}")


def import_ray() -> Any:
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise DatagenError(f"{_INSTALL_HINT} ({e})") from None
    return ray


def _run_blocks(recipe_path: str, out: str, info_doc: dict[str, Any], *, num: int, seed: int, fmt: str,
                device: str | None, batch_size: int, block_size: int, blocks: list[int], shard_index: int,
                num_shards: int, threads: int | None, trust_pickles: bool = False) -> dict[str, Any]:
    """One Ray task: render ``blocks`` into the shared output with its own writer."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    from ..generate import prepare, run_job
    from ..writers import DatasetInfo, open_writer

    t0 = time.perf_counter()
    # the driver has checked class separability (and warned) once; workers do not repeat it
    info = DatasetInfo.from_dict(info_doc)
    job = prepare(recipe_path, num=num, seed=seed, device=device, block_size=block_size, batch_size=batch_size,
                  trust_pickles=trust_pickles, check_separability=False, instances=info.instances,
                  precision=info.attrs.get("precision", "auto"))  # the driver's, as its dataset records it
    diffs = [d for d in info.differences(job.info) if not d.startswith("attrs.recipe_file")]
    if diffs:
        raise DatagenError(f"worker on {platform.node()} sees different inputs than the driver: " + "; ".join(diffs)
                           + " (every node must see the same recipe, model and library files)")
    job.info = info  # the driver's: same fingerprint, and the recipe path as the user gave it
    writer = open_writer(fmt, out, info, resume=True, shard_index=shard_index, num_shards=num_shards)
    writer.allow_rewrite(blocks)  # the driver hands out only missing blocks and blocks that failed verification
    try:
        written = run_job(job, writer, blocks, batch_size=batch_size, progress=False)
    finally:
        writer.close()
    return {"written": written, "blocks": len(blocks), "host": platform.node(), "pid": os.getpid(),
            "device": str(job.generator.device), "threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - t0}


def _raise_cause(e: BaseException) -> None:
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        raise cause from None
    raise e


def generate_ray(
    recipe_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num: int,
    seed: int = 0,
    format: str = "zarr",  # noqa: A002 - the user-facing name
    device: str | None = None,
    batch_size: int = 8,
    block_size: int = 16,
    resume: bool = False,
    num_tasks: int | None = None,
    address: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    cpus_per_task: float | None = None,
    gpus_per_task: float | None = None,
    num_cpus: int | None = None,
    init_kwargs: dict[str, Any] | None = None,
    trust_pickles: bool = False,
    instances: bool = False,
    precision: str = "auto",
) -> Any:
    """Generate samples ``0..num-1`` into ``out`` with Ray tasks; returns a :class:`~datagen.generate.GenerateReport`.

    ``address``: a running cluster (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``); default: connect to
    the cluster Ray is already initialised with, else start a local one with ``num_cpus`` CPUs (default: all).
    ``num_tasks``: default one per GPU (GPU clusters) or one per ``cpus_per_task`` CPUs, at most one per block.
    ``gpus_per_task``: default 1 when the cluster has GPUs and ``device`` is not ``cpu`` (fractions share a GPU).
    ``threads``: torch intra-op threads per task (default: ``cpus_per_task``, rounded, at least 1).
    ``instances``: also write an instance map beside each mask, ``precision``: the rendering
    arithmetic (both as :func:`datagen.generate.generate`; tasks read the precision back from the dataset).
    """
    from tqdm.auto import tqdm

    from ..generate import FORMATS, GenerateReport, prepare
    from ..writers import blocks_left, open_writer, read_manifest

    if format not in FORMATS:
        raise UsageError(f"must be one of {', '.join(FORMATS)}, got {format!r}", param="format")
    if batch_size < 1:
        raise UsageError(f"must be at least 1, got {batch_size}", param="batch_size")
    if num_tasks is not None and num_tasks < 1:
        raise UsageError(f"must be at least 1, got {num_tasks}", param="num_tasks")
    ray = import_ray()

    # check everything and create the output before a cluster is involved
    job = prepare(recipe_path, num=num, seed=seed, device="cpu", block_size=block_size, batch_size=batch_size,
                  trust_pickles=trust_pickles, instances=instances, precision=precision)
    info = job.info
    del job
    t0 = time.perf_counter()
    writer = open_writer(format, out, info, resume=resume)
    try:
        done = writer.completed_blocks()
        damaged = writer.verify_blocks(sorted(done)) if resume else {}  # rewritten by the tasks
    finally:
        writer.close()
    if damaged:
        import warnings

        from ..generate import RepairWarning

        for b, problem in sorted(damaged.items()):
            warnings.warn(RepairWarning(f"block {b} failed verification ({problem}); rewriting it"), stacklevel=2)
    todo = blocks_left(info, done, redo=damaged)
    out_abs = str(Path(out).expanduser().absolute())
    if not todo:
        return GenerateReport(Path(out), 0, info.num_blocks, info.num_blocks, time.perf_counter() - t0)

    started = False
    if not ray.is_initialized():
        kw = dict(init_kwargs or {})
        if address:
            ray.init(address=address, **kw)
        else:
            kw.setdefault("include_dashboard", False)
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kw)
        started = True
    refs: list[Any] = []
    try:
        resources = ray.cluster_resources()
        cluster_gpus = float(resources.get("GPU", 0))
        wants_cuda = device is not None and str(device).startswith("cuda")
        if wants_cuda and cluster_gpus <= 0:
            raise DatagenError(f"device {device!r} requested but the Ray cluster has no GPUs")
        use_gpu = cluster_gpus > 0 and device in (None, "auto") or wants_cuda
        gpus = float(gpus_per_task if gpus_per_task is not None else (1 if use_gpu else 0))
        cpus = float(cpus_per_task if cpus_per_task is not None else 1)
        task_device = device if use_gpu or device not in (None, "auto") else "cpu"
        n_threads = int(threads) if threads else max(1, int(round(cpus)))
        if num_tasks is None:
            if gpus > 0:
                num_tasks = max(1, int(cluster_gpus // gpus))
            else:
                num_tasks = max(1, int(float(resources.get("CPU", 1)) // max(cpus, 1e-9)))
        num_tasks = min(num_tasks, len(todo))
        remote = ray.remote(_run_blocks).options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                                                 name="datagen-generate")
        recipe_abs = str(Path(recipe_path).expanduser().resolve())
        for k in range(num_tasks):
            refs.append(remote.remote(
                recipe_abs, out_abs, info.to_dict(), num=num, seed=seed, fmt=format, device=task_device,
                batch_size=batch_size, block_size=block_size, blocks=todo[k::num_tasks], shard_index=k,
                num_shards=num_tasks, threads=n_threads, trust_pickles=trust_pickles))

        total = sum(len(info.block_range(b)) for b in todo)
        bar = tqdm(total=total, unit="img", desc=f"generate (ray, {num_tasks} tasks)", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        todo_set = set(todo)
        pending = list(refs)
        results: list[dict[str, Any]] = []
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
                for r in ready:
                    try:
                        results.append(ray.get(r))
                    except ray.exceptions.RayTaskError as e:
                        _raise_cause(e)
                if progress:  # progress from the manifest: blocks land there once written
                    finished = read_manifest(out_abs, info).completed_blocks() & todo_set
                    bar.n = sum(len(info.block_range(b)) for b in finished)
                    bar.refresh()
        finally:
            bar.close()
        written = sum(r["written"] for r in results)
    except BaseException:
        for r in refs:
            try:
                ray.cancel(r)
            except Exception:  # noqa: BLE001 - best effort; the task may be done already
                pass
        raise
    finally:
        if started:
            ray.shutdown()
    return GenerateReport(Path(out), written, info.num_blocks - len(todo), info.num_blocks,
                          time.perf_counter() - t0)


__all__ = ["generate_ray", "import_ray"]
