"""The main job: recipe -> layouts -> painted renders -> augmentation -> dataset on disk.

Rendering runs on the calling thread (GPU or CPU); layouts for the next block
are drawn on a helper thread while the current block renders, and augmentation
plus writing happen on a writer thread, so both hide behind rendering. At most
two blocks wait for the writer, which bounds memory whatever the dataset size.
On a multi-core CPU, runs of several blocks render in single-threaded worker
processes instead (:mod:`datagen.engines.processes`); this process then only
hands out blocks and writes them, the same way.

Everything that can fail because of user input (recipe, model, library, output
directory) is checked before the output is created, so a failed start leaves
nothing behind that a later run could mistake for data.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .assemble import assemble
from .capacity import DISK_FULL, DiskFullError, check_disk, check_memory, disk_full_message, estimate_memory, total_memory
from .augment import apply_augment
from .errors import ConfigError, DatagenError, UsageError, arg, message_of
from .models.generator import Generator
from .models.registry import load_generator
from .options import FORMATS, VERIFY_LEVELS
from .recipe import Recipe, load_recipe
from .render import Renderer
from .plan import Precision, unit_edits_record
from .seeding import sample_rng
from .writers import DatasetInfo, DatasetWriter, blocks_left, open_writer


class RepairWarning(UserWarning):
    """A recorded block failed verification on resume and is rewritten."""


@dataclass
class Job:
    """A validated generation job: everything is loaded and checked, nothing is written yet."""

    recipe: Recipe
    generator: Generator
    renderer: Renderer
    augment: Any
    info: DatasetInfo


@dataclass
class GenerateReport:
    out: Path
    written_samples: int
    skipped_blocks: int
    total_blocks: int
    seconds: float
    #: Recorded blocks that failed verification on resume and were rewritten: {block: what was wrong}.
    repaired_blocks: dict[int, str] = field(default_factory=dict)
    #: Temporary files of interrupted writes that were removed.
    cleaned: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.written_samples / self.seconds if self.seconds > 0 else 0.0


def build_renderer(recipe: Recipe, generator: Generator, seed: int, precision: Precision = "auto") -> Renderer:
    """The renderer of ``recipe`` for ``seed``, checked against the model and library (:func:`datagen.assemble.assemble`);
    ``precision``: see :data:`datagen.options.PRECISIONS`."""
    return Renderer.from_setup(assemble(recipe, generator, seed, precision))


#: Most samples one dataset may hold (a sanity bound on --num; split bigger jobs into several datasets).
MAX_SAMPLES = 1_000_000_000


def load_recipe_model(recipe: Recipe, device: str | None = None, *, trust_pickles: bool = False) -> Generator:
    """The recipe's generator on ``device``; a missing or unreadable model (or an untrusted
    ``stylegan2:`` pickle) is a ConfigError naming the recipe's ``model`` field. A recipe's
    ``fixed_style`` is applied here (:func:`datagen.models.caveats.fix_style` after the paint
    layer), so generate, preview and canvas render with it."""
    from .models.checkpoint import CheckpointError
    from .models.registry import resolve_device

    dev = resolve_device(device)  # a bad --device is the option's fault, not the model's
    try:
        gen = load_generator(recipe.model_spec, dev, trust_pickles=trust_pickles or recipe.trust)
    except (CheckpointError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise ConfigError(message_of(e), file=recipe.file, field="model") from None
    if recipe.style_seed is not None:  # fixed_style: share the styles after the paint layer (StyleGAN2)
        from .models.caveats import fix_style

        try:
            fix_style(gen, recipe.style_seed, recipe.layer_name or gen.default_layer)
        except KeyError as e:  # a layer the synthesis network lacks
            raise ConfigError(message_of(e), file=recipe.file, field="layer") from None
        except DatagenError as e:
            raise ConfigError(message_of(e), file=recipe.file, field="fixed_style") from None
    return gen


def prepare(recipe_path: str | os.PathLike, *, num: int, seed: int = 0, device: str | None = None,
            block_size: int = 16, generator: Generator | None = None, check_separability: bool = True,
            batch_size: int = 8, trust_pickles: bool = False, instances: bool = False,
            precision: Precision = "auto") -> Job:
    """Load and check everything a run needs, without touching the output. ``check_separability``:
    warn (ClassSeparabilityWarning) when two painted classes cannot be told apart (docs/vectors.md#separability).

    ``batch_size`` is part of the dataset's fingerprint: CPU (and GPU) kernels group their
    sums by batch shape, so another batch size may move a few pixels by 1.

    ``trust_pickles``: allow a ``stylegan2:`` pickle model (unpickling runs code from the file;
    a recipe can also say ``trust: true``). Besides the recipe, model and library, the memory a
    batch needs and the augmentation (dry-run on a dummy pair) are checked here.

    ``instances``: the dataset also stores an instance map per sample (docs/formats.md#instance-maps).

    ``precision``: the forward passes' arithmetic (:data:`datagen.options.PRECISIONS`). ``auto``
    renders float16 on CUDA and float32 on a CPU; ``bf16`` (bfloat16 autocast) rendered the demo
    1.13x faster on a 2-core AVX512-BF16 CPU, moving pixels by 0.5 levels on average (docs/performance.md). Any other
    value than ``auto`` is recorded in ``attrs.precision`` and so fingerprinted."""
    if num < 1:
        raise UsageError(f"must be at least 1, got {num}", param="num")
    if num > MAX_SAMPLES:
        raise UsageError(f"must be at most {MAX_SAMPLES:,} samples per dataset, got {num:,}; "
                         f"split bigger jobs into several datasets (different {arg('seed')})", param="num")
    if seed < 0:
        raise UsageError(f"must be non-negative, got {seed}", param="seed")
    recipe = load_recipe(recipe_path)
    gen = generator if generator is not None else load_recipe_model(recipe, device, trust_pickles=trust_pickles)
    renderer = build_renderer(recipe, gen, seed, precision)
    check_memory(recipe, gen, tuple(renderer.size), batch_size, block_size)
    augment = recipe.augmentation() or None
    h, w = renderer.size
    if augment is not None:  # dry run on a dummy pair: a size change or a foreign mask value fails now
        from .augment import check_augment

        check_augment(augment, (h, w), [c.id for c in recipe.classes], recipe.ignore_index, file=recipe.file)
    if check_separability:  # measured once per process; DATAGEN_SEPARABILITY=0 also skips it
        from .vectors.separability import check_recipe_separability
        check_recipe_separability(recipe, gen, recipe.load_library())
    info = DatasetInfo(
        num_samples=num, height=h, width=w, block_size=block_size,
        classes=[{"id": c.id, "name": c.name, "color": c.color, **({"keep": True} if c.keep else {})}
                 for c in recipe.classes],
        ignore_index=recipe.ignore_index,
        instances=instances,
        attrs={
            "seed": seed,
            "batch_size": batch_size,
            "recipe": recipe.file.read_text(),
            "recipe_file": str(recipe.file),
            "model": recipe.model_spec,
            "layer": renderer.layer,
            "layer_size": list(renderer.layer_size),
            "mask": renderer.mask_mode,
            "tool": "datagen",
            "tool_version": __version__,
            "device": str(gen.device),
            **({"precision": precision} if precision != "auto" else {}),
            "hostname": platform.node(),
            # units a class edits, with `top: K` resolved (only when a class edits units)
            **({"unit_edits": edits} if (edits := unit_edits_record(renderer.classes)) else {}),
        },
    )
    return Job(recipe, gen, renderer, augment, info)


def augment_block(job: Job, indices: range, images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's augmentation of a rendered block, each sample from its own ``augment`` stream."""
    if job.augment is None:
        return images, masks
    out_i, out_m = np.empty_like(images), np.empty_like(masks)
    for k, i in enumerate(indices):
        seed = int(sample_rng(job.info.attrs["seed"], i, "augment").integers(2**31))
        out_i[k], out_m[k] = apply_augment(job.augment, images[k], masks[k], seed)
    return out_i, out_m


def render_block(job: Job, indices: range, layouts: np.ndarray | None, batch_size: int,
                 plans: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks of one block, rendered in batches of ``batch_size`` (see :meth:`Renderer.pairs`)."""
    return job.renderer.pairs(indices, layouts, plans, batch_size=batch_size)


class _BlockSink:
    """Augments and writes rendered blocks on a writer thread and counts them on the progress bar.

    At most two blocks wait for the writer (:meth:`put` blocks until one is written), which
    bounds memory whatever the dataset size. On an error, blocks already with the writer
    finish (they land whole in the manifest); queued ones are dropped."""

    def __init__(self, job: Job, writer: DatasetWriter, blocks: list[int], progress: bool,
                 desc: str = "generate") -> None:
        self.job, self.writer = job, writer
        total = sum(len(job.info.block_range(b)) for b in blocks)
        self.bar = tqdm(total=total, unit="img", desc=desc, disable=not progress, dynamic_ncols=True, smoothing=0.1)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="writer")
        self.pending: deque[Future[int]] = deque()
        self.written = 0

    def _finish(self, b: int, images: np.ndarray, masks: np.ndarray) -> int:
        images, masks = augment_block(self.job, self.job.info.block_range(b), images, masks)
        self.writer.write_block(b, images, masks)
        return len(images)

    def _collect(self) -> None:
        n = self.pending.popleft().result()
        self.written += n
        self.bar.update(n)

    def put(self, b: int, images: np.ndarray, masks: np.ndarray) -> None:
        """Hand block ``b`` to the writer (after waiting while two blocks are queued)."""
        while len(self.pending) >= 2:
            self._collect()
        self.pending.append(self.pool.submit(self._finish, b, images, masks))

    def drain(self) -> None:
        """Wait until every block handed over is written."""
        while self.pending:
            self._collect()

    def __enter__(self) -> _BlockSink:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        try:
            if exc_type is not None:
                for f in self.pending:
                    f.cancel() or f.exception()
            self.pool.shutdown(wait=True)
        finally:
            self.bar.close()


def run_job(job: Job, writer: DatasetWriter, blocks: list[int], *, batch_size: int = 8, progress: bool = True) -> int:
    """Render ``blocks`` into ``writer`` in this process, with layout prefetch and background writing."""
    info = job.info

    def layouts_for(b: int) -> tuple[np.ndarray, list[Any]]:
        """Layouts and paint plans of a block: CPU work done while the previous block renders."""
        r = info.block_range(b)
        layouts = np.stack([job.renderer.make_layout(i) for i in r])
        return layouts, [job.renderer.plan(i, lay) for i, lay in zip(r, layouts)]

    with _BlockSink(job, writer, blocks, progress) as sink, \
            ThreadPoolExecutor(1, thread_name_prefix="layout") as layout_pool:
        nxt = layout_pool.submit(layouts_for, blocks[0]) if blocks else None
        for k, b in enumerate(blocks):
            layouts, plans = nxt.result()  # type: ignore[union-attr]
            nxt = layout_pool.submit(layouts_for, blocks[k + 1]) if k + 1 < len(blocks) else None
            sink.put(b, *render_block(job, info.block_range(b), layouts, batch_size, plans))
        sink.drain()
    return sink.written


def run_job_workers(job: Job, writer: DatasetWriter, blocks: list[int], pool: Any, *, progress: bool = True) -> int:
    """Render ``blocks`` in the worker processes of ``pool`` (:class:`datagen.engines.processes.RenderPool`)
    and write them here, in the order they finish. On any error or Ctrl-C the workers are stopped
    first; blocks already with the writer are still written."""
    info = job.info
    with _BlockSink(job, writer, blocks, progress, desc=f"generate ({len(pool.workers)} workers)") as sink:
        try:
            for b, images, masks in pool.render([(b, info.block_range(b).start, info.block_range(b).stop)
                                                 for b in blocks]):
                sink.put(b, images, masks)
            sink.drain()
        except BaseException:
            pool.terminate()
            raise
    return sink.written


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch intra-op threads (None: as they are), then restore them."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _render(job: Job, writer: DatasetWriter, todo: list[int], *, recipe_path: str | os.PathLike, num: int, seed: int,
            batch_size: int, block_size: int, trust_pickles: bool, instances: bool, precision: Precision, workers: int | str,
            threads: int | None, progress: bool) -> int:
    """Render ``todo`` into ``writer``: in this process or in worker processes, as :func:`plan_processes` decides."""
    from .engines.processes import WORKER_BASE_BYTES, RenderPool, WorkerSpec, plan_processes

    h, w = job.renderer.size
    batch, blocks = estimate_memory(job.generator, (h, w), batch_size, block_size)
    samples = sum(len(job.info.block_range(b)) for b in todo)
    plan = plan_processes(workers, threads, device_type=job.generator.device.type, blocks=len(todo),
                          megapixels=samples * h * w / 1e6, worker_bytes=WORKER_BASE_BYTES + batch + blocks,
                          memory=total_memory("cpu"))
    if plan.workers == 1:
        with torch_threads(plan.threads):
            return run_job(job, writer, todo, batch_size=batch_size, progress=progress)
    spec = WorkerSpec(recipe_path=str(recipe_path), num=num, seed=seed, device=str(job.generator.device),
                      block_size=block_size, batch_size=batch_size, trust_pickles=trust_pickles, instances=instances,
                      precision=precision, threads=int(plan.threads or 1))
    with RenderPool(spec, plan.workers, expected_info=job.info.to_dict()) as pool:
        return run_job_workers(job, writer, todo, pool, progress=progress)


def generate(
    recipe_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num: int,
    seed: int = 0,
    format: str = "zarr",
    device: str | None = None,
    batch_size: int = 8,
    block_size: int = 16,
    resume: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    progress: bool = True,
    verify: str = "files",
    trust_pickles: bool = False,
    instances: bool = False,
    precision: Precision = "auto",
    workers: int | str = "auto",
    threads: int | None = None,
) -> GenerateReport:
    """Generate samples ``0..num-1`` (this worker's share of them) into ``out``.

    With ``resume``, the blocks the manifest records as complete are checked first
    (``verify``: see :data:`VERIFY_LEVELS`); those that fail are rewritten, each with a
    :class:`RepairWarning` saying what was wrong.  ``instances``: also write an instance map
    beside each mask, ``precision``: the rendering arithmetic (both: see :func:`prepare`).

    ``workers``: render in this many processes of this machine (1: in this process), or
    ``"auto"``: one single-threaded worker per CPU core for runs of several blocks, this
    process on a GPU (:func:`datagen.engines.processes.plan_processes`). ``threads``: torch
    threads per rendering process (default: 1 per worker when there is a worker per core;
    in this process, its own setting). Neither changes a pixel; ``batch_size`` does.
    Workers are fresh interpreters: a calling script is not run again in them.
    """
    from .engines.processes import check_threads, check_workers

    workers, threads = check_workers(workers), check_threads(threads)
    if verify not in VERIFY_LEVELS:
        raise UsageError(f"must be one of {', '.join(VERIFY_LEVELS)}, got {verify!r}", param="verify")
    if format not in FORMATS:
        raise UsageError(f"must be one of {', '.join(FORMATS)}, got {format!r}", param="format")
    if batch_size < 1:
        raise UsageError(f"must be at least 1, got {batch_size}", param="batch_size")
    if block_size < 1:
        raise UsageError(f"must be at least 1, got {block_size}", param="block_size")
    if num_shards < 1:
        raise UsageError(f"must be at least 1, got {num_shards}", param="num_shards")
    if not 0 <= shard_index < num_shards:
        raise UsageError(f"must be in 0..{num_shards - 1} (with {arg('num_shards', num_shards)}), got {shard_index}",
                         param="shard_index")
    job = prepare(recipe_path, num=num, seed=seed, device=device, block_size=block_size, batch_size=batch_size,
                  trust_pickles=trust_pickles, instances=instances, precision=precision)
    if not resume:
        check_disk(out, job.info, shard_index=shard_index, num_shards=num_shards)
    if num_shards > 1:  # so validate can name the shards still to run (volatile: not fingerprinted)
        job.info.attrs["num_shards"] = num_shards
    t0 = time.perf_counter()
    try:
        writer = open_writer(format, out, job.info, resume=resume, shard_index=shard_index, num_shards=num_shards)
    except DatagenError as e:  # the writer says what is wrong with the path; name the option that gave it
        raise (ConfigError(e.message, file=e.file, field=e.field, param="out") if isinstance(e, ConfigError)
               else UsageError(e.message, param="out")) from None
    except OSError as e:
        if e.errno in DISK_FULL:
            raise DiskFullError(f"{out}: {os.strerror(e.errno)} while creating the output; free space and "
                                "run the command again", param="out") from None
        raise
    repaired: dict[int, str] = {}
    mine: list[int] = []
    try:
        try:
            done = writer.completed_blocks()
            mine = list(job.info.shard_blocks(shard_index, num_shards))
            if resume and verify != "none":
                recorded = [b for b in mine if b in done]
                repaired = writer.verify_blocks(recorded, full=verify == "full")
                for b, problem in sorted(repaired.items()):
                    warnings.warn(RepairWarning(f"block {b} failed verification ({problem}); rewriting it"), stacklevel=2)
                writer.allow_rewrite(repaired)
            todo = blocks_left(job.info, done, shard_index=shard_index, num_shards=num_shards, redo=repaired)
            written = _render(job, writer, todo, recipe_path=recipe_path, num=num, seed=seed, batch_size=batch_size,
                              block_size=block_size, trust_pickles=trust_pickles, instances=instances,
                              precision=precision, workers=workers, threads=threads, progress=progress)
        finally:
            try:
                writer.close()
            except OSError as e:
                if e.errno not in DISK_FULL:
                    raise
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        raise DiskFullError(disk_full_message(out, writer, mine, e), param="out") from None
    return GenerateReport(Path(out), written, len(mine) - len(todo), len(mine), time.perf_counter() - t0,
                          repaired_blocks=repaired, cleaned=writer.cleaned)
