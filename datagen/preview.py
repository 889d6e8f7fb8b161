"""A quick look at what a recipe makes, before generating thousands of samples.

``preview`` renders samples ``0..num-1`` of a seed exactly as ``datagen generate``
would (same layouts, vectors, noise and augmentation per index) and lays them out as
one PNG: each sample's image, then its mask in the recipe's class colours (pixels
written with the ignore value hatched grey), then the mask outlines drawn over the
image, so painting faithfulness is visible at a glance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import UsageError
from .generate import Job, augment_block, prepare, render_block


def colorize(mask: np.ndarray, colors: dict[int, tuple[int, int, int]], ignore_index: int | None = None) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 in the class colours (unknown ids black; the
    ignore value as grey diagonal hatching: those pixels claim no class)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for cid, rgb in colors.items():
        lut[cid] = rgb
    out = lut[mask]
    if ignore_index is not None:
        yy, xx = np.indices(mask.shape)
        hatch = np.where(((yy + xx) // 4) % 2 == 0, 150, 215).astype(np.uint8)
        ig = mask == ignore_index
        out[ig] = hatch[ig][:, None]
    return out


def outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """The image with a 1-px line wherever the class changes."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge = ndimage.binary_dilation(edge)
    out = image.copy()
    out[edge] = color
    return out


def preview_sheet(job: Job, num: int, *, columns: int = 2, gap: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 sheet of samples ``0..num-1`` of ``job``: image | mask | outlines per sample."""
    if num < 1:
        raise UsageError(f"preview needs at least one sample, got {num}", param="num")
    if columns < 1:
        raise UsageError(f"preview needs at least one column, got {columns}", param="columns")
    indices = range(num)
    # the batch size is part of the output (CPU kernels group sums by batch shape): as generate renders them
    images, masks = render_block(job, indices, None, batch_size=job.info.attrs["batch_size"])
    images, masks = augment_block(job, indices, images, masks)
    colors = {c.id: c.rgb for c in job.recipe.classes}
    ignore = job.info.ignore_index
    h, w = images.shape[1:3]
    cell_w = 3 * w + 2 * gap
    rows = (num + columns - 1) // columns
    sheet = np.full((rows * (h + gap) + gap, columns * (cell_w + 3 * gap) + gap, 3), 255, dtype=np.uint8)
    for k in indices:
        y = gap + (k // columns) * (h + gap)
        x = gap + (k % columns) * (cell_w + 3 * gap)
        for j, panel in enumerate((images[k], colorize(masks[k], colors, ignore), outline(images[k], masks[k]))):
            sheet[y:y + h, x + j * (w + gap): x + j * (w + gap) + w] = panel
    return sheet


def preview(recipe: str | os.PathLike, out: str | os.PathLike, *, num: int = 8, seed: int = 0,
            device: str | None = None, columns: int = 2, check_separability: bool = True,
            trust_pickles: bool = False) -> Path:
    """Render a preview sheet of ``recipe`` (samples 0..num-1 of ``seed``) to the PNG ``out``.
    ``check_separability``: warn when two painted classes cannot be told apart (docs/vectors.md#separability)."""
    from PIL import Image

    job = prepare(recipe, num=num, seed=seed, device=device, check_separability=check_separability,
                  trust_pickles=trust_pickles)
    sheet = preview_sheet(job, num, columns=columns)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        Image.fromarray(sheet).save(out)
    except (ValueError, KeyError) as e:  # PIL: no image format for this file name
        raise UsageError(f"{out}: cannot write an image with this name ({e}); use a .png file name",
                         param="out") from None
    return out


__all__ = ["colorize", "outline", "preview", "preview_sheet"]
