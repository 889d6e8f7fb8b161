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

Output
    Tiles go into an OME-Zarr (zarr v3, NGFF 0.5: image ``0..L-1`` as
    (c, y, x), label image ``labels/mask/0..L-1``); the pyramid is built level
    by level from it, chunk by chunk; the pyramidal OME-TIFFs (image, and the
    mask in a second file, each with its reduced levels in SubIFDs, tiled and
    compressed) are then streamed tile by tile from the zarr levels with
    tifffile's tile-iterator interface. Without ``zarr_path`` the OME-Zarr is
    a temporary folder beside the TIFF, removed at the end.

    slide.ome.tif          RGB, pyramid in SubIFDs (opens in tiffslide, QuPath, ...)
    slide.mask.ome.tif     class ids (uint8), same pyramid (nearest-neighbour levels)
    slide.canvas.json      class table, seed, recipe and canvas parameters
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from .errors import ConfigError, DatagenError
from .models.generator import DigipathGenerator, Generator
from .models.hooks import LayerHook
from .paint import KEEP, boundary_alpha, paint
from .masks import ignore_keep
from .render import PaintClass, check_paint_options, to_uint8

NOISE_TILE = 256
DEFAULT_TILE = 1024
DEFAULT_TIFF_TILE = 512
COMPRESSIONS = ("zlib", "jpeg", "zstd", "lzw", "none")
_ROW_CHUNK = 256  # rows of a mask evaluated at once (bounds temporaries)


def _key(purpose: str) -> int:
    return int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=4).digest(), "little")


def _seed_sequence(seed: int, *parts: int, purpose: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), *[int(p) for p in parts], _key(purpose)])


def _torch_generator(ss: np.random.SeedSequence) -> torch.Generator:
    state = ss.generate_state(2, dtype=np.uint32)
    g = torch.Generator(device="cpu")
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


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
class CanvasReport:
    image: Path | None
    mask: Path | None
    zarr: Path | None
    size: tuple[int, int]
    levels: list[tuple[int, int]]
    tiles: int
    margin: int
    seconds: float
    render_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


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
        mask_mode: Literal["layout", "cells"] = "layout",
        layout_scale: int | None = None,
        ignore_index: int | None = None,
        margin: int | str | None = "auto",
        noise_tile: int = NOISE_TILE,
        precision: Literal["auto", "fp32", "fp16"] = "auto",
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
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.layer = layer or generator.default_layer
        self.multiple = generator.size_multiple
        h, w = self.size
        if h < 1 or w < 1 or h % self.multiple or w % self.multiple:
            raise ConfigError(f"canvas size {h}x{w} must be positive multiples of {self.multiple} "
                              f"(the model's size multiple)", field="size")
        info = generator.layer(self.layer)
        self.stride = int(info.stride)
        self.channels = int(info.channels)
        check_paint_options(self.classes, self.layer, self.channels, soft_boundary, mask_mode)
        self.soft_boundary = float(soft_boundary)
        if mask_mode == "rendered":
            raise ValueError("a canvas writes mask: layout or cells; mask: rendered is not implemented for canvases yet")
        self.mask_mode = mask_mode
        self.ignore_index = ignore_index
        self.keep_ids = [c.id for c in self.classes if c.keep]
        self.precision = precision
        self.layout_scale = int(layout_scale or self.stride)
        if self.layout_scale < 1:
            raise ValueError(f"layout_scale must be >= 1, got {layout_scale}")
        self.noise_tile = int(noise_tile)
        if self.noise_tile < 1:
            raise ValueError(f"noise_tile must be >= 1, got {noise_tile}")
        self.receptive_radius = receptive_radius(generator)
        if margin in (None, "auto"):
            margin = self.receptive_radius or 4 * self.multiple
        margin = int(margin)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = _round_up(margin, self.multiple)
        self._by_id = {c.id: c for c in self.classes}
        self._build_layout()
        self._cond = self._draw_cond()

    # ---- canvas-level draws ---------------------------------------------------------
    def _build_layout(self) -> None:
        f = self.layout_scale
        h, w = self.size
        self.low_size = (-(-h // f), -(-w // f))
        rng = np.random.default_rng(_seed_sequence(self.seed, 0, purpose="canvas-layout"))
        low = self.layout.generate(rng, self.low_size, {c.name: c.id for c in self.classes})
        self.low = np.ascontiguousarray(low, dtype=np.uint8)
        # one vector per connected region of each painted class (as Renderer.plan does per sample)
        vrng = np.random.default_rng(_seed_sequence(self.seed, 0, purpose="canvas-vectors"))
        region = np.full(self.low.shape, KEEP, dtype=np.int32)
        vectors: list[torch.Tensor] = []
        slots = 0
        for cid in np.flatnonzero(np.bincount(self.low.ravel(), minlength=256)):
            cls = self._by_id.get(int(cid))
            if cls is None:
                raise ValueError(f"layout produced class id {int(cid)}, which is not in the recipe")
            if cls.keep:
                continue
            comps, n = ndimage.label(self.low == cid)
            wts = cls.weights.double().numpy() if cls.weights is not None else np.ones(len(cls.vectors))
            choice = vrng.choice(len(cls.vectors), size=n, p=wts / wts.sum())
            hit = comps > 0
            region[hit] = comps[hit] - 1 + slots
            vectors.append(cls.vectors[choice].float())
            slots += n
        self.region = region
        self.slot_vectors = torch.cat(vectors) if slots else torch.zeros(0, self.channels)

    def _draw_cond(self) -> torch.Tensor | None:
        cond = self.generator.conditioning
        if cond is None:
            return None
        g = _torch_generator(_seed_sequence(self.seed, 0, purpose="canvas-cond"))
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

    def mask_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The (y1-y0, x1-x0) uint8 class-id mask of a canvas region."""
        self._check_region(y0, y1, x0, x1)
        low = self.low.ravel()
        if self.mask_mode == "cells":
            s = self.stride
            cells = low[self.source_cells(self._cell_centres(y0, y1), self._cell_centres(x0, x1))]
            rows = np.arange(y0, y1) // s - y0 // s
            cols = np.arange(x0, x1) // s - x0 // s
            return ignore_keep(np.ascontiguousarray(cells[rows][:, cols]), self.keep_ids, self.ignore_index)
        out = np.empty((y1 - y0, x1 - x0), dtype=np.uint8)
        xs = np.arange(x0, x1)
        for r in range(y0, y1, _ROW_CHUNK):
            r1 = min(r + _ROW_CHUNK, y1)
            out[r - y0:r1 - y0] = low[self.source_cells(np.arange(r, r1), xs)]
        return ignore_keep(out, self.keep_ids, self.ignore_index)

    def layer_labels(self, y0: int, y1: int, x0: int, x1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Paint plan of a window: (h, w) slot per layer cell (KEEP or an index into the vectors) and the vectors."""
        src = self.source_cells(self._cell_centres(y0, y1), self._cell_centres(x0, x1))
        slots = self.region.ravel()[src].astype(np.int64)
        used = np.unique(slots[slots >= 0])
        if len(used) == 0:
            return torch.full(slots.shape, KEEP, dtype=torch.int64), torch.zeros(1, self.channels)
        compact = np.where(slots >= 0, np.searchsorted(used, np.maximum(slots, 0)), KEEP)
        return torch.from_numpy(compact), self.slot_vectors[torch.from_numpy(used)]

    # ---- rendering ----------------------------------------------------------------------
    def noise_region(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """(1, C, y1-y0, x1-x0) input noise of a region, assembled from the fixed noise tiles."""
        nt = self.noise_tile
        c = self.generator.module.config.noise_channels
        out = torch.empty((1, c, y1 - y0, x1 - x0))
        for a in range(y0 // nt, -(-y1 // nt)):
            for b in range(x0 // nt, -(-x1 // nt)):
                g = _torch_generator(_seed_sequence(self.seed, a, b, purpose="canvas-noise"))
                tile = torch.randn((c, nt, nt), generator=g)
                ty0, ty1 = max(y0, a * nt), min(y1, (a + 1) * nt)
                tx0, tx1 = max(x0, b * nt), min(x1, (b + 1) * nt)
                out[0, :, ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = tile[:, ty0 - a * nt:ty1 - a * nt, tx0 - b * nt:tx1 - b * nt]
        return out

    def _autocast(self) -> Any:
        if self.generator.device.type == "cuda" and self.precision in ("auto", "fp16"):
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def _check_region(self, y0: int, y1: int, x0: int, x1: int) -> None:
        h, w = self.size
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"region rows {y0}:{y1}, cols {x0}:{x1} is not inside the {h}x{w} canvas")

    def render_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1-y0, x1-x0, 3) uint8 image of a region rendered in one pass, without extra context.

        Bounds must be multiples of the model's size multiple. Used for tiles (with
        their margin) and, over the whole canvas, as the seam-free reference.
        """
        self._check_region(y0, y1, x0, x1)
        m = self.multiple
        if y0 % m or y1 % m or x0 % m or x1 % m:
            raise ValueError(f"region bounds must be multiples of {m}, got rows {y0}:{y1}, cols {x0}:{x1}")
        labels, vectors = self.layer_labels(y0, y1, x0, x1)
        lh, lw = self.generator.layer_size(self.layer, (y1 - y0, x1 - x0))
        if tuple(labels.shape) != (lh, lw):
            raise RuntimeError(f"layer {self.layer} is {lh}x{lw} for a {y1 - y0}x{x1 - x0} window, "
                               f"labels are {tuple(labels.shape)}")
        dev = self.generator.device
        labels, vectors = labels.to(dev)[None], vectors.to(dev)[None]
        alpha = boundary_alpha(labels[0], self.soft_boundary)[None] if self.soft_boundary > 0 else None
        inputs = {"noise": self.noise_region(y0, y1, x0, x1)}
        if self._cond is not None:
            inputs["cond"] = self._cond

        def edit(act: torch.Tensor) -> torch.Tensor:
            return paint(act, labels, vectors, alpha)

        with torch.inference_mode(), self._autocast(), LayerHook(self.generator.module, self.layer, edit=edit, record=False):
            images = self.generator.forward(inputs)
        return to_uint8(images)[0]

    def window(self, y0: int, y1: int, x0: int, x1: int) -> tuple[int, int, int, int]:
        """The region rendered for tile (y0:y1, x0:x1): the tile plus ``margin`` px where the canvas has them."""
        h, w = self.size
        m = self.margin
        return max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)

    def render_tile(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """A tile's image: its window rendered, the margin cropped off."""
        wy0, wy1, wx0, wx1 = self.window(y0, y1, x0, x1)
        img = self.render_region(wy0, wy1, wx0, wx1)
        return np.ascontiguousarray(img[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0])

    def tiles(self, tile: int) -> list[tuple[int, int, int, int]]:
        """Tile bounds (y0, y1, x0, x1) in row-major order; ``tile`` must be a multiple of the size multiple."""
        if tile < 1 or tile % self.multiple:
            raise ValueError(f"tile size must be a positive multiple of {self.multiple}, got {tile}")
        h, w = self.size
        return [(y, min(y + tile, h), x, min(x + tile, w)) for y in range(0, h, tile) for x in range(0, w, tile)]

    def describe(self) -> dict[str, Any]:
        return {
            "size": list(self.size), "seed": self.seed, "layer": self.layer, "stride": self.stride,
            "layout_scale": self.layout_scale, "layout_size": list(self.low_size), "noise_tile": self.noise_tile,
            "margin": self.margin, "receptive_radius": self.receptive_radius, "mask": self.mask_mode,
            "soft_boundary": self.soft_boundary, "regions": int(len(self.slot_vectors)),
            "model": self.generator.name,
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
) -> tuple[Canvas, Any]:
    """A :class:`Canvas` for a recipe (its model, layer, classes, vectors, paint options) and the recipe.

    ``layout`` replaces the recipe's layout: a mapping, a preset name or a YAML path.
    """
    from .generate import build_renderer, load_recipe_model
    from .recipe import load_recipe

    recipe = load_recipe(recipe_path)
    if layout is not None:
        if isinstance(layout, (str, os.PathLike)) and os.path.exists(layout):
            layout = str(Path(layout).resolve())
        recipe.layout = layout
        recipe._layout = None  # re-parse with the replacement
    gen = generator if generator is not None else load_recipe_model(recipe, device, trust_pickles=trust_pickles)
    renderer = build_renderer(recipe, gen, seed)  # validates recipe, model, library and layout
    mask_mode = renderer.mask_mode
    if mask_mode == "rendered":
        if "mask" in recipe.paint.model_fields_set:
            raise ConfigError("datagen canvas writes mask: cells or layout; mask: rendered is not implemented for "
                              "canvases yet", file=recipe.file, field="paint.mask")
        mask_mode = "cells"  # the default rendered mode is a dataset feature: a canvas writes the painted cells
    canvas = Canvas(
        gen, renderer.classes, renderer.layout, size=size, seed=seed, layer=renderer.layer,
        soft_boundary=renderer.soft_boundary, mask_mode=mask_mode, layout_scale=layout_scale,
        margin=margin, precision=renderer.precision, ignore_index=renderer.ignore_index,
    )
    return canvas, recipe


# ---- output -------------------------------------------------------------------------------

def pyramid_shapes(size: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """Level sizes: halve (rounding up) until the whole level fits in one tile."""
    shapes = [tuple(size)]
    while max(shapes[-1]) > tile:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes  # type: ignore[return-value]


def mask_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """(mask TIFF, sidecar JSON) written beside image TIFF ``out``: ``<stem>.mask.ome.tif``, ``<stem>.canvas.json``."""
    p = Path(out)
    name = p.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(f"{name}.mask.ome.tif"), p.with_name(f"{name}.canvas.json")


def _downsample_image(x: np.ndarray) -> np.ndarray:
    """(3, h, w) uint8 -> (3, ceil(h/2), ceil(w/2)): mean of 2x2 blocks (edges replicated), rounded."""
    c, h, w = x.shape
    if h % 2 or w % 2:
        x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    s = x.reshape(c, x.shape[1] // 2, 2, x.shape[2] // 2, 2).astype(np.uint16).sum(axis=(2, 4))
    return ((s + 2) // 4).astype(np.uint8)


def _downsample_mask(x: np.ndarray) -> np.ndarray:
    """Nearest neighbour: the top-left pixel of each 2x2 block (keeps class ids exact)."""
    return np.ascontiguousarray(x[::2, ::2])


def _ngff_multiscales(name: str, axes: list[dict[str, Any]], levels: int, mpp: float | None,
                      downsample_type: str) -> dict[str, Any]:
    unit = {"unit": "micrometer"} if mpp else {}
    axes = [dict(a, **unit) if a["type"] == "space" else a for a in axes]
    base = mpp or 1.0
    datasets = []
    for k in range(levels):
        scale = [1.0 if a["type"] != "space" else base * 2**k for a in axes]
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return {"name": name, "axes": axes, "datasets": datasets, "type": downsample_type}


class _ZarrCanvas:
    """The OME-Zarr (zarr v3, NGFF 0.5) store of a canvas: image levels and the label image."""

    def __init__(self, path: Path, classes: list[dict[str, Any]], chunk: int,
                 levels: list[tuple[int, int]], attrs: dict[str, Any], mpp: float | None) -> None:
        import zarr
        import zarr.storage
        from zarr.codecs import ZstdCodec

        self.path = path
        self.levels = levels
        store = zarr.storage.LocalStore(path)
        comp = [ZstdCodec(level=3)]
        space = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
        colors = [{"label-value": c["id"], "rgba": [*_rgb(c["color"]), 255]} for c in classes]
        props = [{"label-value": c["id"], "name": c["name"]} for c in classes]
        root = zarr.create_group(store, zarr_format=3, attributes={
            "ome": {
                "version": "0.5",
                "multiscales": [_ngff_multiscales("image", [{"name": "c", "type": "channel"}, *space], len(levels),
                                                  mpp, "mean")],
                "omero": {"channels": [{"label": n, "color": col, "active": True,
                                        "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
                                       for n, col in (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"))],
                          "rdefs": {"model": "color"}},
            },
            "datagen": attrs,
        })
        labels = root.create_group("labels", attributes={"ome": {"version": "0.5", "labels": ["mask"]}})
        mask = labels.create_group("mask", attributes={"ome": {
            "version": "0.5",
            "multiscales": [_ngff_multiscales("mask", space, len(levels), mpp, "nearest")],
            "image-label": {"colors": colors, "properties": props, "source": {"image": "../../"}},
        }})
        self.images, self.masks = [], []
        for k, (h, w) in enumerate(levels):
            ch = (min(chunk, h), min(chunk, w))
            self.images.append(root.create_array(str(k), shape=(3, h, w), chunks=(3, *ch), dtype="uint8",
                                                 compressors=comp, fill_value=0, dimension_names=("c", "y", "x")))
            self.masks.append(mask.create_array(str(k), shape=(h, w), chunks=ch, dtype="uint8",
                                                compressors=comp, fill_value=0, dimension_names=("y", "x")))

    def write(self, level: int, y0: int, x0: int, image_chw: np.ndarray, mask: np.ndarray) -> None:
        h, w = mask.shape
        self.images[level][:, y0:y0 + h, x0:x0 + w] = image_chw
        self.masks[level][y0:y0 + h, x0:x0 + w] = mask

    def build_level(self, level: int, chunk: int, bar: Any) -> None:
        """Level ``level`` from ``level - 1``, one output chunk at a time."""
        h, w = self.levels[level]
        ph, pw = self.levels[level - 1]
        for y in range(0, h, chunk):
            for x in range(0, w, chunk):
                y1, x1 = min(y + chunk, h), min(x + chunk, w)
                sy0, sy1, sx0, sx1 = 2 * y, min(2 * y1, ph), 2 * x, min(2 * x1, pw)
                img = np.asarray(self.images[level - 1][:, sy0:sy1, sx0:sx1])
                msk = np.asarray(self.masks[level - 1][sy0:sy1, sx0:sx1])
                self.write(level, y, x, _downsample_image(img)[:, : y1 - y, : x1 - x],
                           _downsample_mask(msk)[: y1 - y, : x1 - x])
                bar.update(1)

    def image_tiles(self, level: int, tile: int, bar: Any) -> Iterator[np.ndarray]:
        h, w = self.levels[level]
        arr = self.images[level]
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                yield np.ascontiguousarray(np.asarray(arr[:, y:y + tile, x:x + tile]).transpose(1, 2, 0))
                bar.update(1)

    def mask_tiles(self, level: int, tile: int, bar: Any) -> Iterator[np.ndarray]:
        h, w = self.levels[level]
        arr = self.masks[level]
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                yield np.ascontiguousarray(np.asarray(arr[y:y + tile, x:x + tile]))
                bar.update(1)


def _rgb(color: str) -> list[int]:
    h = color.lstrip("#")
    return [int(h[i:i + 2], 16) for i in (0, 2, 4)]


def _tiff_compression(name: str, quality: int) -> dict[str, Any]:
    if name == "none":
        return {"compression": None}
    if name == "jpeg":
        return {"compression": "jpeg", "compressionargs": {"level": int(quality)}}
    return {"compression": name}


def _write_tiff(path: Path, store: _ZarrCanvas, *, kind: str, tile: int, compression: dict[str, Any],
                mpp: float | None, name: str, bar: Any) -> None:
    import tifffile

    levels = store.levels
    h, w = levels[0]
    raw = h * w * (3 if kind == "image" else 1) * 4 // 3
    workers = min(4, os.cpu_count() or 1)
    # tifffile buffers up to `buffersize` bytes of tiles for its encoder threads (default 256 MiB):
    # a few tiles per worker keep memory bounded by the tile size instead
    opts: dict[str, Any] = {"tile": (tile, tile), "maxworkers": workers, "buffersize": 2 * workers * tile * tile * 3,
                            **compression}
    if kind == "image":
        opts["photometric"] = "rgb"
        shape_of = lambda hw: (*hw, 3)  # noqa: E731
        tiles = store.image_tiles
        axes = "YXS"
    else:
        opts["photometric"] = "minisblack"
        shape_of = lambda hw: tuple(hw)  # noqa: E731
        tiles = store.mask_tiles
        axes = "YX"
    meta: dict[str, Any] = {"axes": axes, "Name": name}
    if mpp:
        meta.update({"PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": mpp, "PhysicalSizeYUnit": "µm"})
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=raw > 2**31, ome=True) as tif:
            for k, hw in enumerate(levels):
                res = {}
                if mpp:
                    res = {"resolution": (1e4 / (mpp * 2**k), 1e4 / (mpp * 2**k)), "resolutionunit": "CENTIMETER"}
                extra = {"subifds": len(levels) - 1, "metadata": meta} if k == 0 else {"subfiletype": 1, "metadata": None}
                tif.write(tiles(k, tile, bar), shape=shape_of(hw), dtype=np.uint8, **opts, **res, **extra)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    classes: list[dict[str, Any]] | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> CanvasReport:
    """Render ``canvas`` tile by tile into an OME-Zarr and/or pyramidal OME-TIFFs (see module docstring)."""
    from tqdm.auto import tqdm

    if out is None and zarr_path is None:
        raise DatagenError("give an output: an OME-TIFF path (--out) and/or an OME-Zarr path (--zarr)")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    if tiff_tile < 16 or tiff_tile % 16:
        raise ValueError(f"TIFF tile size must be a multiple of 16, got {tiff_tile}")
    tiles = canvas.tiles(tile)
    classes = classes or [{"id": c.id, "name": c.name, "color": "#808080"} for c in canvas.classes]
    outputs = []
    if out is not None:
        mask_out, json_out = mask_paths(out)
        outputs += [Path(out), mask_out, json_out]
    if zarr_path is not None:
        outputs.append(Path(zarr_path))
    for p in outputs:
        if p.exists() and not overwrite:
            raise DatagenError(f"{p} exists; choose another output path or pass --overwrite")
    for p in outputs:
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists() and overwrite:
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    t0 = time.perf_counter()
    levels = pyramid_shapes(canvas.size, tiff_tile)
    meta = {"tool": "datagen canvas", "canvas": canvas.describe(), "classes": classes, **(attrs or {})}
    from . import __version__

    meta["tool_version"] = __version__
    zpath = Path(zarr_path) if zarr_path is not None else Path(out).with_name(f".{Path(out).name}.zarr-{uuid.uuid4().hex[:8]}")  # type: ignore[arg-type]
    store = _ZarrCanvas(zpath, classes, tiff_tile, levels, meta, mpp)
    try:
        bar = tqdm(total=len(tiles), unit="tile", desc="canvas", disable=not progress, dynamic_ncols=True)

        def write(t: tuple[int, int, int, int], img: np.ndarray) -> None:
            y0, y1, x0, x1 = t
            store.write(0, y0, x0, img.transpose(2, 0, 1), canvas.mask_region(y0, y1, x0, x1))

        with ThreadPoolExecutor(1, thread_name_prefix="canvas-writer") as pool:
            pending: deque[Future[None]] = deque()
            try:
                for t in tiles:
                    img = canvas.render_tile(*t)
                    while len(pending) >= 2:  # bounded memory: at most two tiles wait for the writer
                        pending.popleft().result()
                        bar.update(1)
                    pending.append(pool.submit(write, t, img))
                while pending:
                    pending.popleft().result()
                    bar.update(1)
            except BaseException:
                for f in pending:
                    f.cancel() or f.exception()
                raise
        bar.close()
        render_s = time.perf_counter() - t0

        chunks = sum(-(-h // tiff_tile) * -(-w // tiff_tile) for h, w in levels[1:])
        tiff_tiles = sum(-(-h // tiff_tile) * -(-w // tiff_tile) for h, w in levels) * 2 if out is not None else 0
        bar = tqdm(total=chunks + tiff_tiles, unit="tile", desc="pyramid", disable=not progress, dynamic_ncols=True)
        for k in range(1, len(levels)):
            store.build_level(k, tiff_tile, bar)
        image_out = mask_out_p = None
        if out is not None:
            image_out = Path(out)
            mask_out_p, json_out = mask_paths(out)
            comp = _tiff_compression(compression, jpeg_quality)
            lossless = _tiff_compression("zlib" if compression == "jpeg" else compression, jpeg_quality)
            _write_tiff(image_out, store, kind="image", tile=tiff_tile, compression=comp, mpp=mpp,
                        name="image", bar=bar)
            _write_tiff(mask_out_p, store, kind="mask", tile=tiff_tile, compression=lossless, mpp=mpp,
                        name="mask", bar=bar)
            json_out.write_text(json.dumps({**meta, "image": image_out.name, "mask": mask_out_p.name,
                                            "levels": [list(s) for s in levels]}, indent=2) + "\n")
        bar.close()
    finally:
        if zarr_path is None:
            shutil.rmtree(zpath, ignore_errors=True)
    return CanvasReport(image_out, mask_out_p, Path(zarr_path) if zarr_path is not None else None, canvas.size,
                        levels, len(tiles), canvas.margin, time.perf_counter() - t0, render_s)


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
    **write_options: Any,
) -> CanvasReport:
    """Recipe -> whole-slide canvas on disk (the ``datagen canvas`` command)."""
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    canvas, recipe = canvas_from_recipe(recipe_path, size=hw, seed=seed, device=device, layout=layout,
                                        layout_scale=layout_scale, margin=margin, generator=generator,
                                        trust_pickles=trust_pickles)
    classes = [{"id": c.id, "name": c.name, "color": c.color} for c in recipe.classes]
    attrs = {"recipe": Path(recipe_path).read_text(), "recipe_file": str(recipe_path), "model": recipe.model_spec}
    if canvas.ignore_index is not None and canvas.keep_ids:
        attrs["ignore_index"] = canvas.ignore_index
    return write_canvas(canvas, out=out, zarr_path=zarr_path, tile=tile, classes=classes, attrs=attrs, **write_options)


__all__ = ["Canvas", "CanvasReport", "canvas_from_recipe", "mask_paths", "pyramid_shapes",
           "receptive_radius", "render_canvas", "write_canvas"]
