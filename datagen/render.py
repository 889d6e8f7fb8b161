"""Rendering: layouts painted into the generator's hidden layer, batched, on any device.

For sample ``i`` of a run with seed ``s`` every random draw comes from its own
stream (:mod:`datagen.seeding`): the layout from ``(s, i, "layout")``, the vector
painted into each region from ``(s, i, "vectors")``, the generator's noise and
conditioning vector from ``(s, i, "noise")``. A sample is therefore the same
whichever batch, block, worker or machine renders it (on the same device type).

What is painted and what is written
-----------------------------------
The layout is drawn at output resolution. Each connected region of a painted
class gets one of the class's vectors. The region map is resized to the layer's
size with centred nearest-neighbour sampling (layer cell (i, j) takes the label
at the centre of the ``stride x stride`` output block it covers), and those
cells are replaced by their vectors; cells of ``keep`` classes keep the
generator's own activations. The written mask is, by default, the layout
itself (``mask: layout``); ``mask: cells`` writes the painted cells instead
(each layer cell's class repeated over its ``stride x stride`` block), which is
exactly what was painted but blocky; ``mask: rendered`` follows the boundaries
the generator actually drew (:mod:`datagen.masks`). In every mode pixels of
``keep`` classes, and pixels that claim a class nothing was painted for, are
written with the ignore value (``ignore_index``, default 255).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from .masks import (
    DEFAULT_IGNORE, RenderedMaskModel, feature_layers, fit_rendered_mask, ignore_boundaries, ignore_keep, rendered_masks,
)
from .models.generator import Generator
from .models.hooks import LayerHook
from .paint import KEEP, boundary_alpha, paint, resize_labels
from .seeding import sample_rng, sample_torch_generator

MaskMode = Literal["layout", "cells", "rendered"]
MASK_MODES = ("layout", "cells", "rendered")
CALIBRATION = "mask-calibration"
"""Prefix of the random streams of the renders that fit ``mask: rendered`` (never a dataset sample's)."""


@dataclass(frozen=True)
class PaintClass:
    """One class of a recipe, resolved: its vectors (k, C) and their sampling weights (k,)."""

    id: int
    name: str
    keep: bool = False
    vectors: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not self.keep and (self.vectors is None or len(self.vectors) == 0):
            raise ValueError(f"class {self.name!r} paints but has no vectors")


@dataclass
class PaintPlan:
    """What to paint into one sample's layer: a slot map and the vector of each slot."""

    labels: torch.Tensor  # (h, w) int64: slot index, or KEEP
    vectors: torch.Tensor  # (slots, C)
    alpha: torch.Tensor | None  # (h, w) blend weights, or None for hard painting
    cells: np.ndarray | None = None  # (H, W) uint8: the class painted under each pixel (keep classes by id)
    mask: np.ndarray | None = None  # (H, W) uint8: the mask to write (None: decided after rendering)


def check_paint_options(classes: Sequence[PaintClass], layer: str, channels: int, soft_boundary: float,
                        mask_mode: str) -> None:
    """The checks every painter (renderer, canvas) makes before drawing anything."""
    for c in classes:
        if c.vectors is not None and c.vectors.shape[-1] != channels:
            raise ValueError(f"class {c.name!r}: vectors have {c.vectors.shape[-1]} channels, layer {layer!r} has {channels}")
    if not 0.0 <= soft_boundary <= 1.0:
        raise ValueError(f"soft_boundary must be in [0, 1], got {soft_boundary}")
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {mask_mode!r}")


class Renderer:
    """Turns sample indices into (image, mask) pairs for one recipe and seed."""

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
        precision: Literal["auto", "fp32", "fp16"] = "auto",
        ignore_index: int | None = DEFAULT_IGNORE,
        min_confidence: float = 0.0,
        boundary_ignore: int = 0,
        calibration_samples: int = 16,
    ) -> None:
        self.generator = generator
        self.classes = list(classes)
        self.layout = layout
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.layer = layer or generator.default_layer
        generator.check_size(self.size)
        self.layer_size = generator.layer_size(self.layer, self.size)
        self.stride = (self.size[0] // self.layer_size[0], self.size[1] // self.layer_size[1])
        check_paint_options(self.classes, self.layer, generator.layer(self.layer).channels, soft_boundary, mask_mode)
        self.soft_boundary = soft_boundary
        self.mask_mode = mask_mode
        self.class_ids: Mapping[str, int] = {c.name: c.id for c in self.classes}
        self._by_id = {c.id: c for c in self.classes}
        self.precision = precision
        self.ignore_index = ignore_index
        if ignore_index is not None and ignore_index in self._by_id:
            raise ValueError(f"ignore_index {ignore_index} is also the id of class {self._by_id[ignore_index].name!r}")
        self.keep_ids = [c.id for c in self.classes if c.keep]
        self.min_confidence = float(min_confidence)
        self.boundary_ignore = int(boundary_ignore)
        self.calibration_samples = int(calibration_samples)
        #: the decoder layers ``mask: rendered`` reads (recorded only when it is the mask mode)
        self.decoder_layers = feature_layers(generator, self.layer)
        if mask_mode == "rendered" and not self.decoder_layers:
            raise ValueError(f"mask: rendered needs decoder layers after the paint layer {self.layer!r}; "
                             f"the model has none (use mask: cells)")
        self._mask_model: RenderedMaskModel | None = None
        self._centres: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    # ---- layout -------------------------------------------------------------
    def make_layout(self, index: int, stream: str = "") -> np.ndarray:
        """The (H, W) uint8 class-id map of sample ``index`` (``stream``: a prefix for other streams)."""
        m = self.layout.generate(sample_rng(self.seed, index, stream + "layout"), self.size, self.class_ids)
        return np.ascontiguousarray(m, dtype=np.uint8)

    def plan(self, index: int, layout: np.ndarray, stream: str = "") -> PaintPlan:
        """Assign a vector to every painted region and map regions onto layer cells.

        Regions are connected components at output resolution; only the label at
        each layer cell's centre matters for painting (the centred nearest
        resize), so component ids are read at those centres instead of building
        and resizing a full-resolution region map.
        """
        rng = sample_rng(self.seed, index, stream + "vectors")
        ys, xs = self._cell_centres(layout.shape)
        labels = np.full(self.layer_size, KEEP, dtype=np.int64)
        written = layout.astype(np.uint8, copy=True) if self.mask_mode == "layout" else None
        slot_vectors: list[torch.Tensor] = []
        slots = 0
        present = np.flatnonzero(np.bincount(layout.ravel(), minlength=256)) if layout.dtype == np.uint8 else np.unique(layout)
        for cid in present:
            cls = self._by_id.get(int(cid))
            if cls is None:
                raise ValueError(f"layout produced class id {int(cid)}, which is not in the recipe")
            if cls.keep:
                continue
            comps, n = ndimage.label(layout == cid)
            w = cls.weights.double().numpy() if cls.weights is not None else np.ones(len(cls.vectors))
            choice = rng.choice(len(cls.vectors), size=n, p=w / w.sum())
            at = comps[ys[:, None], xs[None, :]]
            hit = at > 0
            labels[hit] = at[hit] - 1 + slots
            slot_vectors.append(cls.vectors[choice])
            slots += n
            if written is not None and self.ignore_index is not None:
                # a region that holds no cell centre is labelled but never painted
                unpainted = np.setdiff1d(np.arange(1, n + 1), at[hit])
                if unpainted.size:
                    written[np.isin(comps, unpainted)] = self.ignore_index
        labels_t = torch.from_numpy(labels)
        vectors = torch.cat(slot_vectors) if slots else torch.zeros(1, self.generator.layer(self.layer).channels)
        alpha = boundary_alpha(labels_t, self.soft_boundary) if self.soft_boundary > 0 else None
        cells = self.cells_mask(layout)
        if self.mask_mode == "cells":
            written = cells.copy()
        if written is not None:
            ignore_keep(written, self.keep_ids, self.ignore_index)
        return PaintPlan(labels_t, vectors, alpha, cells=cells, mask=written)

    def _cell_centres(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Row and column (output pixels) that each layer cell samples: resize_labels' centred nearest."""
        key = tuple(shape)
        cached = self._centres.get(key)
        if cached is None:
            h, w = key
            ys = resize_labels(torch.arange(h).view(h, 1), (self.layer_size[0], 1))[:, 0].numpy()
            xs = resize_labels(torch.arange(w).view(1, w), (1, self.layer_size[1]))[0].numpy()
            cached = self._centres[key] = (ys, xs)
        return cached

    def cells_mask(self, layout: np.ndarray) -> np.ndarray:
        """The class of each painted layer cell, repeated over its output block."""
        cells = resize_labels(torch.from_numpy(layout.astype(np.int64)), self.layer_size).numpy()
        return np.repeat(np.repeat(cells, self.stride[0], 0), self.stride[1], 1).astype(np.uint8)

    # ---- rendering ----------------------------------------------------------
    def _autocast(self) -> Any:
        dev = self.generator.device
        if dev.type == "cuda" and self.precision in ("auto", "fp16"):
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def inputs(self, indices: Sequence[int], stream: str = "") -> dict[str, torch.Tensor]:
        """The generator's inputs (noise, conditioning) for ``indices``, drawn on the CPU."""
        return self.generator.sample_inputs([sample_torch_generator(self.seed, i, stream + "noise") for i in indices],
                                            self.size)

    def render(self, indices: Sequence[int], layouts: np.ndarray, plans: Sequence[PaintPlan] | None = None,
               inputs: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        """Images (B, H, W, 3) uint8 for the given indices and their layouts.

        ``plans`` (from :meth:`plan`, one per index) and ``inputs`` (from
        :meth:`inputs`) may be prepared ahead, e.g. on the thread that draws the
        layouts, to keep that CPU work off the device's critical path; by default
        they are computed here.
        """
        return self._forward(indices, layouts, plans, inputs, record=False)[0]

    def render_pairs(self, indices: Sequence[int], layouts: np.ndarray, plans: Sequence[PaintPlan] | None = None,
                     inputs: dict[str, torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images (B, H, W, 3), masks (B, H, W)) uint8: the renders and the masks to write for them."""
        if plans is None:
            plans = [self.plan(i, lay) for i, lay in zip(indices, layouts)]
        rendered = self.mask_mode == "rendered"
        if rendered:
            self.mask_model()  # fitted before this batch's forward pass (it renders calibration samples)
        images, feats = self._forward(indices, layouts, plans, inputs, record=rendered)
        if rendered:
            cells = np.stack([p.cells for p in plans])
            masks = rendered_masks(self.mask_model(), feats, cells, band=float(max(self.stride)),
                                   ignore_index=self.ignore_index, keep_ids=self.keep_ids,
                                   min_confidence=self.min_confidence)
        else:
            masks = np.stack([p.mask for p in plans])
        return images, ignore_boundaries(masks, self.boundary_ignore, self.ignore_index)

    def _forward(self, indices: Sequence[int], layouts: np.ndarray, plans: Sequence[PaintPlan] | None,
                 inputs: dict[str, torch.Tensor] | None, *, record: bool, stream: str = "") -> tuple[np.ndarray, list[torch.Tensor]]:
        if plans is None:
            plans = [self.plan(i, lay, stream) for i, lay in zip(indices, layouts)]
        elif len(plans) != len(indices):
            raise ValueError(f"render: {len(plans)} plans for {len(indices)} indices")
        n = len(plans)
        slots = max(p.vectors.shape[0] for p in plans)
        c = plans[0].vectors.shape[1]
        vectors = torch.zeros(n, slots, c)
        for k, p in enumerate(plans):
            vectors[k, : p.vectors.shape[0]] = p.vectors
        labels = torch.stack([p.labels for p in plans])
        alpha = torch.stack([p.alpha if p.alpha is not None else torch.ones(self.layer_size) for p in plans]) if self.soft_boundary > 0 else None
        dev = self.generator.device
        labels, vectors = labels.to(dev), vectors.to(dev)
        alpha = alpha.to(dev) if alpha is not None else None
        if inputs is None:
            inputs = self.inputs(indices, stream)

        def edit(act: torch.Tensor) -> torch.Tensor:
            return paint(act, labels, vectors, alpha)

        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            stack.enter_context(self._autocast())
            stack.enter_context(LayerHook(self.generator.module, self.layer, edit=edit, record=False))
            hooks = [stack.enter_context(LayerHook(self.generator.module, name)) for name in self.decoder_layers] if record else []
            images = self.generator.forward(inputs)
            feats = [h.original.float() for h in hooks]  # type: ignore[union-attr]
        return to_uint8(images), feats

    # ---- mask: rendered ---------------------------------------------------------
    def mask_model(self) -> RenderedMaskModel:
        """The classifier of ``mask: rendered``, fitted on first use from calibration renders.

        Calibration samples 0..n-1 draw their layouts, vectors and noise from streams of
        their own (prefix ``mask-calibration``), so the fit depends only on the recipe and
        the seed: every worker and every resumed run fits the same classifier.
        """
        if self._mask_model is None:
            stream = CALIBRATION + ":"
            idx = list(range(self.calibration_samples))
            layouts = np.stack([self.make_layout(i, stream) for i in idx])
            plans = [self.plan(i, lay, stream) for i, lay in zip(idx, layouts)]
            feats: list[list[torch.Tensor]] = []
            for k in range(0, len(idx), 8):
                _, f = self._forward(idx[k:k + 8], layouts[k:k + 8], plans[k:k + 8], None, record=True, stream=stream)
                f = [t.cpu() for t in f]
                feats.extend([[t[j:j + 1] for t in f] for j in range(f[0].shape[0])])
            cells = np.stack([p.cells for p in plans])
            model = fit_rendered_mask(feats, cells, class_ids=[c.id for c in self.classes], keep_ids=self.keep_ids,
                                      margin=0.75 * max(self.stride), seed=int(sample_rng(self.seed, 0, stream + "fit").integers(2**31)))
            model.layers = list(self.decoder_layers)
            self._mask_model = model
        return self._mask_model

    def __call__(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(images (B, H, W, 3), masks (B, H, W)) uint8 for ``indices``."""
        layouts = np.stack([self.make_layout(i) for i in indices])
        return self.render_pairs(indices, layouts)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 on the CPU."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def render_plain(generator: Generator, indices: Sequence[int], size: tuple[int, int], seed: int) -> np.ndarray:
    """The generator's own output for the same per-sample inputs, without painting (baseline)."""
    inputs = generator.sample_inputs([sample_torch_generator(seed, i, "noise") for i in indices], size)
    with torch.inference_mode():
        return to_uint8(generator.forward(inputs))
