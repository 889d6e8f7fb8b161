"""Whole-slide canvases: one large seamless image and its label mask, rendered tile by tile.

A canvas of, say, 16,384 x 16,384 px never exists in memory. It is defined by
a recipe, a seed and its size, and any region of it can be rendered on its own:

Layout
    The recipe's layout (or ``layout=``, a preset or YAML meant for whole
    slides) is drawn once for the whole canvas at ``1 / layout_scale`` of its
    size (by default the painted layer's stride: a 16k canvas painted at
    ``dec.x16`` has a 1024 x 1024 layout). Each connected region of a painted
    class gets one vector, drawn from the canvas seed. At output resolution
    the layout is upsampled pointwise on the global pixel grid: every pixel
    looks at its four nearest layout cells (bilinear weights) and takes the
    class with the largest total weight, so outlines are smooth and a pixel's
    class does not depend on which tile asks for it.

Noise
    The generator's input noise is cut into fixed ``noise_tile`` squares of
    the global grid; square (a, b) is drawn from its own stream
    ``(seed, a, b)``. Any window of the canvas assembles the same noise for
    the same pixels, whatever the tile size. The conditioning vector is one
    per canvas.

Tiles
    The generator is fully convolutional, so a tile is rendered as a larger
    window (``margin`` px of context on every side that has canvas there,
    aligned to the generator's stride so every strided layer samples the same
    global lattice), and the margin is cropped off. With a margin of at least
    the generator's receptive-field radius (``margin="auto"``) a tile equals
    the same region of a one-pass render of the whole canvas up to float
    rounding: there is no seam to blend away. Smaller margins trade exactness
    near tile borders for speed (see docs/performance.md for measured errors).
    Memory is bounded by the window size (plus the small layout), never by the
    canvas size.

Masks
    ``mask: layout`` is the upsampled layout and ``mask: cells`` the painted layer
    cells: both depend only on the layout, so any region's mask is cheap and exact.
    ``mask: rendered`` follows the boundaries the decoder drew: each tile's window is
    rendered with its decoder activations recorded and read by the classifier a
    dataset of the same recipe and seed fits (:mod:`datagen.masks`; calibration renders
    at the recipe's size); the margin makes a tile's mask the whole canvas's there.
    In every mode keep regions are written as the ignore value, never as a class.

Grid classes and unit edits
    As for datasets (:mod:`datagen.render`): a ``paint: grid`` class paints blocks of the
    paper's grid anchored at cell (0, 0) of the *canvas's* paint layer (a tile paints the
    blocks of the whole canvas there), its gaps keep the generator's own activations (written
    as ignore) or take the ``between`` class (one vector per region, stream
    ``(seed, 0, "canvas-between")``); unit edits act on the cells painted with their class.

Output
    :func:`write_canvas` hands the tiles to :mod:`datagen.writers.slide`: an OME-Zarr
    and/or pyramidal OME-TIFFs (image and mask), streamed tile by tile.

What this module shares with datasets
    The recipe is resolved once by :func:`datagen.assemble.assemble` (the same checks as
    ``datagen generate``); regions get their vectors from
    :func:`datagen.render.assign_region_slots`, windows are rendered by
    :func:`datagen.render.painted_forward` and every stream comes from
    :mod:`datagen.seeding` (``(seed, 0, "canvas-layout")``, ``(seed, a, b, "canvas-noise")``,
    ...). What is left here is canvas-specific: the whole-canvas layout and its pointwise
    upsampling, the global noise grid, and tiling with context.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import numpy as np
import torch

from .assemble import PaintSetup, assemble
from .errors import DatagenError, UsageError
from .generate import load_recipe_model
from .layouts import scale_layout_for_canvas, warn_few_regions
from .masks import RenderedMaskModel, feature_layers, ignore_boundaries, ignore_keep, rendered_masks
from .models.generator import DigipathGenerator, Generator
from .options import DEFAULT_TIFF_TILE, DEFAULT_TILE
from .paint import KEEP, boundary_alpha, grid_cells
from .recipe import Recipe, load_recipe
from .render import (
    OWN, MaskMode, PaintClass, Precision, Renderer, assign_gap_slots, assign_region_slots, check_paint_options,
    grid_gaps, mask_keep_ids, painted_forward, unit_edits,
)
from .seeding import stream_rng, stream_torch_generator
from .writers.slide import SlideReport, TileBounds, mask_paths, pyramid_shapes, write_slide

NOISE_TILE = 256
_ROW_CHUNK = 256  # rows of a mask evaluated at once (bounds temporaries)


def receptive_radius(generator: Generator) -> int | None:
    """How far (px) an output pixel of a digipath UNet can see: the margin that makes tiles exact.

    Sums the reach of every 3x3 convolution and upsampling on the way down and
    back up (a conservative bound). None for generators of other families.
    """
    if not isinstance(generator, DigipathGenerator):
        return None
    d = generator.module.config.depth
    enc = 2 + sum(2 ** (k - 1) + 2**k for k in range(1, d + 1))  # conv pairs; the first of each level is strided
    mid = 2 * 2**d
    # per decoder level: bilinear upsampling, a conv pair, and (noise injection) a 2**k average pool
    dec = sum(2 ** (k + 1) + 2 * 2**k + 2**k for k in range(d))
    return enc + mid + dec


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclass
class CanvasReport(SlideReport):
    """What :func:`write_canvas` wrote, and the context margin its tiles were rendered with."""

    margin: int = 0


class Canvas:
    """A whole-slide canvas: any region's image and mask, rendered on demand (see module docstring)."""

    def __init__(
        self,
        generator: Generator,
        classes: Sequence[PaintClass],
        layout: Any,
        *,
        size: tuple[int, int],
        seed: int,
        layer: str | None = None,
        soft_boundary: float = 0.0,
        mask_mode: MaskMode = "layout",
        layout_scale: int | None = None,
        ignore_index: int | None = None,
        margin: int | str | None = "auto",
        noise_tile: int = NOISE_TILE,
        precision: Precision = "auto",
        min_confidence: float = 0.0,
        boundary_ignore: int = 0,
        mask_model: Callable[[], RenderedMaskModel] | None = None,
    ) -> None:
        if not isinstance(generator, DigipathGenerator):
            raise DatagenError(f"{generator.name}: whole-slide canvases need a fully convolutional generator "
                               "with spatial input noise (a digipath UNet); this model generates a fixed size")
        self.generator = generator
        self.classes = list(classes)
        self.layout = layout
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        if self.seed < 0:
            raise UsageError(f"must be non-negative, got {seed}", param="seed")
        self.layer = layer or generator.default_layer
        self.multiple = generator.size_multiple
        h, w = self.size
        if h < 1 or w < 1 or h % self.multiple or w % self.multiple:
            raise UsageError(f"canvas size {h}x{w} must be positive multiples of {self.multiple} "
                             f"(the model's size multiple)", param="size")
        info = generator.layer(self.layer)
        self.stride = int(info.stride)
        self.channels = int(info.channels)
        check_paint_options(self.classes, generator, self.layer, soft_boundary, mask_mode, ignore_index)
        self.soft_boundary = float(soft_boundary)
        if mask_mode == "rendered" and mask_model is None:
            raise UsageError("mask: rendered needs its fitted classifier (e.g. Renderer.mask_model of the recipe)",
                             param="mask_model")
        self.mask_mode = mask_mode
        #: ``mask: rendered``: the classifier (fitted on first call), the layers it reads and its options
        self.mask_model = mask_model
        self.decoder_layers = feature_layers(generator, self.layer)
        self.min_confidence = float(min_confidence)
        self.boundary_ignore = int(boundary_ignore)
        self.ignore_index = ignore_index
        self.keep_ids = [c.id for c in self.classes if c.keep]
        self.mask_keep_ids = mask_keep_ids(self.classes, ignore_index)
        self.precision = precision
        self.layout_scale = int(layout_scale or self.stride)
        if self.layout_scale < 1:
            raise UsageError(f"must be >= 1, got {layout_scale}", param="layout_scale")
        self.noise_tile = int(noise_tile)
        if self.noise_tile < 1:
            raise UsageError(f"must be >= 1, got {noise_tile}", param="noise_tile")
        self.receptive_radius = receptive_radius(generator)
        if margin in (None, "auto"):
            margin = self.receptive_radius or 4 * self.multiple
        margin = int(margin)
        if margin < 0:
            raise UsageError(f"must be >= 0, got {margin}", param="margin")
        self.margin = _round_up(margin, self.multiple)
        self._by_id = {c.id: c for c in self.classes}
        self._grid = any(c.grid for c in self.classes)
        self._units = any(c.units for c in self.classes)
        self.layer_cells = generator.layer_size(self.layer, self.size)  # the whole canvas's paint layer: grids anchor here
        self._build_layout()
        self._cond = self._draw_cond()

    @classmethod
    def from_setup(cls, setup: PaintSetup, *, size: tuple[int, int], mask_mode: MaskMode | None = None,
                   layout_scale: int | None = None, margin: int | str | None = "auto") -> Canvas:
        """The canvas of a checked recipe setup (:func:`datagen.assemble.assemble`) at ``size``.

        ``mask: rendered`` uses the classifier a dataset of the same recipe and seed fits
        (calibration renders at the recipe's size, fitted when the first mask needs it).
        """
        mask_mode = mask_mode or setup.mask_mode
        fit = Renderer.from_setup(setup).mask_model if mask_mode == "rendered" else None
        # regions measure in canvas pixels what they measure in the recipe's samples (docs/layouts.md)
        scale = layout_scale or setup.generator.layer(setup.layer).stride
        layout = scale_layout_for_canvas(setup.layout, setup.size, layout_scale=scale)
        return cls(setup.generator, setup.classes, layout, size=size, seed=setup.seed, layer=setup.layer,
                   soft_boundary=setup.soft_boundary, mask_mode=mask_mode, layout_scale=layout_scale,
                   ignore_index=setup.ignore_index, margin=margin, precision=setup.precision,
                   min_confidence=setup.min_confidence, boundary_ignore=setup.boundary_ignore, mask_model=fit)

    # ---- canvas-level draws ---------------------------------------------------------
    def _build_layout(self) -> None:
        f = self.layout_scale
        h, w = self.size
        self.low_size = (-(-h // f), -(-w // f))
        rng = stream_rng(self.seed, 0, purpose="canvas-layout")
        low = self.layout.generate(rng, self.low_size, {c.name: c.id for c in self.classes})
        self.low = np.ascontiguousarray(low, dtype=np.uint8)
        warn_few_regions(self.low, what=f"the {h}x{w} canvas")
        # one vector per connected region of each painted class (as a dataset sample's plan does)
        self.region, self.slot_vectors = assign_region_slots(
            self.low, self._by_id, stream_rng(self.seed, 0, purpose="canvas-vectors"), self.channels)
        self.gap_slot = None
        if self._grid:  # the between vectors of grid regions, after every region's own
            self.gap_slot, gap_vectors = assign_gap_slots(
                self.low, self.region, self._by_id, stream_rng(self.seed, 0, purpose="canvas-between"),
                len(self.slot_vectors), self.channels)
            self.slot_vectors = torch.cat([self.slot_vectors, gap_vectors])

    def _draw_cond(self) -> torch.Tensor | None:
        cond = self.generator.conditioning
        if cond is None:
            return None
        g = stream_torch_generator(self.seed, 0, purpose="canvas-cond")
        return cond[torch.randint(len(cond), (1,), generator=g)]

    # ---- layout at output resolution ------------------------------------------------------
    def _axis(self, coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        u = (coords.astype(np.float64) + 0.5) / self.layout_scale - 0.5
        i0 = np.floor(u)
        t = (u - i0).astype(np.float32)
        i0 = i0.astype(np.int64)
        return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), (1 - t), t

    def source_cells(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Flat index into the layout of the cell each pixel (ys x xs grid, global px) takes its class from."""
        lh, lw = self.low_size
        ya, yb, wy0, wy1 = self._axis(np.asarray(ys), lh)
        xa, xb, wx0, wx1 = self._axis(np.asarray(xs), lw)
        idx = np.stack([ya[:, None] * lw + xa[None, :], ya[:, None] * lw + xb[None, :],
                        yb[:, None] * lw + xa[None, :], yb[:, None] * lw + xb[None, :]])
        wgt = np.stack([wy0[:, None] * wx0[None, :], wy0[:, None] * wx1[None, :],
                        wy1[:, None] * wx0[None, :], wy1[:, None] * wx1[None, :]])
        cls = self.low.ravel()[idx]
        score = np.zeros_like(wgt)
        for k in range(4):
            for j in range(4):
                score[k] += np.where(cls[j] == cls[k], wgt[j], np.float32(0))
        best = np.argmax(score, axis=0)[None]
        cbest = np.take_along_axis(cls, best, 0)
        src = np.argmax(np.where(cls == cbest, wgt, np.float32(-1)), axis=0)[None]
        return np.take_along_axis(idx, src, 0)[0]

    def _cell_centres(self, lo: int, hi: int) -> np.ndarray:
        s = self.stride
        return np.arange(lo // s, -(-hi // s)) * s + s // 2

    def _grid_window(self, src: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gaps, painted) of a window's layer cells (:func:`datagen.render.grid_gaps`); ``src`` their
        layout cells, ``rows``/``cols`` their global cell indices."""
        return grid_gaps(self.low.ravel()[src], rows, cols, self.layer_cells, self.classes)

    def cells_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The class painted under each pixel of a region (keep classes by their own id): each
        layer cell's class, repeated over its ``stride x stride`` block of the global grid
        (the gaps of grid classes: the between class, or the ignore value)."""
        s = self.stride
        cy, cx = self._cell_centres(y0, y1), self._cell_centres(x0, x1)
        src = self.source_cells(cy, cx)
        cells = self.low.ravel()[src]
        if self._grid:
            _, painted = self._grid_window(src, cy // s, cx // s)
            cells = np.where(painted == OWN, self.ignore_index if self.ignore_index is not None else 0,
                             painted).astype(np.uint8)
        rows = np.arange(y0, y1) // s - y0 // s
        cols = np.arange(x0, x1) // s - x0 // s
        return np.ascontiguousarray(cells[rows][:, cols])

    def mask_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The (y1-y0, x1-x0) uint8 class-id mask of a canvas region (``mask: rendered`` renders it)."""
        self._check_region(y0, y1, x0, x1)
        if self.mask_mode == "rendered":
            return self.render_tile_pair(y0, y1, x0, x1)[1]
        if self.mask_mode == "cells":
            return ignore_keep(self.cells_region(y0, y1, x0, x1), self.keep_ids, self.ignore_index)
        low = self.low.ravel()
        out = np.empty((y1 - y0, x1 - x0), dtype=np.uint8)
        xs = np.arange(x0, x1)
        for r in range(y0, y1, _ROW_CHUNK):
            r1 = min(r + _ROW_CHUNK, y1)
            out[r - y0:r1 - y0] = low[self.source_cells(np.arange(r, r1), xs)]
        if self._grid:  # pixels of a grid class in a layer cell outside its blocks: between class or ignore
            s = self.stride
            gy, gx = np.arange(y0, y1) // s, xs // s
            for c in self.classes:
                if c.grid:
                    gap = (out == c.id) & ~grid_cells(gy, gx, c.grid, *self.layer_cells).numpy()
                    out[gap] = c.between if c.between is not None else self.ignore_index
        return ignore_keep(out, self.keep_ids, self.ignore_index)

    def layer_labels(self, y0: int, y1: int, x0: int, x1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Paint plan of a window: (h, w) slot per layer cell (KEEP or an index into the vectors) and the vectors."""
        return self._layer_plan(y0, y1, x0, x1)[:2]

    def _layer_plan(self, y0: int, y1: int, x0: int, x1: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`layer_labels` and, when a class has unit edits, the class painted in each cell."""
        cy, cx = self._cell_centres(y0, y1), self._cell_centres(x0, x1)
        src = self.source_cells(cy, cx)
        slots = self.region.ravel()[src].astype(np.int64)
        painted = None
        if self._grid or self._units:
            gaps, painted_np = self._grid_window(src, cy // self.stride, cx // self.stride)
            if self.gap_slot is not None and gaps.any():
                slots[gaps] = self.gap_slot[slots[gaps]]
            painted = torch.from_numpy(painted_np) if self._units else None
        used = np.unique(slots[slots >= 0])
        if len(used) == 0:
            return torch.full(slots.shape, KEEP, dtype=torch.int64), torch.zeros(1, self.channels), painted
        compact = np.where(slots >= 0, np.searchsorted(used, np.maximum(slots, 0)), KEEP)
        return torch.from_numpy(compact), self.slot_vectors[torch.from_numpy(used)], painted

    # ---- rendering ----------------------------------------------------------------------
    def noise_region(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """(1, C, y1-y0, x1-x0) input noise of a region, assembled from the fixed noise tiles."""
        nt = self.noise_tile
        c = self.generator.module.config.noise_channels
        out = torch.empty((1, c, y1 - y0, x1 - x0))
        for a in range(y0 // nt, -(-y1 // nt)):
            for b in range(x0 // nt, -(-x1 // nt)):
                g = stream_torch_generator(self.seed, a, b, purpose="canvas-noise")
                tile = torch.randn((c, nt, nt), generator=g)
                ty0, ty1 = max(y0, a * nt), min(y1, (a + 1) * nt)
                tx0, tx1 = max(x0, b * nt), min(x1, (b + 1) * nt)
                out[0, :, ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = tile[:, ty0 - a * nt:ty1 - a * nt, tx0 - b * nt:tx1 - b * nt]
        return out

    def _check_region(self, y0: int, y1: int, x0: int, x1: int) -> None:
        h, w = self.size
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"region rows {y0}:{y1}, cols {x0}:{x1} is not inside the {h}x{w} canvas")

    def render_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1-y0, x1-x0, 3) uint8 image of a region rendered in one pass, without extra context.

        Bounds must be multiples of the model's size multiple. Used for tiles (with
        their margin) and, over the whole canvas, as the seam-free reference.
        """
        return self._forward(y0, y1, x0, x1, record=False)[0][0]

    def _forward(self, y0: int, y1: int, x0: int, x1: int, *, record: bool) -> tuple[np.ndarray, list[torch.Tensor]]:
        """A region's image (1, h, w, 3) and, with ``record``, the decoder activations ``mask: rendered`` reads."""
        self._check_region(y0, y1, x0, x1)
        m = self.multiple
        if y0 % m or y1 % m or x0 % m or x1 % m:
            raise ValueError(f"region bounds must be multiples of {m}, got rows {y0}:{y1}, cols {x0}:{x1}")
        labels, vectors, painted = self._layer_plan(y0, y1, x0, x1)
        lh, lw = self.generator.layer_size(self.layer, (y1 - y0, x1 - x0))
        if tuple(labels.shape) != (lh, lw):
            raise RuntimeError(f"layer {self.layer} is {lh}x{lw} for a {y1 - y0}x{x1 - x0} window, "
                               f"labels are {tuple(labels.shape)}")
        alpha = boundary_alpha(labels, self.soft_boundary)[None] if self.soft_boundary > 0 else None
        inputs = {"noise": self.noise_region(y0, y1, x0, x1)}
        if self._cond is not None:
            inputs["cond"] = self._cond
        edits = unit_edits(self.classes, painted[None], self.layer) if painted is not None else ()
        return painted_forward(self.generator, self.layer, inputs, labels[None], vectors[None], alpha, edits=edits,
                               precision=self.precision, record=self.decoder_layers if record else ())

    def window(self, y0: int, y1: int, x0: int, x1: int) -> tuple[int, int, int, int]:
        """The region rendered for tile (y0:y1, x0:x1): the tile plus ``margin`` px where the canvas
        has them, widened to the model's size multiple (tiles from :meth:`tiles` already are)."""
        h, w = self.size
        m, k = self.margin, self.multiple
        return (max(0, (y0 - m) // k * k), min(h, _round_up(y1 + m, k)),
                max(0, (x0 - m) // k * k), min(w, _round_up(x1 + m, k)))

    def render_tile(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """A tile's image: its window rendered, the margin cropped off."""
        wy0, wy1, wx0, wx1 = self.window(y0, y1, x0, x1)
        img = self.render_region(wy0, wy1, wx0, wx1)
        return np.ascontiguousarray(img[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0])

    def render_tile_pair(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """A tile's image and ``mask: rendered`` mask, both from one pass over its window.

        As for a dataset sample (:meth:`datagen.render.Renderer.render_pairs`): away from
        painted-cell boundaries a pixel takes its cell's class, near them the classifier reads
        the class the decoder drew among those painted nearby; keep regions and unsure pixels
        are the ignore value, then ``boundary_ignore`` strips. The window's context (the
        margin) makes the mask of a tile the mask of the whole canvas there.
        """
        if self.mask_mode != "rendered":
            return self.render_tile(y0, y1, x0, x1), self.mask_region(y0, y1, x0, x1)
        wy0, wy1, wx0, wx1 = self.window(y0, y1, x0, x1)
        images, feats = self._forward(wy0, wy1, wx0, wx1, record=True)
        cells = self.cells_region(wy0, wy1, wx0, wx1)[None]
        masks = rendered_masks(self.mask_model(), feats, cells, band=float(self.stride),  # type: ignore[misc]
                               ignore_index=self.ignore_index, keep_ids=self.mask_keep_ids,
                               min_confidence=self.min_confidence)
        if self._grid and self.ignore_index is not None:  # gaps left to the generator claim no class
            masks[cells == self.ignore_index] = self.ignore_index
        masks = ignore_boundaries(masks, self.boundary_ignore, self.ignore_index)
        crop = (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))
        return np.ascontiguousarray(images[0][crop]), np.ascontiguousarray(masks[0][crop])

    def render_pair(self, bounds: TileBounds) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
        """A tile's image and a function giving its mask (the slide writer's
        :data:`~datagen.writers.slide.RenderTile`). A layout or cells mask depends only on the
        layout, so the writer computes it on its own thread while the next tile renders; a
        rendered mask comes from the tile's own forward pass."""
        if self.mask_mode == "rendered":
            image, mask = self.render_tile_pair(*bounds)
            return image, lambda: mask
        return self.render_tile(*bounds), partial(self.mask_region, *bounds)

    def tiles(self, tile: int) -> list[tuple[int, int, int, int]]:
        """Tile bounds (y0, y1, x0, x1) in row-major order; ``tile`` must be a multiple of the size multiple."""
        if tile < 1 or tile % self.multiple:
            raise UsageError(f"tile size must be a positive multiple of {self.multiple}, got {tile}", param="tile")
        h, w = self.size
        return [(y, min(y + tile, h), x, min(x + tile, w)) for y in range(0, h, tile) for x in range(0, w, tile)]

    def describe(self) -> dict[str, Any]:
        return {
            "size": list(self.size), "seed": self.seed, "layer": self.layer, "stride": self.stride,
            "layout_scale": self.layout_scale, "layout_size": list(self.low_size), "noise_tile": self.noise_tile,
            "margin": self.margin, "receptive_radius": self.receptive_radius, "mask": self.mask_mode,
            "soft_boundary": self.soft_boundary, "regions": int(len(self.slot_vectors)),
            **({"min_confidence": self.min_confidence, "boundary_ignore": self.boundary_ignore}
               if self.mask_mode == "rendered" else {}),
            "model": self.generator.name,
            **({"precision": self.precision} if self.precision != "auto" else {}),
        }


# ---- building a canvas from a recipe ------------------------------------------------------

def canvas_from_recipe(
    recipe_path: str | os.PathLike,
    *,
    size: tuple[int, int],
    seed: int = 0,
    device: str | None = None,
    layout: Any = None,
    layout_scale: int | None = None,
    margin: int | str | None = "auto",
    generator: Generator | None = None,
    trust_pickles: bool = False,
    precision: Precision = "auto",
) -> tuple[Canvas, Recipe]:
    """A :class:`Canvas` for a recipe (its model, layer, classes, vectors, paint options) and the recipe.

    ``layout`` replaces the recipe's layout: a mapping, a preset name or a YAML path.
    ``precision``: the forward passes' arithmetic, as ``generate --precision`` (:data:`datagen.options.PRECISIONS`).
    """
    recipe = load_recipe(recipe_path)
    if layout is not None:
        recipe = recipe.with_layout(layout)
    gen = generator if generator is not None else load_recipe_model(recipe, device, trust_pickles=trust_pickles)
    setup = assemble(recipe, gen, seed, precision)  # the checks of datagen generate: recipe, model, library, layout
    canvas = Canvas.from_setup(setup, size=size, layout_scale=layout_scale, margin=margin)
    return canvas, recipe


# ---- output -------------------------------------------------------------------------------

def write_canvas(
    canvas: Canvas,
    *,
    out: str | os.PathLike | None = None,
    zarr_path: str | os.PathLike | None = None,
    tile: int = DEFAULT_TILE,
    tiff_tile: int = DEFAULT_TIFF_TILE,
    compression: str = "zlib",
    jpeg_quality: int = 90,
    mpp: float | None = None,
    tiff_layout: str | None = None,
    classes: list[dict[str, Any]] | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> CanvasReport:
    """Render ``canvas`` tile by tile into an OME-Zarr and/or pyramidal TIFFs (:mod:`datagen.writers.slide`).

    ``mpp`` (microns per pixel at level 0): None takes the model's (``Generator.mpp``, from its
    checkpoint's ``meta.mpp``; the canvas renders at the model's own scale), 0 writes none.
    ``tiff_layout``: ``ome`` or ``generic`` (OpenSlide); None follows ``out``'s name."""
    from . import __version__

    tiles = canvas.tiles(tile)
    classes = classes or [{"id": c.id, "name": c.name, "color": "#808080"} for c in canvas.classes]
    meta = {"tool": "datagen canvas", "canvas": canvas.describe(), "classes": classes, **(attrs or {}),
            "tool_version": __version__}
    rep = write_slide(canvas.size, tiles, canvas.render_pair, out=out, zarr_path=zarr_path, tiff_tile=tiff_tile,
                      compression=compression, jpeg_quality=jpeg_quality,
                      mpp=canvas.generator.mpp if mpp is None else mpp, tiff_layout=tiff_layout,
                      classes=classes, meta=meta, overwrite=overwrite, progress=progress)
    return CanvasReport(**{f.name: getattr(rep, f.name) for f in fields(SlideReport)}, margin=canvas.margin)


def render_canvas(
    recipe_path: str | os.PathLike,
    *,
    size: int | tuple[int, int],
    out: str | os.PathLike | None = None,
    zarr_path: str | os.PathLike | None = None,
    seed: int = 0,
    tile: int = DEFAULT_TILE,
    margin: int | str | None = "auto",
    layout: Any = None,
    layout_scale: int | None = None,
    device: str | None = None,
    generator: Generator | None = None,
    trust_pickles: bool = False,
    precision: Precision = "auto",
    **write_options: Any,
) -> CanvasReport:
    """Recipe -> whole-slide canvas on disk (the ``datagen canvas`` command)."""
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    canvas, recipe = canvas_from_recipe(recipe_path, size=hw, seed=seed, device=device, layout=layout,
                                        layout_scale=layout_scale, margin=margin, generator=generator,
                                        trust_pickles=trust_pickles, precision=precision)
    classes = [{"id": c.id, "name": c.name, "color": c.color} for c in recipe.classes]
    attrs = {"recipe": recipe.file.read_text(), "recipe_file": str(recipe.file), "model": recipe.model_spec}
    if canvas.ignore_index is not None:  # keep regions, and with mask: rendered unsure pixels and boundary strips
        attrs["ignore_index"] = canvas.ignore_index
    return write_canvas(canvas, out=out, zarr_path=zarr_path, tile=tile, classes=classes, attrs=attrs, **write_options)


__all__ = ["Canvas", "CanvasReport", "canvas_from_recipe", "mask_paths", "pyramid_shapes",
           "receptive_radius", "render_canvas", "write_canvas"]
