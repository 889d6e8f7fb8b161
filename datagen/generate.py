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

import os
import platform
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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
    )


def prepare(recipe_path: str | os.PathLike, *, num: int, seed: int = 0, device: str | None = None,
            block_size: int = 16, generator: Generator | None = None) -> Job:
    """Load and check everything a run needs, without touching the output."""
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    recipe = load_recipe(recipe_path)
    gen = generator if generator is not None else load_generator(recipe.model_spec, device)
    renderer = build_renderer(recipe, gen, seed)
    augment = recipe.augmentation() or None
    h, w = renderer.size
    info = DatasetInfo(
        num_samples=num, height=h, width=w, block_size=block_size,
        classes=[{"id": c.id, "name": c.name, "color": c.color} for c in recipe.classes],
        attrs={
            "seed": seed,
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
    images = np.concatenate([
        r.render(indices[k:k + batch_size], layouts[k:k + batch_size], plans[k:k + batch_size] if plans is not None else None)
        for k in range(0, len(indices), batch_size)
    ])
    masks = np.stack([r.cells_mask(l) for l in layouts]) if r.mask_mode == "cells" else layouts
    return images, masks


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
) -> GenerateReport:
    """Generate samples ``0..num-1`` (this worker's share of them) into ``out``."""
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
    job = prepare(recipe_path, num=num, seed=seed, device=device, block_size=block_size)
    t0 = time.perf_counter()
    try:
        writer = open_writer(format, out, job.info, resume=resume, shard_index=shard_index, num_shards=num_shards)
    except DatagenError as e:  # the writer says what is wrong with the path; name the option that gave it
        raise (ConfigError(str(e), field="--out") if isinstance(e, ConfigError) else DatagenError(f"--out: {e}")) from None
    try:
        done = writer.completed_blocks()
        mine = [r.start // job.info.block_size for r in blocks_for_worker(job.info, shard_index, num_shards)]
        todo = [b for b in mine if b not in done]
        written = run_job(job, writer, todo, batch_size=batch_size, progress=progress)
    finally:
        writer.close()
    return GenerateReport(Path(out), written, len(mine) - len(todo), len(mine), time.perf_counter() - t0)
