"""Paint planning: which vector goes into which layer cell, decided before any forward pass.

The pieces a renderer and a canvas both need before they run the generator: the classes to
paint (:class:`PaintClass`, with their vectors, grid mode and unit edits), the checks of
paint options against a model, one vector per connected region (:func:`assign_region_slots`,
and :func:`assign_gap_slots` for a grid class's ``between`` class), the grid gaps, and the
unit edits to apply after painting (:func:`unit_edits`). :mod:`datagen.render` runs the
painted forward pass with them; nothing here touches a generator's weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from .masks import feature_layers
from .models.generator import Generator
from .models.hooks import Edit
from .paint import UNIT_MODES, KEEP, UnitMode, edit_units, grid_cells, resize_region

MaskMode = Literal["layout", "cells", "rendered"]
MASK_MODES = ("layout", "cells", "rendered")
Precision = Literal["auto", "fp32", "fp16", "bf16"]
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


def unit_edits_record(classes: Sequence[PaintClass]) -> list[dict[str, Any]]:
    """The unit edits of ``classes`` as plain data for a dataset's info.json: which units of which
    layer each class edits, *after* ``top: K`` was resolved (the ranking depends on the model and
    the device, so the units it picked are recorded and fingerprinted, not just ``top``)."""
    out = []
    for c in classes:
        for op in c.units:
            value = list(op.value) if isinstance(op.value, tuple) else op.value
            out.append({"class": c.name, "layer": op.layer, "mode": op.mode, "units": [int(u) for u in op.units],
                        "value": value})
    return out


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
