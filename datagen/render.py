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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from scipy import ndimage

from .masks import (
    DEFAULT_IGNORE, RenderedMaskModel, feature_layers, fit_rendered_mask, ignore_boundaries, ignore_keep, rendered_masks,
)
from .models.generator import Generator
from .models.hooks import Edit, LayerHook
from .paint import UNIT_MODES, KEEP, UnitMode, boundary_alpha, edit_units, grid_cells, paint, resize_labels, resize_region
from .seeding import sample_rng, sample_torch_generator

if TYPE_CHECKING:  # type only: datagen.assemble builds setups from this module's classes
    from .assemble import PaintSetup

MaskMode = Literal["layout", "cells", "rendered"]
MASK_MODES = ("layout", "cells", "rendered")
Precision = Literal["auto", "fp32", "fp16"]
CALIBRATION = "mask-calibration"
"""Prefix of the random streams of the renders that fit ``mask: rendered`` (never a dataset sample's)."""


OWN = -1
"""Painted-class value of a grid class's gap cell that keeps the generator's own activations."""


@dataclass(frozen=True)
class UnitOp:
    """A GAN Dissection edit of a class's cells, after painting: ``units`` (channel indices) of
    ``layer`` (None: the paint layer) set to 0 (``ablate``, or ``value``) or to ``value`` (``insert``:
    a number or one per unit)."""

    units: tuple[int, ...]
    mode: UnitMode = "ablate"
    value: float | tuple[float, ...] | None = None
    layer: str | None = None


@dataclass(frozen=True)
class PaintClass:
    """One class of a recipe, resolved: its vectors (k, C) and their sampling weights (k,).

    ``grid``: 0 paints whole regions; g >= 1 paints g x g blocks of layer cells (the paper's
    grid) and leaves the gaps to the generator, or to the class with id ``between``.
    ``units``: edits applied inside the cells painted with this class (see :class:`UnitOp`).
    """

    id: int
    name: str
    keep: bool = False
    vectors: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    grid: int = 0
    between: int | None = None
    units: tuple[UnitOp, ...] = ()

    def __post_init__(self) -> None:
        if not self.keep and (self.vectors is None or len(self.vectors) == 0):
            raise ValueError(f"class {self.name!r} paints but has no vectors")


@dataclass
class PaintPlan:
    """What to paint into one sample's layer: a slot map and the vector of each slot."""

    labels: torch.Tensor  # (h, w) int64: slot index, or KEEP
    vectors: torch.Tensor  # (slots, C)
    alpha: torch.Tensor | None  # (h, w) blend weights, or None for hard painting
    cells: np.ndarray | None = None  # (H, W) uint8: the class painted under each pixel (keep classes by id,
    #                                  unpainted grid gaps: the ignore value)
    mask: np.ndarray | None = None  # (H, W) uint8: the mask to write (None: decided after rendering)
    painted: torch.Tensor | None = None  # (h, w) int64 class painted in each layer cell (OWN: a grid gap left
    #                                      to the generator); set when a class has unit edits


def check_paint_options(classes: Sequence[PaintClass], generator: Generator, layer: str, soft_boundary: float,
                        mask_mode: str, ignore_index: int | None = None) -> None:
    """The checks every painter (renderer, canvas) makes before drawing anything (ValueError)."""
    channels = generator.layer(layer).channels
    for c in classes:
        if c.vectors is not None and c.vectors.shape[-1] != channels:
            raise ValueError(f"class {c.name!r}: vectors have {c.vectors.shape[-1]} channels, layer {layer!r} has {channels}")
    if not 0.0 <= soft_boundary <= 1.0:
        raise ValueError(f"soft_boundary must be in [0, 1], got {soft_boundary}")
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {mask_mode!r}")
    if ignore_index is not None:
        for c in classes:
            if c.id == ignore_index:
                raise ValueError(f"ignore_index {ignore_index} is also the id of class {c.name!r}")
    if mask_mode == "rendered" and not feature_layers(generator, layer):
        raise ValueError(f"mask: rendered needs decoder layers after the paint layer {layer!r}; "
                         f"the model has none (use mask: cells)")
    check_grid_classes(classes, ignore_index)
    for c in classes:
        check_unit_ops(c, generator, layer)


def check_grid_classes(classes: Sequence[PaintClass], ignore_index: int | None) -> None:
    """Grid classes (ValueError): a painted class, a ``between`` class that paints whole regions, and a
    value for the unpainted gaps (the ignore value) when no ``between`` class fills them."""
    by_id = {c.id: c for c in classes}
    for c in classes:
        if c.grid < 0 or (c.grid and c.keep):
            raise ValueError(f"class {c.name!r}: grid needs a painted class and a size >= 1, got {c.grid}"
                             f"{' on a keep class' if c.keep else ''}")
        if c.between is None:
            if c.grid and ignore_index is None:
                raise ValueError(f"class {c.name!r} is painted in a grid, and its gaps show the generator's own "
                                 "activations, which no class names: set an ignore value or a between class")
            continue
        b = by_id.get(c.between)
        if not c.grid:
            raise ValueError(f"class {c.name!r}: between applies to grid classes only")
        if b is None or b is c or b.keep or b.grid:
            what = ("no class" if b is None else "the class itself" if b is c else
                    f"keep class {b.name!r} (gaps keep the generator's own activations anyway)" if b.keep
                    else f"grid class {b.name!r}")
            raise ValueError(f"class {c.name!r}: between must be another class painted over whole regions, "
                             f"got {what}")


def check_unit_ops(cls: PaintClass, generator: Generator, paint_layer: str) -> None:
    """A class's unit edits (ValueError): a layer at or after the paint layer, units in range, a mode, values."""
    names = [i.name for i in generator.layers()]
    for k, op in enumerate(cls.units):
        where = f"class {cls.name!r}: units edit {k}"
        name = op.layer or paint_layer
        if name not in names:
            raise ValueError(f"{where}: the model has no layer {name!r}; its layers are: {', '.join(names)}")
        if paint_layer in names and names.index(name) < names.index(paint_layer):
            raise ValueError(f"{where}: layer {name!r} comes before the paint layer {paint_layer!r}, where "
                             "painting would overwrite the edit; edit the paint layer or a later one")
        channels = generator.layer(name).channels
        bad = [u for u in op.units if not 0 <= int(u) < channels]
        if bad or not op.units:
            raise ValueError(f"{where}: layer {name!r} has {channels} units (0..{channels - 1}), got {list(op.units)}")
        if op.mode not in UNIT_MODES:
            raise ValueError(f"{where}: mode must be one of {', '.join(UNIT_MODES)}, got {op.mode!r}")
        if op.mode == "insert" and op.value is None:
            raise ValueError(f"{where}: insert needs a value (a number, or one per unit)")
        if isinstance(op.value, tuple) and len(op.value) != len(op.units):
            raise ValueError(f"{where}: {len(op.value)} values for {len(op.units)} units")


def assign_region_slots(class_map: np.ndarray, classes: Mapping[int, PaintClass], rng: np.random.Generator,
                        channels: int) -> tuple[np.ndarray, torch.Tensor]:
    """One vector per region: (slot map, vectors (slots, C) float32) of a class-id map.

    Regions are the connected components of each painted class (classes in id order,
    components in ``ndimage.label`` order); each draws one of its class's vectors by the
    class's weights from ``rng``. The slot map (same shape, int32) holds each pixel's
    region's row of ``vectors``, or KEEP on keep classes. Datasets (per sample) and
    canvases (once per canvas) assign slots with this one function.
    """
    present = (np.flatnonzero(np.bincount(class_map.ravel(), minlength=256)) if class_map.dtype == np.uint8
               else np.unique(class_map))
    region = np.full(class_map.shape, KEEP, dtype=np.int32)
    vectors: list[torch.Tensor] = []
    slots = 0
    for cid in present:
        cls = classes.get(int(cid))
        if cls is None:
            raise ValueError(f"layout produced class id {int(cid)}, which is not in the recipe")
        if cls.keep:
            continue
        comps, n = ndimage.label(class_map == cid)
        w = cls.weights.double().numpy() if cls.weights is not None else np.ones(len(cls.vectors))
        choice = rng.choice(len(cls.vectors), size=n, p=w / w.sum())
        np.add(comps, slots - 1, out=region, where=comps > 0)  # component k -> slot slots + k - 1
        vectors.append(cls.vectors[choice].float())
        slots += n
    return region, torch.cat(vectors) if slots else torch.zeros(0, channels)


def assign_gap_slots(class_map: np.ndarray, region: np.ndarray, classes: Mapping[int, PaintClass],
                     rng: np.random.Generator, slots: int, channels: int) -> tuple[np.ndarray, torch.Tensor]:
    """The gaps' vectors of grid regions with a ``between`` class: (gap slot of every slot (slots,),
    KEEP where the gaps keep the generator's own activations; vectors (m, C) of the new slots,
    numbered from ``slots``). One vector of the between class per grid region, drawn from ``rng``
    (classes in id order, regions in slot order), as :func:`assign_region_slots` draws its own."""
    gap_slot = np.full(slots, KEEP, dtype=np.int64)
    vectors: list[torch.Tensor] = []
    n = slots
    for cid in sorted(classes):
        cls = classes[cid]
        if not cls.grid or cls.between is None:
            continue
        own = np.unique(region[class_map == cid])
        own = own[own >= 0]
        if not len(own):
            continue
        b = classes[cls.between]
        w = b.weights.double().numpy() if b.weights is not None else np.ones(len(b.vectors))
        choice = rng.choice(len(b.vectors), size=len(own), p=w / w.sum())
        gap_slot[own] = n + np.arange(len(own))
        vectors.append(b.vectors[choice].float())
        n += len(own)
    return gap_slot, torch.cat(vectors) if vectors else torch.zeros(0, channels)


def grid_gaps(cell_classes: np.ndarray, rows: np.ndarray, cols: np.ndarray, layer_size: tuple[int, int],
              classes: Sequence[PaintClass]) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, painted) of a window of layer cells: ``cell_classes`` (h, w) the class of each cell,
    ``rows``/``cols`` the cells' indices in the whole layer (``layer_size``), where the grid is anchored.

    ``gaps`` (h, w) bool: cells of grid classes outside their blocks. ``painted`` (h, w) int64: the
    class painted in each cell: its own, the ``between`` class in gaps, or OWN (-1) in gaps left
    to the generator."""
    gaps = np.zeros(cell_classes.shape, dtype=bool)
    painted = cell_classes.astype(np.int64, copy=True)
    for c in classes:
        if not c.grid:
            continue
        gap = (cell_classes == c.id) & ~grid_cells(rows, cols, c.grid, *layer_size).numpy()
        gaps |= gap
        painted[gap] = OWN if c.between is None else c.between
    return gaps, painted


def mask_keep_ids(classes: Sequence[PaintClass], ignore_index: int | None) -> list[int]:
    """The ids ``mask: rendered`` treats as the generator's own activations: keep classes and, when
    grid gaps are left to the generator, the ignore value that marks those gaps in the cell map (so
    the classifier learns them too, and can tell block pixels that do not show their class)."""
    own = [ignore_index] if ignore_index is not None and any(c.grid and c.between is None for c in classes) else []
    return [c.id for c in classes if c.keep] + own


def unit_edits(classes: Sequence[PaintClass], painted: torch.Tensor, paint_layer: str) -> list[tuple[str, Edit]]:
    """The (layer, edit) pairs of the classes' :class:`UnitOp` for one batch, for :func:`painted_forward`.

    ``painted`` (N, h, w): the class painted in each paint-layer cell (``PaintPlan.painted``); a
    class's edit acts where it was painted, resized to the edited layer by centred nearest
    neighbour (as painting resizes). Edits of one layer run in class order, after painting."""
    groups: dict[str, list[tuple[torch.Tensor, UnitOp]]] = {}
    for c in classes:
        if c.units:
            region = painted == c.id
            for op in c.units:
                groups.setdefault(op.layer or paint_layer, []).append((region, op))

    def make(ops: list[tuple[torch.Tensor, UnitOp]]) -> Edit:
        cache: dict[tuple[int, tuple[int, ...], torch.device], torch.Tensor] = {}

        def edit(act: torch.Tensor) -> torch.Tensor:
            for k, (region, op) in enumerate(ops):
                key = (k, tuple(act.shape[-2:]), act.device)
                if key not in cache:
                    cache[key] = resize_region(region, tuple(act.shape[-2:])).to(act.device)  # type: ignore[arg-type]
                act = edit_units(act, cache[key], op.units, op.mode, op.value)
            return act

        return edit

    return [(layer, make(ops)) for layer, ops in groups.items()]


def autocast_for(device: torch.device, precision: Precision) -> AbstractContextManager[Any]:
    """float16 autocast on CUDA (unless ``precision`` is fp32); the CPU always renders in float32."""
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
