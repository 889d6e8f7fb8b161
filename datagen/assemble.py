"""Recipe + model + vector library -> one checked paint setup, shared by datasets, previews and canvases.

Every painter needs the same things from a recipe: the classes resolved to vectors, the
parsed layout, the paint layer and its size, and the paint and mask options. They are
resolved and checked together here, once, so a mismatch (a layer the model lacks, vectors
of another model or layer, a size the model cannot render, a layout that names unknown
classes, a mask mode the model cannot support) is a :class:`~datagen.errors.ConfigError`
naming the recipe file and field before anything is rendered or written.

Unit edits given as ``top: K`` are resolved here to unit indices: the recipe's classes (without
unit edits) are painted into ``rank_renders`` layouts of their own streams (seed 0, prefix
``units:``, whatever the run's seed, so every run, shard and worker of a recipe edits the same
units on the same device) and the layer's units are ranked by IoU with each class
(:func:`datagen.vectors.units.rank_units`). That costs ``rank_renders`` forward passes at the
recipe's size once per process and (recipe, generator); the result is cached for the
generator's lifetime.
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, UsageError
from .options import PRECISIONS
from .render import MaskMode, PaintClass, Precision, Renderer, UnitOp, check_paint_options

if TYPE_CHECKING:  # type only: keeps this module free of the recipe's imports
    from .models.generator import Generator
    from .recipe import Recipe


@dataclass(frozen=True)
class PaintSetup:
    """What a recipe paints with one model and seed: everything a renderer or canvas needs, checked."""

    generator: Generator
    classes: tuple[PaintClass, ...]
    layout: Any  #: the parsed layout (datagen.layouts), drawn per sample or once per canvas
    size: tuple[int, int]  #: the recipe's sample size (a canvas has its own)
    seed: int
    layer: str
    layer_size: tuple[int, int]  #: the paint layer's size at ``size``
    channels: int
    soft_boundary: float
    mask_mode: MaskMode
    ignore_index: int | None
    min_confidence: float
    boundary_ignore: int
    precision: Precision = "auto"


def resolve_classes(recipe: Recipe, library: Any) -> tuple[PaintClass, ...]:
    """The recipe's classes with their vectors and sampling weights from ``library``, grid painting
    and explicit unit edits (``top: K`` edits are left to :func:`resolve_unit_tops`)."""
    from .recipe import resolve_class_vectors

    vectors = resolve_class_vectors(recipe, library) if library is not None else {}
    ids = {c.name: c.id for c in recipe.classes}
    classes = []
    for c in recipe.classes:
        extra: dict[str, Any] = {"grid": c.grid_size, "between": ids[c.between] if c.between is not None else None,
                                 "units": explicit_unit_ops(c.units)}
        if c.keep:
            classes.append(PaintClass(c.id, c.name, keep=True, **extra))
        else:
            v, w = vectors[c.name]
            classes.append(PaintClass(c.id, c.name, vectors=v, weights=w, **extra))
    return tuple(classes)


def explicit_unit_ops(spec: Any) -> tuple[UnitOp, ...]:
    """A class's ``units:`` mapping as :class:`UnitOp` edits (ablate first, then insert); none for ``top:``."""
    if spec is None or spec.top is not None:
        return ()
    ops = []
    if spec.ablate:
        ops.append(UnitOp(tuple(spec.ablate), "ablate", None, spec.layer))
    if spec.insert is not None:
        v = spec.insert.value
        ops.append(UnitOp(tuple(spec.insert.units), "insert", tuple(v) if isinstance(v, list) else float(v), spec.layer))
    return tuple(ops)


_RANKINGS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
"""Per generator: unit rankings of recipes, keyed by everything the ranking renders depend on."""


def resolve_unit_tops(recipe: Recipe, generator: Generator, classes: tuple[PaintClass, ...],
                      layout: Any, layer: str) -> tuple[PaintClass, ...]:
    """``classes`` with every ``units: {top: K, ...}`` resolved to the class's top-K units (see module docstring)."""
    specs = {c.id: c.units for c in recipe.classes if c.units is not None and c.units.top is not None}
    if not specs:
        return classes
    from .vectors.units import rank_units

    plain = tuple(dataclasses.replace(c, units=()) for c in classes)  # ranked on painting alone
    size = (int(recipe.size[0]), int(recipe.size[1]))
    renderer = Renderer(generator, plain, layout, size=size, seed=0, layer=layer,
                        soft_boundary=float(recipe.paint.soft_boundary), mask_mode="cells",
                        ignore_index=recipe.ignore_index)
    cache = _RANKINGS.setdefault(generator, {})
    base = recipe.model_dump(mode="json", exclude={"augment", "trust"})
    for cl in base["classes"]:
        cl.pop("units", None)
    out = []
    for c in classes:
        spec = specs.get(c.id)
        if spec is None:
            out.append(c)
            continue
        target = spec.layer or layer
        key = json.dumps([base, str(recipe.library_path), target, spec.rank_renders, str(generator.device)],
                         sort_keys=True)
        ranking = cache.get(key)
        if ranking is None:
            ranking = cache[key] = rank_units(renderer, target, num=spec.rank_renders, quantile=0.99, progress=False)
        units = ranking.top(c.name, spec.top)
        mode = spec.ranked_mode
        value = None
        if mode == "insert":
            value = float(spec.value) if spec.value is not None else tuple(float(t) for t in ranking.thresholds[units])
        out.append(dataclasses.replace(c, units=(UnitOp(tuple(int(u) for u in units), mode, value, spec.layer),)))
    return tuple(out)


def assemble(recipe: Recipe, generator: Generator, seed: int, precision: Precision = "auto") -> PaintSetup:
    """Resolve and check ``recipe`` against ``generator`` and its vector library for ``seed``;
    ``precision``: the forward passes' arithmetic (:data:`datagen.options.PRECISIONS`)."""
    if seed < 0:
        raise UsageError(f"must be non-negative, got {seed}", param="seed")
    if precision not in PRECISIONS:
        raise UsageError(f"must be one of {', '.join(PRECISIONS)}, got {precision!r}", param="precision")
    if recipe.layout is None:
        raise ConfigError("required field is missing: a layout mapping ({kind: voronoi, ...}) or a preset name "
                          "(see layouts/)", file=recipe.file, field="layout")
    library = recipe.load_library()
    recipe.validate_against(generator, library)  # layer, size, library model/layer/channels, vector ids
    classes = resolve_classes(recipe, library)
    layer = recipe.layer_name or generator.default_layer
    paint = recipe.paint
    try:
        check_paint_options(classes, generator, layer, paint.soft_boundary, paint.mask, recipe.ignore_index)
    except ValueError as e:
        raise ConfigError(str(e), file=recipe.file, field="paint") from None
    classes = resolve_unit_tops(recipe, generator, classes, recipe.parsed_layout(), layer)
    size = (int(recipe.size[0]), int(recipe.size[1]))
    return PaintSetup(
        generator=generator, classes=classes, layout=recipe.parsed_layout(), size=size, seed=int(seed),
        layer=layer, layer_size=generator.layer_size(layer, size), channels=generator.layer(layer).channels,
        soft_boundary=float(paint.soft_boundary), mask_mode=paint.mask, ignore_index=recipe.ignore_index,
        min_confidence=float(paint.min_confidence), boundary_ignore=int(paint.boundary_ignore), precision=precision,
    )


__all__ = ["PaintSetup", "assemble", "explicit_unit_ops", "resolve_classes", "resolve_unit_tops"]
