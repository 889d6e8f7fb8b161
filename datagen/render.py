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
generator's own activations. The written mask is, by default, what the
generator drew (``mask: rendered``: :mod:`datagen.masks`); ``mask: layout`` writes the
layout itself; ``mask: cells`` writes the painted cells instead
(each layer cell's class repeated over its ``stride x stride`` block), which is
exactly what was painted but blocky. In every mode pixels of
``keep`` classes, and pixels that claim a class nothing was painted for, are
written with the ignore value (``ignore_index``, default 255).

Grid classes and unit edits
---------------------------
A class with ``grid=g`` (recipe ``paint: grid``) is painted only in the paper's grid blocks
(:func:`datagen.paint.grid_cells`: g x g cells with stride g + 1, anchored at cell (0, 0) of
the layer; a canvas's layer is the whole canvas). Its other cells, the *gaps*, keep the
generator's own activations, or take a vector of the ``between`` class (one per region,
from the stream ``(s, i, "between")``). Unpainted gap cells claim no class: every mask mode
writes them as the ignore value. A class's :class:`UnitOp` edits (GAN Dissection: ablate or
insert units) run after painting, at the paint layer or a later one, inside the layer cells
painted with that class (:func:`unit_edits`); those cells still claim the class.

Shared with canvases
--------------------
:func:`assign_region_slots` (one vector per region) and :func:`painted_forward` (the
forward pass with the layer painted, precision chosen per device) are the two steps
:mod:`datagen.canvas` reuses; :meth:`Renderer.pairs` is the one path from sample indices
to (image, mask) pairs that datasets and previews take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .masks import (
    DEFAULT_IGNORE, RenderedMaskModel, feature_layers, fit_rendered_mask, ignore_boundaries, ignore_keep, rendered_masks,
)
from .models.generator import Generator
from .models.hooks import Edit, LayerHook
from .paint import boundary_alpha, grid_cells, paint, resize_labels
from .plan import (  # the planning half of rendering; re-exported here (see __all__)
    CALIBRATION, MASK_MODES, OWN, MaskMode, PaintClass, PaintPlan, Precision, UnitOp, assign_gap_slots,
    assign_region_slots, check_grid_classes, check_paint_options, check_unit_ops, grid_gaps, mask_keep_ids, unit_edits,
)
from .seeding import sample_rng, sample_torch_generator

if TYPE_CHECKING:  # type only: datagen.assemble builds setups from this module's classes
    from .assemble import PaintSetup


def autocast_for(device: torch.device, precision: Precision) -> AbstractContextManager[Any]:
    """float16 autocast on CUDA (``auto``, ``fp16``), bfloat16 autocast on any device (``bf16``);
    otherwise none: by default a CPU renders in float32, which the golden digests pin."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda" and precision in ("auto", "fp16"):
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def painted_render(generator: Generator, layer: str, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                   vectors: torch.Tensor, alpha: torch.Tensor | None = None, *, edits: Sequence[tuple[str, Edit]] = (),
                   precision: Precision = "auto", record: Sequence[str] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass with ``layer`` painted: the generator's images (N, 3, H, W), on its device, in [-1, 1].

    ``labels`` (N, h, w) slot or KEEP per layer cell, ``vectors`` (N, K, C) and ``alpha``
    (N, h, w) or None are :func:`datagen.paint.paint`'s arguments (moved to the generator's
    device here). ``edits``: more (layer, edit) pairs (e.g. :func:`unit_edits`), each applied by a
    :class:`LayerHook` after the painting (at the paint layer or any other). The recorded layers
    (float32, on the device, after every edit) are what ``mask: rendered`` reads.
    """
    dev = generator.device
    labels, vectors = labels.to(dev), vectors.to(dev)
    alpha = alpha.to(dev) if alpha is not None else None

    def edit(act: torch.Tensor) -> torch.Tensor:
        return paint(act, labels, vectors, alpha)

    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast_for(dev, precision))
        stack.enter_context(LayerHook(generator.module, layer, edit=edit, record=False))
        for name, fn in edits:  # registered after the paint hook: at the paint layer they see the painted layer
            stack.enter_context(LayerHook(generator.module, name, edit=fn, record=False))
        hooks = [stack.enter_context(LayerHook(generator.module, name)) for name in record]
        images = generator.forward(inputs)
        feats = [h.original.float() for h in hooks]  # type: ignore[union-attr]
    return images, feats


def painted_forward(generator: Generator, layer: str, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                    vectors: torch.Tensor, alpha: torch.Tensor | None = None, *, edits: Sequence[tuple[str, Edit]] = (),
                    precision: Precision = "auto", record: Sequence[str] = ()) -> tuple[np.ndarray, list[torch.Tensor]]:
    """:func:`painted_render` as images (N, H, W, 3) uint8 and the outputs of ``record``.

    Datasets and canvases render through this one function.
    """
    images, feats = painted_render(generator, layer, inputs, labels, vectors, alpha, edits=edits,
                                   precision=precision, record=record)
    return to_uint8_hwc(images), feats


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
        precision: Precision = "auto",
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
        self.channels = generator.layer(self.layer).channels
        check_paint_options(self.classes, generator, self.layer, soft_boundary, mask_mode, ignore_index)
        self.soft_boundary = soft_boundary
        self.mask_mode = mask_mode
        self.class_ids: Mapping[str, int] = {c.name: c.id for c in self.classes}
        self._by_id = {c.id: c for c in self.classes}
        self.precision = precision
        self.ignore_index = ignore_index
        self.keep_ids = [c.id for c in self.classes if c.keep]
        self.mask_keep_ids = mask_keep_ids(self.classes, ignore_index)
        self.min_confidence = float(min_confidence)
        self.boundary_ignore = int(boundary_ignore)
        self.calibration_samples = int(calibration_samples)
        #: the decoder layers ``mask: rendered`` reads (recorded only when it is the mask mode)
        self.decoder_layers = feature_layers(generator, self.layer)
        self._mask_model: RenderedMaskModel | None = None
        self._centres: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._grid = any(c.grid for c in self.classes)
        self._units = any(c.units for c in self.classes)

    @classmethod
    def from_setup(cls, setup: PaintSetup) -> Renderer:
        """The renderer of a checked recipe setup (:func:`datagen.assemble.assemble`)."""
        return cls(setup.generator, setup.classes, setup.layout, size=setup.size, seed=setup.seed, layer=setup.layer,
                   soft_boundary=setup.soft_boundary, mask_mode=setup.mask_mode, precision=setup.precision,
                   ignore_index=setup.ignore_index, min_confidence=setup.min_confidence,
                   boundary_ignore=setup.boundary_ignore)

    # ---- layout -------------------------------------------------------------
    def make_layout(self, index: int, stream: str = "") -> np.ndarray:
        """The (H, W) uint8 class-id map of sample ``index`` (``stream``: a prefix for other streams)."""
        m = self.layout.generate(sample_rng(self.seed, index, stream + "layout"), self.size, self.class_ids)
        return np.ascontiguousarray(m, dtype=np.uint8)

    def plan(self, index: int, layout: np.ndarray, stream: str = "") -> PaintPlan:
        """Assign a vector to every painted region and map regions onto layer cells.

        Regions are connected components at output resolution (:func:`assign_region_slots`);
        only the label at each layer cell's centre matters for painting (the centred
        nearest resize), so slots are read at those centres. Gap cells of grid classes keep
        the generator's own activations or take their region's ``between`` vector
        (:func:`assign_gap_slots`, stream ``between``).
        """
        region, vectors = assign_region_slots(layout, self._by_id, sample_rng(self.seed, index, stream + "vectors"),
                                              self.channels)
        ys, xs = self._cell_centres(layout.shape)
        labels = region[ys[:, None], xs[None, :]].astype(np.int64)
        written = None
        unpainted = None
        if self.mask_mode == "layout":
            written = layout.astype(np.uint8, copy=True)
            if self.ignore_index is not None:
                # a region that holds no cell centre is labelled but never painted
                painted = np.zeros(len(vectors), dtype=bool)
                painted[labels[labels >= 0]] = True
                if not painted.all():
                    unpainted = (region >= 0) & ~painted[np.maximum(region, 0)]
                    written[unpainted] = self.ignore_index
        painted_cls = None
        if self._grid or self._units:
            cell_classes = layout[ys[:, None], xs[None, :]]
            lh, lw = self.layer_size
            gaps, painted_cls = grid_gaps(cell_classes, np.arange(lh), np.arange(lw), self.layer_size, self.classes)
            if gaps.any():
                gap_slot, gap_vectors = assign_gap_slots(layout, region, self._by_id,
                                                         sample_rng(self.seed, index, stream + "between"),
                                                         len(vectors), self.channels)
                labels[gaps] = gap_slot[labels[gaps]]
                vectors = torch.cat([vectors, gap_vectors])
                if written is not None:
                    self._write_gaps(written, layout, unpainted)
        if len(vectors) == 0:  # nothing painted: one dummy slot keeps the batch's vector tensor non-empty
            vectors = torch.zeros(1, self.channels)
        labels_t = torch.from_numpy(labels)
        alpha = boundary_alpha(labels_t, self.soft_boundary) if self.soft_boundary > 0 else None
        if painted_cls is None:
            cells = self.cells_mask(layout)
        else:
            shown = np.where(painted_cls == OWN, self.ignore_index if self.ignore_index is not None else 0, painted_cls)
            cells = np.repeat(np.repeat(shown.astype(np.uint8), self.stride[0], 0), self.stride[1], 1)
        if self.mask_mode == "cells":
            written = cells.copy()
        if written is not None:
            ignore_keep(written, self.keep_ids, self.ignore_index)
        return PaintPlan(labels_t, vectors, alpha, cells=cells, mask=written,
                         painted=torch.from_numpy(painted_cls) if self._units and painted_cls is not None else None)

    def _write_gaps(self, written: np.ndarray, layout: np.ndarray, unpainted: np.ndarray | None) -> None:
        """``mask: layout``: pixels of a grid class whose layer cell lies outside its blocks take the
        ``between`` class, or the ignore value where the generator's own activations show."""
        lh, lw = self.layer_size
        for c in self.classes:
            if not c.grid:
                continue
            blocks = grid_cells(np.arange(lh), np.arange(lw), c.grid, lh, lw).numpy()
            blocks = np.repeat(np.repeat(blocks, self.stride[0], 0), self.stride[1], 1)
            gap = (layout == c.id) & ~blocks
            if unpainted is not None:
                gap &= ~unpainted
            written[gap] = c.between if c.between is not None else self.ignore_index  # type: ignore[assignment]

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
    def inputs(self, indices: Sequence[int], stream: str = "") -> dict[str, torch.Tensor]:
        """The generator's inputs (noise, conditioning) for ``indices``, drawn on the CPU."""
        return self.generator.sample_inputs([sample_torch_generator(self.seed, i, stream + "noise") for i in indices],
                                            self.size)

    def pairs(self, indices: Sequence[int], layouts: np.ndarray | None = None, plans: Sequence[PaintPlan] | None = None,
              *, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images (B, H, W, 3), masks (B, H, W)) uint8 for ``indices``: the one path from indices to pairs.

        ``layouts`` and ``plans`` (one per index) may be prepared ahead (e.g. on a helper
        thread); by default they are drawn here. Renders ``batch_size`` samples per forward
        pass (default: all at once); the batch size is part of a dataset's fingerprint (CPU
        kernels group sums by batch shape).
        """
        if len(indices) == 0:
            raise ValueError("pairs: no sample indices given")
        if layouts is None:
            layouts = np.stack([self.make_layout(i) for i in indices])
        step = batch_size or len(indices)
        done = [self.render_pairs(indices[k:k + step], layouts[k:k + step],
                                  plans[k:k + step] if plans is not None else None)
                for k in range(0, len(indices), step)]
        if len(done) == 1:
            return done[0]
        return np.concatenate([d[0] for d in done]), np.concatenate([d[1] for d in done])

    def render(self, indices: Sequence[int], layouts: np.ndarray, plans: Sequence[PaintPlan] | None = None,
               inputs: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        """Images (B, H, W, 3) uint8 of one batch, without masks.

        ``plans`` (from :meth:`plan`, one per index) and ``inputs`` (from
        :meth:`inputs`) may be prepared ahead, e.g. on the thread that draws the
        layouts, to keep that CPU work off the device's critical path; by default
        they are computed here.
        """
        return self._forward(indices, layouts, plans, inputs, record=False)[0]

    def render_pairs(self, indices: Sequence[int], layouts: np.ndarray, plans: Sequence[PaintPlan] | None = None,
                     inputs: dict[str, torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images (B, H, W, 3), masks (B, H, W)) uint8 of one batch: the renders and the masks to write for them."""
        if plans is None:
            plans = [self.plan(i, lay) for i, lay in zip(indices, layouts)]
        rendered = self.mask_mode == "rendered"
        if rendered:
            self.mask_model()  # fitted before this batch's forward pass (it renders calibration samples)
        images, feats = self._forward(indices, layouts, plans, inputs, record=rendered)
        if rendered:
            cells = np.stack([p.cells for p in plans])
            masks = rendered_masks(self.mask_model(), feats, cells, band=float(max(self.stride)),
                                   ignore_index=self.ignore_index, keep_ids=self.mask_keep_ids,
                                   min_confidence=self.min_confidence)
            if self._grid and self.ignore_index is not None:  # gaps left to the generator claim no class
                masks[cells == self.ignore_index] = self.ignore_index
        else:
            masks = np.stack([p.mask for p in plans])
        return images, ignore_boundaries(masks, self.boundary_ignore, self.ignore_index)

    def _forward(self, indices: Sequence[int], layouts: np.ndarray, plans: Sequence[PaintPlan] | None,
                 inputs: dict[str, torch.Tensor] | None, *, record: bool, stream: str = "") -> tuple[np.ndarray, list[torch.Tensor]]:
        images, feats = self.forward(indices, layouts, plans, inputs, stream=stream,
                                     record=self.decoder_layers if record else ())
        return to_uint8_hwc(images), feats

    def forward(self, indices: Sequence[int], layouts: np.ndarray, plans: Sequence[PaintPlan] | None = None,
                inputs: dict[str, torch.Tensor] | None = None, *, stream: str = "", record: Sequence[str] = (),
                edits: Sequence[tuple[str, Edit]] = (), precision: Precision | None = None,
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One batch painted and rendered (:func:`painted_render`): images (N, 3, H, W) in [-1, 1] on the
        device and the activations of ``record`` (after every edit).

        ``plans``/``inputs`` default to this renderer's for ``stream``; ``edits``: more (layer, edit)
        pairs, applied after the painting and the classes' own unit edits (an experiment's
        intervention, :mod:`datagen.vectors.units`); ``precision`` overrides the renderer's.
        """
        if plans is None:
            plans = [self.plan(i, lay, stream) for i, lay in zip(indices, layouts)]
        elif len(plans) != len(indices):
            raise ValueError(f"render: {len(plans)} plans for {len(indices)} indices")
        n = len(plans)
        slots = max(p.vectors.shape[0] for p in plans)
        vectors = torch.zeros(n, slots, self.channels)
        for k, p in enumerate(plans):
            vectors[k, : p.vectors.shape[0]] = p.vectors
        labels = torch.stack([p.labels for p in plans])
        alpha = torch.stack([p.alpha if p.alpha is not None else torch.ones(self.layer_size) for p in plans]) if self.soft_boundary > 0 else None
        if inputs is None:
            inputs = self.inputs(indices, stream)
        own = unit_edits(self.classes, torch.stack([p.painted for p in plans]), self.layer) if self._units else []  # type: ignore[misc]
        return painted_render(self.generator, self.layer, inputs, labels, vectors, alpha, edits=[*own, *edits],
                              precision=precision or self.precision, record=record)

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
            model = fit_rendered_mask(feats, cells, class_ids=[c.id for c in self.classes], keep_ids=self.mask_keep_ids,
                                      margin=0.75 * max(self.stride), seed=int(sample_rng(self.seed, 0, stream + "fit").integers(2**31)))
            model.layers = list(self.decoder_layers)
            self._mask_model = model
        return self._mask_model

    def __call__(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(images (B, H, W, 3), masks (B, H, W)) uint8 for ``indices``, in one batch."""
        return self.pairs(indices)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float in [-1, 1] -> uint8 [0, 255], same layout and device: the one quantisation
    of generator output (datasets, canvases, vector sheets)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] -> (N, H, W, 3) uint8 numpy on the CPU: the layout writers take."""
    return to_uint8(images).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def render_plain(generator: Generator, indices: Sequence[int], size: tuple[int, int], seed: int) -> np.ndarray:
    """The generator's own output for the same per-sample inputs, without painting (baseline)."""
    inputs = generator.sample_inputs([sample_torch_generator(seed, i, "noise") for i in indices], size)
    with torch.inference_mode():
        return to_uint8_hwc(generator.forward(inputs))


__all__ = [
    "CALIBRATION", "MASK_MODES", "OWN", "MaskMode", "PaintClass", "PaintPlan", "Precision", "Renderer", "UnitOp",
    "assign_gap_slots", "assign_region_slots", "autocast_for", "check_grid_classes", "check_paint_options",
    "check_unit_ops", "grid_gaps", "mask_keep_ids", "painted_forward", "painted_render", "render_plain", "to_uint8",
    "to_uint8_hwc", "unit_edits",
]
