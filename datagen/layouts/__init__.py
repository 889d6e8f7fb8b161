"""Procedural layouts: random label maps that say where each class is painted.

A layout is one YAML mapping with a ``kind`` (see docs/layouts.md)::

    kind: voronoi
    classes: {tumor: 3, stroma: 2}   # left out: the recipe's classes
    cells: [6, 24]

:func:`parse_layout` validates it into a :class:`LayoutSpec`, whose
``generate(rng, (H, W), class_ids)`` draws one ``(H, W)`` uint8 map of class
ids. Named presets live in the top-level ``layouts/`` folder, shipped inside
the package by a wheel (:func:`load_preset`, :mod:`datagen.resources`).
:mod:`.canvas_scale` keeps region sizes in pixels on whole-slide canvases.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..config import describe_validation_error, load_yaml, model_at, validation_config_error
from ..errors import ConfigError
from ..resources import shipped_dir, shipped_names
from .bands import BandsLayout
from .base import FloatRange, IntRange, LayoutSpec
from .canvas_scale import MIN_REGIONS, FewRegionsWarning, count_regions, scale_layout_for_canvas, warn_few_regions
from .islands import IslandsLayout, NestSpec
from .noise import NoiseLayout, fractal_noise
from .postprocess import postprocess, remove_small_regions, smooth_labels
from .user_mask import MaskLayout
from .voronoi import VoronoiLayout

__all__ = [
    "LAYOUT_KINDS", "PRESET_DIR", "LayoutSpec", "VoronoiLayout", "NoiseLayout", "IslandsLayout", "NestSpec",
    "BandsLayout", "MaskLayout", "FloatRange", "IntRange", "parse_layout", "load_preset", "available_presets",
    "postprocess", "smooth_labels", "remove_small_regions", "fractal_noise",
    "scale_layout_for_canvas", "count_regions", "warn_few_regions", "FewRegionsWarning", "MIN_REGIONS",
]

#: Layout classes by their YAML ``kind``.
LAYOUT_KINDS: dict[str, type[LayoutSpec]] = {
    "voronoi": VoronoiLayout,
    "noise": NoiseLayout,
    "islands": IslandsLayout,
    "bands": BandsLayout,
    "mask": MaskLayout,
}

#: Folder of the named presets: ``layouts/`` at the repository top level, or its copy inside an
#: installed wheel (``datagen/_data/layouts``); None when neither exists.
PRESET_DIR: Path | None = shipped_dir("presets")


def available_presets() -> list[str]:
    """Names accepted by :func:`load_preset` (the ``*.yaml`` files in :data:`PRESET_DIR`)."""
    return shipped_names("presets")


def _is_name(name_or_path: str | os.PathLike) -> bool:
    s = os.fspath(name_or_path)
    return isinstance(name_or_path, str) and "/" not in s and os.sep not in s and not s.endswith((".yaml", ".yml"))


def load_preset(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A layout mapping from a preset name (``voronoi``) or from a YAML file path."""
    if _is_name(name_or_path):
        file = PRESET_DIR / f"{name_or_path}.yaml" if PRESET_DIR is not None else Path(f"{name_or_path}.yaml")
        if PRESET_DIR is None or not file.is_file():
            names = ", ".join(available_presets()) or "(none installed)"
            raise ConfigError(f"unknown layout preset '{name_or_path}'; expected one of: {names}, or a path to a "
                              "YAML file", field="layout")
    else:
        file = Path(name_or_path)
    data = load_yaml(file)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a layout mapping with a `kind` key, got {type(data).__name__}", file=file)
    return data


def _describe_layout_error(e: dict[str, Any], model: type[BaseModel]) -> str:
    """Like :func:`describe_validation_error`, but an unknown field lists the layout kind's own
    fields before the ones every kind shares (and not ``kind``, which is already right)."""
    if e["type"] == "extra_forbidden" and e["loc"]:
        names = [n for n in (model_at(model, e["loc"][:-1]) or model).model_fields if n != "kind"]
        common = [n for n in names if n in LayoutSpec.model_fields]
        allowed = ", ".join([n for n in names if n not in common] + common)
        return f"unknown field '{e['loc'][-1]}'; expected one of: {allowed}"
    return describe_validation_error(e)


def parse_layout(data: Mapping[str, Any] | str | os.PathLike, *, file: str | os.PathLike | None = None, field: str = "layout",
                 base_dir: str | os.PathLike | None = None, classes: Mapping[str, float] | None = None) -> LayoutSpec:
    """Validate a layout mapping (or a preset name / YAML path) into a :class:`LayoutSpec`.

    Every problem is a :class:`ConfigError` naming ``file``, the dotted field
    path under ``field`` and what was expected. ``base_dir`` is where relative
    paths inside the layout (mask files) resolve; it defaults to ``file``'s
    folder, else the working directory. ``classes`` (``{name: weight}``, in the
    recipe's order) fills the class fields the layout leaves out
    (:meth:`LayoutSpec.with_classes`); without it they are filled when a map is
    generated, with equal weights over the ids passed in.
    """
    file_s = os.fspath(file) if file is not None else None
    if base_dir is None and file_s is not None:
        base_dir = Path(file_s).resolve().parent
    if isinstance(data, (str, os.PathLike)):
        ref = data
        if not _is_name(ref) and not Path(ref).is_absolute() and base_dir is not None:
            ref = Path(base_dir) / ref
        try:
            loaded = load_preset(ref)
        except ConfigError as e:
            if e.file is None:
                raise ConfigError(e.message, file=file_s, field=field) from None
            raise
        preset_file = PRESET_DIR / f"{data}.yaml" if _is_name(ref) and PRESET_DIR is not None else Path(ref)
        # Errors name the preset file; mask paths inside it resolve next to it.
        return parse_layout(loaded, file=preset_file, field=field, classes=classes)
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a layout mapping with a `kind` key (or a preset name), got {type(data).__name__}",
                          file=file_s, field=field)
    kinds = ", ".join(LAYOUT_KINDS)
    if "kind" not in data:
        raise ConfigError(f"missing `kind`; expected one of: {kinds}", file=file_s, field=f"{field}.kind")
    kind = data["kind"]
    cls = LAYOUT_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"unknown layout kind {kind!r}; expected one of: {kinds}", file=file_s, field=f"{field}.kind")
    base = Path(base_dir) if base_dir is not None else None
    try:
        spec = cls.model_validate(dict(data), context={"base_dir": base})
    except ValidationError as e:
        raise validation_config_error(e, cls, file=file_s, prefix=field, describe=_describe_layout_error) from None
    spec.bind_source(file_s, field, base)
    return spec.with_classes(classes) if classes is not None else spec
