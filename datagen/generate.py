"""The main job: recipe -> layouts -> painted renders -> augmentation -> dataset on disk.

Rendering runs on the calling thread (GPU or CPU); layouts for the next block
are drawn on a helper thread while the current block renders, and augmentation
plus writing happen on a writer thread, so both hide behind rendering. At most
two blocks wait for the writer, which bounds memory whatever the dataset size.

Everything that can fail because of user input (recipe, model, library, output
directory) is checked before the output is created, so a failed start leaves
nothing behind that a later run could mistake for data.
"""

from __future__ import annotations

import errno
import os
import platform
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .augment import apply_augment
from .errors import ConfigError, DatagenError
from .models.generator import Generator
from .models.registry import load_generator
from .recipe import Recipe, load_recipe, resolve_class_vectors
from .render import PaintClass, Renderer
from .seeding import sample_rng
from .writers import DatasetInfo, DatasetWriter, blocks_for_worker, open_writer

FORMATS = ("zarr", "tiff")
#: ``--verify`` levels of ``--resume``: ``files`` checks each recorded block's files (size and
#: sha256 against the manifest), ``full`` also decodes and hashes every sample, ``none`` trusts the manifest.
VERIFY_LEVELS = ("files", "full", "none")


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


def build_renderer(recipe: Recipe, generator: Generator, seed: int) -> Renderer:
    """Resolve the recipe's classes to vectors and build the renderer for ``seed``."""
    if recipe.layout is None:
        raise ConfigError("required field is missing: a layout mapping ({kind: voronoi, ...}) or a preset name "
                          "(see layouts/)", file=recipe.file, field="layout")
    library = recipe.load_library()
    recipe.validate_against(generator, library)
    vectors = resolve_class_vectors(recipe, library) if library is not None else {}
    classes = []
    for c in recipe.classes:
        if c.keep:
            classes.append(PaintClass(c.id, c.name, keep=True))
        else:
            v, w = vectors[c.name]
            classes.append(PaintClass(c.id, c.name, vectors=v, weights=w))
    return Renderer(
        generator, classes, recipe.parsed_layout(),
        size=tuple(recipe.size), seed=seed, layer=recipe.layer_name,
        soft_boundary=recipe.paint.soft_boundary, mask_mode=recipe.paint.mask,
        ignore_index=recipe.ignore_index, min_confidence=recipe.paint.min_confidence,
        boundary_ignore=recipe.paint.boundary_ignore,
    )


#: Most samples one dataset may hold (a sanity bound on --num; split bigger jobs into several datasets).
MAX_SAMPLES = 1_000_000_000


def load_recipe_model(recipe: Recipe, device: str | None = None, *, trust_pickles: bool = False) -> Generator:
    """The recipe's generator on ``device``; a missing or unreadable model (or an untrusted
    ``stylegan2:`` pickle) is a ConfigError naming the recipe's ``model`` field."""
    from .models.checkpoint import CheckpointError
    from .models.registry import resolve_device

    dev = resolve_device(device)  # a bad --device is the option's fault, not the model's
    try:
        return load_generator(recipe.model_spec, dev, trust_pickles=trust_pickles or recipe.trust)
    except (CheckpointError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise ConfigError(str(e), file=recipe.file, field="model") from None


def _total_memory(device: Any) -> int | None:
    """Bytes of memory on ``device`` (physical RAM for the CPU), None when unknown."""
    try:
        if getattr(device, "type", str(device)) == "cuda":
            import torch

            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def estimate_memory(gen: Generator, size: tuple[int, int], batch_size: int, block_size: int) -> tuple[int, int]:
    """Rough peak bytes of one rendering batch and of the blocks held for writing: (batch, blocks).

    A forward pass holds about two of its largest activations per sample (a layer's input and
    output, float32), plus the image, noise and mask planes; the writer queue holds up to three
    blocks of uint8 images and masks."""
    h, w = int(size[0]), int(size[1])
    largest = max((i.channels * max(1, i.size_at(h, w)[0]) * max(1, i.size_at(h, w)[1]) for i in gen.layers()),
                  default=0)
    per_sample = 4 * (2 * largest + 8 * h * w)
    return batch_size * per_sample, 3 * block_size * h * w * 4


def check_memory(recipe: Recipe, gen: Generator, size: tuple[int, int], batch_size: int, block_size: int) -> None:
    """Refuse a size whose batch cannot fit in memory, before anything is allocated or written."""
    total = _total_memory(gen.device)
    if total is None:
        return
    batch, blocks = estimate_memory(gen, size, batch_size, block_size)
    host_total = _total_memory("cpu") or total
    need_dev = batch if gen.device.type == "cuda" else batch + blocks
    if need_dev <= total and blocks <= host_total:
        return
    gib = 1 << 30
    h, w = size
    per = batch / max(batch_size, 1)
    hint = (f"; --batch-size {max(1, int(total // max(per, 1)))} may fit" if batch_size > 1 and per + (0 if gen.device.type == "cuda" else blocks) <= total
            else "; use a smaller size (datagen canvas renders large images tile by tile)")
    raise ConfigError(
        f"{h}x{w} needs about {need_dev / gib:,.1f} GiB of memory for one batch of {batch_size} (and the blocks "
        f"being written), more than the {total / gib:,.1f} GiB of {'GPU' if gen.device.type == 'cuda' else 'RAM'} "
        f"on this machine{hint}", file=recipe.file, field="size")


def prepare(recipe_path: str | os.PathLike, *, num: int, seed: int = 0, device: str | None = None,
            block_size: int = 16, generator: Generator | None = None, check_separability: bool = True,
            batch_size: int = 8, trust_pickles: bool = False) -> Job:
    """Load and check everything a run needs, without touching the output. ``check_separability``:
    warn (ClassSeparabilityWarning) when two painted classes cannot be told apart (docs/vectors.md#separability).

    ``batch_size`` is part of the dataset's fingerprint: CPU (and GPU) kernels group their
    sums by batch shape, so another batch size may move a few pixels by 1.

    ``trust_pickles``: allow a ``stylegan2:`` pickle model (unpickling runs code from the file;
    a recipe can also say ``trust: true``). Besides the recipe, model and library, the memory a
    batch needs and the augmentation (dry-run on a dummy pair) are checked here."""
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    if num > MAX_SAMPLES:
        raise ValueError(f"--num must be at most {MAX_SAMPLES:,} samples per dataset, got {num:,}; "
                         "split bigger jobs into several datasets (different --seed)")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    recipe = load_recipe(recipe_path)
    gen = generator if generator is not None else load_recipe_model(recipe, device, trust_pickles=trust_pickles)
    renderer = build_renderer(recipe, gen, seed)
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
        attrs={
            "seed": seed,
            "batch_size": batch_size,
            "recipe": Path(recipe_path).read_text(),
            "recipe_file": str(Path(recipe_path)),
            "model": recipe.model_spec,
            "layer": renderer.layer,
            "layer_size": list(renderer.layer_size),
            "mask": renderer.mask_mode,
            "tool": "datagen",
            "tool_version": __version__,
            "device": str(gen.device),
            "hostname": platform.node(),
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


def render_block(job: Job, indices: range, layouts: np.ndarray, batch_size: int,
                 plans: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks of one block, rendered in batches of ``batch_size``."""
    r = job.renderer
    pairs = [
        r.render_pairs(indices[k:k + batch_size], layouts[k:k + batch_size], plans[k:k + batch_size] if plans is not None else None)
        for k in range(0, len(indices), batch_size)
    ]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def run_job(job: Job, writer: DatasetWriter, blocks: list[int], *, batch_size: int = 8, progress: bool = True) -> int:
    """Render ``blocks`` into ``writer`` with layout prefetch and background writing."""
    info = job.info
    total = sum(len(info.block_range(b)) for b in blocks)
    bar = tqdm(total=total, unit="img", desc="generate", disable=not progress, dynamic_ncols=True, smoothing=0.1)
    written = 0

    def layouts_for(b: int) -> tuple[np.ndarray, list[Any]]:
        """Layouts and paint plans of a block: CPU work done while the previous block renders."""
        r = info.block_range(b)
        layouts = np.stack([job.renderer.make_layout(i) for i in r])
        return layouts, [job.renderer.plan(i, lay) for i, lay in zip(r, layouts)]

    def finish(b: int, images: np.ndarray, masks: np.ndarray) -> int:
        images, masks = augment_block(job, info.block_range(b), images, masks)
        writer.write_block(b, images, masks)
        return len(images)

    with ThreadPoolExecutor(1, thread_name_prefix="layout") as layout_pool, \
            ThreadPoolExecutor(1, thread_name_prefix="writer") as write_pool:
        pending: deque[Future[int]] = deque()
        nxt = layout_pool.submit(layouts_for, blocks[0]) if blocks else None
        try:
            for k, b in enumerate(blocks):
                layouts, plans = nxt.result()  # type: ignore[union-attr]
                nxt = layout_pool.submit(layouts_for, blocks[k + 1]) if k + 1 < len(blocks) else None
                images, masks = render_block(job, info.block_range(b), layouts, batch_size, plans)
                while len(pending) >= 2:  # bounded memory: at most two blocks queued for writing
                    n = pending.popleft().result()
                    written += n
                    bar.update(n)
                pending.append(write_pool.submit(finish, b, images, masks))
            while pending:
                n = pending.popleft().result()
                written += n
                bar.update(n)
        except BaseException:
            # let blocks already handed to the writer finish (they land whole in the manifest)
            for f in pending:
                f.cancel() or f.exception()
            raise
        finally:
            bar.close()
    return written


#: errno values of a full disk (or an exhausted quota).
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(DatagenError):
    """The output's disk filled up while writing; completed blocks are kept for ``--resume``."""


def _disk_full_message(out: str | os.PathLike, writer: DatasetWriter, mine: list[int], e: OSError) -> str:
    try:
        kept = len(set(writer.completed_blocks()) & set(mine))
    except Exception:  # the manifest may be unreadable on a full disk: say what is known
        kept = None
    what = f"{kept} of {len(mine)} blocks are complete and kept" if kept is not None else "completed blocks are kept"
    return (f"--out: {out}: disk full ({os.strerror(e.errno or errno.ENOSPC)}); {what}. Free space, then rerun "
            "the same command with --resume to continue")


def check_disk(out: str | os.PathLike, info: DatasetInfo, *, shard_index: int = 0, num_shards: int = 1) -> None:
    """Refuse a run whose output cannot fit on the disk, even compressed 4:1 (images compress
    about 2:1, masks much more): a ValueError naming --num, before the output is created."""
    import shutil

    p = Path(out).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        usage = shutil.disk_usage(p)
    except OSError:
        return
    if usage.total == 0:  # a pseudo file system (/proc, /sys): the writer says what is wrong with it
        return
    free = usage.free
    nb = len(range(shard_index, info.num_blocks, num_shards))  # this worker's blocks (counted, not listed)
    n = nb * info.block_size
    last = info.num_blocks - 1
    if last >= shard_index and (last - shard_index) % num_shards == 0:
        n -= info.num_blocks * info.block_size - info.num_samples  # the short last block is this worker's
    need = n * info.height * info.width * 4 // 4  # uint8 RGB image + mask per pixel, at 4:1
    if need > free:
        raise ValueError(f"--num: {n:,} samples of {info.height}x{info.width} need at least {_human(need)} "
                         f"on disk (even at 4:1 compression), but {p} has {_human(free)} free; lower --num, "
                         "free space or split the run with --num-shards over several disks")


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


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
) -> GenerateReport:
    """Generate samples ``0..num-1`` (this worker's share of them) into ``out``.

    With ``resume``, the blocks the manifest records as complete are checked first
    (``verify``: see :data:`VERIFY_LEVELS`); those that fail are rewritten, each with a
    :class:`RepairWarning` saying what was wrong.
    """
    if verify not in VERIFY_LEVELS:
        raise ValueError(f"--verify must be one of {', '.join(VERIFY_LEVELS)}, got {verify!r}")
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if block_size < 1:
        raise ValueError(f"--block-size must be at least 1, got {block_size}")
    if num_shards < 1:
        raise ValueError(f"--num-shards must be at least 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index must be in 0..{num_shards - 1} (with --num-shards {num_shards}), got {shard_index}")
    job = prepare(recipe_path, num=num, seed=seed, device=device, block_size=block_size, batch_size=batch_size,
                  trust_pickles=trust_pickles)
    if not resume:
        check_disk(out, job.info, shard_index=shard_index, num_shards=num_shards)
    t0 = time.perf_counter()
    try:
        writer = open_writer(format, out, job.info, resume=resume, shard_index=shard_index, num_shards=num_shards)
    except DatagenError as e:  # the writer says what is wrong with the path; name the option that gave it
        raise (ConfigError(str(e), field="--out") if isinstance(e, ConfigError) else DatagenError(f"--out: {e}")) from None
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise DiskFullError(f"--out: {out}: {os.strerror(e.errno)} while creating the output; free space and "
                                "run the command again") from None
        raise
    repaired: dict[int, str] = {}
    mine: list[int] = []
    try:
        try:
            done = writer.completed_blocks()
            mine = [r.start // job.info.block_size for r in blocks_for_worker(job.info, shard_index, num_shards)]
            if resume and verify != "none":
                recorded = [b for b in mine if b in done]
                repaired = writer.verify_blocks(recorded, full=verify == "full")
                for b, problem in sorted(repaired.items()):
                    warnings.warn(RepairWarning(f"block {b} failed verification ({problem}); rewriting it"), stacklevel=2)
                writer.allow_rewrite(repaired)
            todo = [b for b in mine if b not in done or b in repaired]
            written = run_job(job, writer, todo, batch_size=batch_size, progress=progress)
        finally:
            try:
                writer.close()
            except OSError as e:
                if e.errno not in _DISK_FULL:
                    raise
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        raise DiskFullError(_disk_full_message(out, writer, mine, e)) from None
    return GenerateReport(Path(out), written, len(mine) - len(todo), len(mine), time.perf_counter() - t0,
                          repaired_blocks=repaired, cleaned=writer.cleaned)
