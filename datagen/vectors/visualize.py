"""Show what an activation vector draws (paper sec. 3.1).

*Full replace*: every pixel of the layer := v. Works for tileable vectors (the
structure repeats, like a texture) and stretches non-tileable ones.
*Grid replace*: v is written into g x g blocks separated by one row/column of
other activations (the layer's own, or a background vector), see
:func:`datagen.paint.grid_mask`. Non-tileable structures (a nucleus, an eye)
need that contrast to appear; g = 2 or 3 works best (paper sec. 4.2.4).

Work is batched over (vector, seed) pairs. The generator inputs of seed ``s``
come from ``sample_torch_generator(s, 0, "visualize")`` and are identical for
every vector, so images of one seed (a column of a contact sheet) differ only
in the painted vector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import DatagenError
from ..models.generator import Generator, Inputs
from ..models.hooks import LayerHook
from ..paint import full_replace, grid_mask, grid_replace
from ..render import to_uint8  # the one quantisation of generator output (re-exported)
from ..seeding import sample_torch_generator
from .extract import resolve_layer_name, resolve_size

VISUALIZE_PURPOSE = "visualize"
MAX_GRID = 5
Mode = Literal["full", "grid"]


def resolve_seeds(seeds: int | Sequence[int]) -> list[int]:
    """``seeds`` as a list: an int n means seeds 0..n-1."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise DatagenError(f"number of seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out:
        raise DatagenError("give at least one seed")
    if min(out) < 0:
        raise DatagenError(f"seeds must be non-negative, got {out}")
    return out


def seed_inputs(gen: Generator, seeds: Sequence[int], size: tuple[int, int]) -> list[Inputs]:
    """One single-row input dict per seed (drawn once, reused for every vector)."""
    return [gen.sample_inputs([sample_torch_generator(s, 0, VISUALIZE_PURPOSE)], size) for s in seeds]


def cat_inputs(rows: Sequence[Inputs]) -> Inputs:
    return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def check_grid(gen: Generator, layer: str, size: tuple[int, int], grid: int) -> tuple[int, int]:
    """Raise DatagenError unless grid size ``grid`` places at least one block in the layer."""
    if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1:
        raise DatagenError(f"grid size must be a positive integer (1..{MAX_GRID} are useful), got {grid!r}")
    h, w = gen.layer_size(layer, size)
    if not grid_mask(h, w, grid).any():
        raise DatagenError(
            f"layer {layer} is only {h}x{w} at {size[0]}x{size[1]} px: a grid of size {grid} needs at least "
            f"{grid + 1}x{grid + 1} layer pixels; use a larger image size, a finer layer or a smaller grid"
        )
    return h, w


def make_edit(mode: Mode, vectors: torch.Tensor, grid: int = 2,
              background: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The layer edit for a batch: ``vectors`` (n, C), one per batch row."""
    if mode == "full":
        return lambda act: full_replace(act, vectors)
    if mode == "grid":
        return lambda act: grid_replace(act, vectors.to(act), grid, background)
    raise DatagenError(f"visualisation mode must be 'full' or 'grid', got {mode!r}")


def iter_renders(
    gen: Generator,
    vectors: torch.Tensor,
    layer: str,
    *,
    modes: Sequence[tuple[Mode, int]],
    seeds: Sequence[int],
    size: tuple[int, int],
    background: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "visualize",
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[tuple[int, int]]]]:
    """Yield (vector index (n,), seed position (n,), one float image batch (n, 3, H, W) per
    (mode, grid) in ``modes``, the layer size seen by each) for all (vector, seed) pairs.

    Pairs are ordered vector-major; images stay on the generator's device.
    """
    if batch_size < 1:
        raise DatagenError(f"batch size must be >= 1, got {batch_size}")
    if vectors.ndim != 2:
        raise DatagenError(f"vectors must be (V, C), got shape {tuple(vectors.shape)}")
    channels = gen.layer(layer).channels
    if vectors.shape[1] != channels:
        raise DatagenError(f"vectors have {vectors.shape[1]} channels but layer {layer} has {channels}")
    if background is not None and background.shape != (channels,):
        raise DatagenError(f"background vector must be ({channels},), got {tuple(background.shape)}")
    per_seed = seed_inputs(gen, seeds, size)
    v_count, s_count = len(vectors), len(seeds)
    total = v_count * s_count
    vectors = vectors.detach().float()
    bar = tqdm(total=total * len(modes), desc=desc, unit="img", disable=not progress)
    with torch.no_grad():
        for start in range(0, total, batch_size):
            pair = torch.arange(start, min(start + batch_size, total))
            vi, si = pair // s_count, pair % s_count
            inputs = cat_inputs([per_seed[s] for s in si.tolist()])
            vecs = vectors[vi]
            outs, shapes = [], []
            for mode, grid in modes:
                with LayerHook(gen.module, layer, edit=make_edit(mode, vecs, grid, background)) as hook:
                    outs.append(gen.forward(inputs).float())
                shapes.append(tuple(hook.original.shape[-2:]) if hook.original is not None else (0, 0))
                bar.update(len(pair))
            yield vi, si, outs, shapes
    bar.close()


def visualize(
    gen: Generator,
    vectors: torch.Tensor,
    layer: str | None = None,
    *,
    mode: Mode = "full",
    grid: int = 2,
    seeds: int | Sequence[int] = 1,
    size: int | Sequence[int] | None = None,
    background: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = True,
    dtype: Literal["uint8", "float"] = "uint8",
) -> torch.Tensor:
    """Render every vector of (V, C) ``vectors`` painted into ``layer`` for every seed.

    mode "full": the whole layer := v. mode "grid": g x g blocks := v (``grid`` = g, 1..5),
    everything else keeps the layer's own activations, or ``background`` (C,) if given.
    Returns (V, S, 3, H, W) on the CPU: uint8 (default) or float in [-1, 1].
    """
    layer = resolve_layer_name(gen, layer)
    hw = resolve_size(gen, size)
    seed_list = resolve_seeds(seeds)
    if mode not in ("full", "grid"):
        raise DatagenError(f"visualisation mode must be 'full' or 'grid', got {mode!r}")
    if mode == "grid":
        check_grid(gen, layer, hw, grid)
    v_count, s_count = len(vectors), len(seed_list)
    out = torch.empty((v_count, s_count, 3, *hw), dtype=torch.uint8 if dtype == "uint8" else torch.float32)
    for vi, si, (imgs,), _ in iter_renders(
        gen, vectors, layer, modes=[(mode, grid)], seeds=seed_list, size=hw, background=background,
        batch_size=batch_size, progress=progress, desc=f"{mode}{'-' + str(grid) if mode == 'grid' else ''} {layer}",
    ):
        imgs = imgs.cpu()
        out[vi, si] = to_uint8(imgs) if dtype == "uint8" else imgs
    return out


def grid_mask_at_image(gen: Generator, layer: str, size: int | Sequence[int] | None, grid: int) -> torch.Tensor:
    """Where grid replace paints, at image resolution: bool (H, W), the layer's grid mask
    upsampled by nearest neighbour (each layer pixel covers a stride x stride cell)."""
    hw = resolve_size(gen, size)
    h, w = gen.layer_size(layer, hw)
    return upsample_mask(grid_mask(h, w, grid), hw)


def upsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a bool (h, w) mask to ``size``."""
    return F.interpolate(mask[None, None].float(), size=tuple(size), mode="nearest")[0, 0] > 0.5


__all__ = [
    "check_grid", "grid_mask_at_image", "iter_renders", "make_edit", "resolve_seeds",
    "seed_inputs", "to_uint8", "upsample_mask", "visualize",
]
