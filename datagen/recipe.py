"""The recipe for ``datagen generate``: which model, which layer, which classes paint which vectors.

    model: builtin:tissue-small       # generator spec (default builtin:tissue-small)
    layer: dec.x16                    # optional; default: the generator's default layer
    library: ../vector_libraries/tissue-small   # relative to this file; builtin:tissue-small: the shipped one
    size: [256, 256]                  # output height, width (or one int)
    classes:
      - {name: background, id: 0, color: "#f2f2f2", keep: true}
      - name: tumor
        id: 1
        color: "#d62728"
        vectors: [12, 40, {id: 7, weight: 2.0}]  # and/or clusters: [3], label: tumor
        weight: 1.0
        paint: grid                   # optional: g x g blocks of the vector (paper's grid), gaps left
        grid: 2                       #   to the generator (mask: ignore) or to between: CLASS
        units: {layer: dec.x8, ablate: [12, 40], insert: {units: [7], value: 3.0}}   # or {top: 8, mode: ablate}
    layout: {kind: voronoi}           # validated by datagen.layouts
    paint: {soft_boundary: 0.0, resize: nearest, mask: rendered}
    ignore_index: 255                 # mask value of keep regions and unpainted slivers (null: class ids)
    augment: [{name: HorizontalFlip, p: 0.5}]  # validated by datagen.augment

Every mistake becomes a :class:`~datagen.errors.ConfigError` naming the file, the
field (``classes[2].color``) and what was expected. Checks that need the model
and the vector library live in :meth:`Recipe.validate_against`. Typical use::

    recipe = load_recipe("recipe.yaml")
    gen = load_generator(recipe.model_spec)
    library = recipe.load_library()
    recipe.validate_against(gen, library)
    class_vectors = resolve_class_vectors(recipe, library)
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

from .augment import build_augment
from .config import excerpt, load_yaml, parse_model
from .errors import ConfigError, DatagenError
from .layouts import LAYOUT_KINDS, parse_layout
from .resources import BUILTIN, shipped_path

if TYPE_CHECKING:  # no runtime import: loading a recipe imports neither torch nor the models (and no cycles)
    import torch

    from .models.generator import Generator
    from .vectors.library import VectorLibrary

DEFAULT_MODEL = "builtin:tissue-small"  # same as datagen.models.registry.DEFAULT_MODEL (not imported: keeps this light)

_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


# -- field types ------------------------------------------------------------------
def _color(v: Any) -> str:
    if v is None:
        raise ValueError('expected a colour like "#d62728" (quote it: in YAML an unquoted # starts a comment)')
    if isinstance(v, (list, tuple)):
        if len(v) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in v):
            raise ValueError(f"expected a colour as \"#rrggbb\" or [r, g, b] with 0..255 integers, got {excerpt(v)}")
        return "#" + "".join(f"{c:02x}" for c in v)
    if not isinstance(v, str) or not _HEX.match(v.strip()):
        raise ValueError(f'expected a colour as "#rrggbb" (or "#rgb", or [r, g, b]), got {excerpt(v)}')
    h = v.strip().lstrip("#").lower()
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return "#" + h


def _vector_ref(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a vector id (integer) or {{id: N, weight: W}}, got {excerpt(v)}")
    if isinstance(v, int):
        return {"id": v}
    if isinstance(v, dict):
        return v
    raise ValueError(f"expected a vector id (integer) or {{id: N, weight: W}}, got {excerpt(v)}")


def _size(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return tuple(v)
    raise ValueError(f"expected [height, width] or one integer, got {excerpt(v)}")


def _name(v: Any) -> Any:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v.strip() or "\n" in v:
        raise ValueError(f"expected a non-empty single-line name, got {excerpt(v)}")
    return v.strip()


def _layout(v: Any) -> Any:
    if v is None or isinstance(v, dict):
        return v
    if isinstance(v, str) and v.strip():
        return v.strip()
    raise ValueError(f"expected a mapping like {{kind: voronoi, ...}} or a preset name / path, got {excerpt(v)}")


def _fixed_style(v: Any) -> Any:
    if isinstance(v, bool) or (isinstance(v, int) and v >= 0):
        return v
    raise ValueError(f"expected true, false or a style seed (an integer >= 0), got {excerpt(v)}")


def _augment_item(v: Any) -> Any:
    if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"].strip():
        raise ValueError(f"expected a transform like {{name: HorizontalFlip, p: 0.5}}, got {excerpt(v)}")
    return v


StrictId = Annotated[int, Field(strict=True, ge=0)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class VectorRef(BaseModel):
    """A library vector and its sampling weight within its class."""

    model_config = ConfigDict(extra="forbid")
    id: StrictId
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0


class UnitInsert(BaseModel):
    """``insert: {units: [7, 9], value: 3.0}``: set these units to a value (one number, or one per unit)."""

    model_config = ConfigDict(extra="forbid")
    units: Annotated[list[StrictId], Field(min_length=1, description="unit (channel) indices like [7, 9]")]
    value: Annotated[Annotated[float, Field(allow_inf_nan=False)] | list[Annotated[float, Field(allow_inf_nan=False)]],
                     Field(description="a number, or one per unit, e.g. value: 3.0")]

    @model_validator(mode="after")
    def _check(self) -> "UnitInsert":
        if isinstance(self.value, list) and len(self.value) != len(self.units):
            raise ValueError(f"expected one value per unit ({len(self.units)}), got {len(self.value)}; "
                             "or one number for all")
        return self


class UnitsSpec(BaseModel):
    """GAN Dissection edits of a class's painted cells, after painting (datagen.vectors.units).

    Explicit: ``{layer: dec.x8, ablate: [12, 40], insert: {units: [7], value: 3.0}}``. Ranked:
    ``{top: 8, mode: ablate}`` (the class's top-IoU units of ``layer``, found once by rendering
    ``rank_renders`` layouts; insert sets each to its top-1 % activation unless ``value`` is given).
    """

    model_config = ConfigDict(extra="forbid")
    layer: Annotated[str, Field(min_length=1)] | None = None
    """The layer edited: the paint layer (default) or a later one."""
    ablate: Annotated[list[StrictId], Field(min_length=1)] | None = None
    insert: UnitInsert | None = None
    top: Annotated[int, Field(strict=True, ge=1)] | None = None
    mode: Literal["ablate", "insert"] | None = None
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    rank_renders: Annotated[int, Field(strict=True, ge=1, le=256)] = 8

    @model_validator(mode="after")
    def _check(self) -> "UnitsSpec":
        if self.top is None:
            if self.ablate is None and self.insert is None:
                raise ValueError("expected ablate: [units], insert: {units: [...], value: V} or top: K (with mode:)")
            for key in ("mode", "value"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: goes with top: K (ranked units); explicit units say ablate: or insert:")
            if "rank_renders" in self.model_fields_set:
                raise ValueError("rank_renders: goes with top: K (ranked units)")
        else:
            if self.ablate is not None or self.insert is not None:
                raise ValueError("top: K picks the units itself; give either top: (with mode:) or ablate:/insert:")
            if self.value is not None and self.mode != "insert":
                raise ValueError("value: goes with mode: insert")
        return self

    @property
    def ranked_mode(self) -> str:
        return self.mode or "ablate"


class ClassSpec(BaseModel):
    """One segmentation class: its label id and colour, and what is painted where it lies."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, BeforeValidator(_name), Field(description="a class name such as tumor")]
    id: Annotated[int, Field(strict=True, ge=0, le=255, description="an integer 0..255 (the mask value)")]
    color: Annotated[str, BeforeValidator(_color), Field(description='a display colour like "#d62728"')]
    keep: Annotated[bool, Field(strict=True)] = False
    vectors: list[Annotated[VectorRef, BeforeValidator(_vector_ref)]] | None = None
    clusters: list[StrictId] | None = None
    label: Annotated[str, BeforeValidator(_name)] | None = None
    weight: Weight = 1.0
    paint: Literal["full", "grid"] = "full"
    """``grid``: the class's vectors go into g x g blocks of layer cells (the paper's grid), the gaps
    keep the generator's own activations (written as ignore) or take the ``between`` class."""
    grid: Annotated[int, Field(strict=True, ge=1, le=16)] | None = None
    between: Annotated[str, BeforeValidator(_name)] | None = None
    units: UnitsSpec | None = None

    @property
    def grid_size(self) -> int:
        """g of ``paint: grid`` (default 2), 0 for whole regions."""
        return (self.grid or 2) if self.paint == "grid" else 0

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)

    @property
    def has_sources(self) -> bool:
        return bool(self.vectors) or bool(self.clusters) or self.label is not None


class PaintOptions(BaseModel):
    """How the layer-sized label map is made and applied (see datagen.paint)."""

    model_config = ConfigDict(extra="forbid")
    soft_boundary: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    resize: Literal["nearest"] = "nearest"
    mask: Literal["layout", "cells", "rendered"] = "rendered"
    """What the written mask is: the boundaries the generator drew (``rendered``), the layout
    itself, or the painted layer cells (see datagen.render and datagen.masks)."""
    min_confidence: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    """``mask: rendered`` only: a boundary pixel whose classifier confidence is lower is written as ignore."""
    boundary_ignore: Annotated[int, Field(strict=True, ge=0, le=64)] = 0
    """Pixels within this many px of a boundary (on each side) are written as ignore: the
    strip where the image blends both sides. 0: none."""


class Recipe(BaseModel):
    """A validated recipe (see module docstring for the YAML form)."""

    model_config = ConfigDict(extra="forbid")
    model: Annotated[str, Field(min_length=1)] = DEFAULT_MODEL
    layer: Annotated[str, Field(min_length=1)] | None = None
    library: Annotated[str, Field(min_length=1)] | None = None
    size: Annotated[tuple[Annotated[int, Field(strict=True, ge=1)], Annotated[int, Field(strict=True, ge=1)]],
                    BeforeValidator(_size), Field(description="[height, width] in px or one integer, e.g. size: [256, 256]")]
    classes: Annotated[list[ClassSpec], Field(min_length=1, description=(
        'a list of classes like - {name: tumor, id: 1, color: "#d62728", vectors: [0, 1]}'))]
    layout: Annotated[Any, BeforeValidator(_layout)] = None
    paint: PaintOptions = Field(default_factory=PaintOptions)
    ignore_index: Annotated[int, Field(strict=True, ge=0, le=255)] | None = 255
    """Mask value of pixels that claim no class (keep regions, unpainted slivers); null writes
    keep regions with their own class id instead."""
    augment: list[Annotated[dict[str, Any], BeforeValidator(_augment_item)]] = Field(default_factory=list)
    trust: Annotated[bool, Field(strict=True)] = False
    """Allow a ``stylegan2:`` pickle as ``model``: unpickling runs code from the file (same as --trust-pickles)."""
    fixed_style: Annotated[bool | int, BeforeValidator(_fixed_style)] = False
    """StyleGAN2 only: every sample shares the styles that act after the paint layer (``true``: the
    style of seed 0, an integer: of that seed), so they cannot change what a painted vector draws
    (docs/vectors.md#inputs-after-the-paint-layer)."""

    _file: Path | None = PrivateAttr(default=None)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _layout: Any = PrivateAttr(default=None)
    _augment: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_classes(self) -> "Recipe":
        seen: dict[str, dict[Any, int]] = {"name": {}, "id": {}, "color": {}}
        for i, c in enumerate(self.classes):
            for key in ("name", "id", "color"):
                val = getattr(c, key)
                if val in seen[key]:
                    j = seen[key][val]
                    raise ConfigError(
                        f"duplicate class {key} {excerpt(val)}: classes[{j}] ({excerpt(self.classes[j].name)}) already uses it; "
                        f"every class needs its own {key}",
                        field=f"classes[{i}].{key}",
                    )
                seen[key][val] = i
            if c.keep and c.has_sources:
                given = ", ".join(k for k in ("vectors", "clusters", "label") if getattr(c, k))
                raise ConfigError(
                    f"class {c.name!r} has keep: true (the layer's own activations) and also {given}; use one or the other",
                    field=f"classes[{i}]",
                )
            if not c.keep and not c.has_sources:
                raise ConfigError(
                    f"class {c.name!r} paints nothing: give vectors: [ids], clusters: [k] or label: NAME "
                    "(or keep: true to keep the layer's own activations)",
                    field=f"classes[{i}]",
                )
            self._check_grid(i, c)
        if self.library is None and any(not c.keep for c in self.classes):
            raise ConfigError("a vector library directory is required when a class paints vectors", field="library")
        if self.ignore_index is not None and self.ignore_index in seen["id"]:
            c = self.classes[seen["id"][self.ignore_index]]
            raise ConfigError(f"ignore_index {self.ignore_index} is also the id of class {c.name!r}; "
                              "choose another ignore value (or class id)", field="ignore_index")
        return self

    def _check_grid(self, i: int, c: ClassSpec) -> None:
        if c.paint != "grid":
            for key in ("grid", "between"):
                if getattr(c, key) is not None:
                    raise ConfigError(f"{key}: applies to grid painting; add paint: grid (or remove {key}:)",
                                      field=f"classes[{i}].{key}")
            return
        if c.keep:
            raise ConfigError("paint: grid needs a class that paints vectors; a keep: true class paints nothing",
                              field=f"classes[{i}].paint")
        if c.between is not None:
            others = {o.name: o for o in self.classes}
            b = others.get(c.between)
            if b is None or b is c or b.keep or b.paint == "grid":
                why = ("no class has that name" if b is None else "it is the class itself" if b is c else
                       "it is a keep class, and gaps keep the generator's own activations anyway (leave between out)"
                       if b.keep else "it is painted in a grid itself")
                painted = [o.name for o in self.classes if o is not c and not o.keep and o.paint != "grid"]
                raise ConfigError(f"between {c.between!r}: expected another class painted over whole regions "
                                  f"({', '.join(painted) or 'none'}); {why}", field=f"classes[{i}].between")
        elif self.ignore_index is None:
            raise ConfigError(f"class {c.name!r} is painted in a grid, and its gaps show the generator's own "
                              "activations, which no class names; set ignore_index or between: CLASS",
                              field=f"classes[{i}].between")

    # -- paths --------------------------------------------------------------
    @property
    def file(self) -> Path | None:
        return self._file

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def library_path(self) -> Path | None:
        """The vector library directory, resolved against the recipe file's folder
        (``builtin:NAME``: a library shipped with datagen, see datagen.resources)."""
        if self.library is None:
            return None
        if self.library.startswith(BUILTIN):
            return shipped_path("libraries", self.library, file=self._file, field="library")
        p = Path(self.library).expanduser()
        return p if p.is_absolute() else self._base_dir / p

    @property
    def model_spec(self) -> str:
        """``model`` with a relative checkpoint path resolved against the recipe's folder
        (when that path exists; otherwise as written)."""
        spec = self.model
        if spec.startswith("builtin:"):
            return spec
        prefix, path = ("stylegan2:", spec[len("stylegan2:"):]) if spec.startswith("stylegan2:") else ("", spec)
        p = Path(path).expanduser()
        if not p.is_absolute() and (self._base_dir / p).exists():
            # absolute, so the spec (part of an output's fingerprint) does not depend on the folder the
            # recipe was named from (recipes/x.yaml vs /abs/recipes/x.yaml)
            return prefix + os.path.abspath(self._base_dir / p)
        return spec

    @property
    def layer_name(self) -> str | None:
        return self.layer

    @property
    def style_seed(self) -> int | None:
        """The seed of the shared style (``fixed_style``), or None when each sample has its own."""
        return None if self.fixed_style is False else (0 if self.fixed_style is True else int(self.fixed_style))

    def palette(self) -> dict[int, tuple[int, int, int]]:
        """Class id -> RGB colour."""
        return {c.id: c.rgb for c in self.classes}

    def class_by_name(self, name: str) -> ClassSpec:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    # -- loading companions ---------------------------------------------------
    def load_library(self) -> "VectorLibrary | None":
        """The vector library named by ``library`` (None when every class keeps activations)."""
        from .vectors.library import VectorLibrary

        path = self.library_path
        if path is None:
            return None
        if not path.exists():
            raise ConfigError(f"vector library {str(path)!r} not found (paths are relative to the recipe file)",
                              file=self._file, field="library")
        return VectorLibrary.load(path)

    def layout_data(self) -> Any:
        """The raw layout; a mapping whose kind takes class proportions (``classes:``) but does
        not give them gets ``{class name: class weight}`` of every recipe class."""
        data = self.layout
        if isinstance(data, dict) and "classes" not in data:
            cls = LAYOUT_KINDS.get(data.get("kind")) if isinstance(data.get("kind"), str) else None
            if cls is not None and "classes" in getattr(cls, "model_fields", {}):
                data = {**data, "classes": {c.name: c.weight for c in self.classes}}
        return data

    def parsed_layout(self) -> Any:
        """The layout as datagen.layouts parses it (the raw data when that module is absent),
        checked against the recipe's class names."""
        if self._layout is None and self.layout is not None:
            spec = _as_config_error(parse_layout, self.layout_data(), file=self._file, field="layout", base_dir=self._base_dir,
                                    classes={c.name: c.weight for c in self.classes})  # fills the class fields a preset leaves out
            check = getattr(spec, "check_classes", None)
            if callable(check):
                try:
                    check({c.name: c.id for c in self.classes})
                    files_check = getattr(spec, "check_files", None)
                    if callable(files_check):  # user masks: open every file before any output exists
                        files_check({c.name: c.id for c in self.classes})
                except ConfigError as e:
                    raise ConfigError(e.message, file=e.file or self._file, field=e.field or "layout") from None
            self._layout = spec
        return self._layout if self._layout is not None else self.layout

    def with_layout(self, layout: Any) -> "Recipe":
        """A copy that draws ``layout`` (a mapping, a preset name or a YAML path) instead of its own,
        parsed and checked against the classes like the original (a canvas's whole-slide layout)."""
        if isinstance(layout, os.PathLike) or (isinstance(layout, str) and os.path.exists(layout)):
            layout = str(Path(layout).resolve())  # a file named relative to the caller, not the recipe
        try:
            layout = _layout(layout)
        except ValueError as e:
            raise ConfigError(str(e), file=self._file, field="layout") from None
        copy = self.model_copy(update={"layout": layout})
        copy._layout = None
        copy.parsed_layout()
        return copy

    def augmentation(self) -> Any:
        """The augmentation pipeline as datagen.augment builds it (raw list when absent/empty)."""
        if self._augment is None and self.augment:
            self._augment = _as_config_error(build_augment, self.augment, file=self._file, field="augment")
        return self._augment if self._augment is not None else self.augment

    # -- checks against the model and the library --------------------------------
    def validate_against(self, gen: "Generator", library: "VectorLibrary | None") -> None:
        """Check the recipe against the generator and the vector library; ConfigError if not usable."""
        f = self._file
        layer = self.layer or gen.default_layer
        where = f"layer {layer!r}" + ("" if self.layer else " (the model's default layer)")
        try:
            info = gen.layer(layer)
        except KeyError:
            names = ", ".join(i.name for i in gen.layers())
            raise ConfigError(f"model {self.model!r} has no layer {layer!r}; its layers are: {names}",
                              file=f, field="layer") from None
        try:
            gen.check_size(tuple(self.size))
        except ValueError as e:
            raise ConfigError(str(e), file=f, field="size") from None
        lh, lw = gen.layer_size(layer, tuple(self.size))
        if lh < 1 or lw < 1:
            raise ConfigError(f"{where} has no pixels at {self.size[0]}x{self.size[1]}", file=f, field="size")
        from .models.caveats import warn_paint_layer

        if self.style_seed is not None and not hasattr(gen, "set_fixed_style"):
            raise ConfigError(f"fixed_style applies to StyleGAN2 models only; model {self.model!r} has no style inputs",
                              file=f, field="fixed_style")
        warn_paint_layer(gen, layer)  # conditioning or styles entering after the paint layer (paper sec. 4.4)
        self._validate_grid_and_units(gen, layer, (lh, lw))
        if library is None:
            if any(not c.keep for c in self.classes):
                raise ConfigError("a vector library is required when a class paints vectors", file=f, field="library")
            return
        lib_name = str(self.library_path) if self.library_path is not None else "the vector library"
        if not _same_model(library.model, self.model, self._base_dir):
            raise ConfigError(
                f"vector library {lib_name!r} was extracted from model {library.model!r}, "
                f"but the recipe paints with model {self.model!r}; extract vectors from this model "
                "(datagen vectors extract) or change model:",
                file=f, field="model",
            )
        if library.layer != layer:
            raise ConfigError(
                f"vector library {lib_name!r} holds vectors of layer {library.layer!r}, "
                f"but the recipe paints at {where}; set layer: {library.layer} or use a library of {layer}",
                file=f, field="layer",
            )
        if library.channels != info.channels:
            raise ConfigError(
                f"vectors in {lib_name!r} have {library.channels} channels, but layer {layer!r} of model "
                f"{self.model!r} has {info.channels} channels",
                file=f, field="library",
            )
        for i, c in enumerate(self.classes):
            for j, ref in enumerate(c.vectors or []):
                if ref.id not in library:
                    raise ConfigError(f"vector id {ref.id} is not in the library ({library._id_range()})",
                                      file=f, field=f"classes[{i}].vectors[{j}]")
            for j, k in enumerate(c.clusters or []):
                if not any(r.cluster == k for r in library.records):
                    known = library.clusters
                    have = f"clusters with vectors: {', '.join(map(str, known))}" if known else \
                        "the library is not clustered (datagen vectors extract --clusters K)"
                    raise ConfigError(f"cluster {k} has no vectors in the library; {have}",
                                      file=f, field=f"classes[{i}].clusters[{j}]")
            if c.label is not None and not any(r.label == c.label for r in library.records):
                known = library.labels
                have = f"labels in use: {', '.join(known)}" if known else \
                    "no vector is labelled yet (set label: fields in library.yaml or use datagen vectors label)"
                raise ConfigError(f"no vector in the library is labelled {c.label!r}; {have}",
                                  file=f, field=f"classes[{i}].label")


    def _validate_grid_and_units(self, gen: "Generator", layer: str, layer_size: tuple[int, int]) -> None:
        """Grid classes place a block in the layer; unit edits name a layer at or after the paint layer
        and units it has."""
        from .paint import grid_mask

        f = self._file
        names = [i.name for i in gen.layers()]
        for i, c in enumerate(self.classes):
            g = c.grid_size
            if g and not grid_mask(*layer_size, g).any():
                raise ConfigError(f"grid {g} places no block in layer {layer!r}, which is only {layer_size[0]}x"
                                  f"{layer_size[1]} at {self.size[0]}x{self.size[1]} px; it needs at least "
                                  f"{g + 1}x{g + 1} cells: use a smaller grid or a larger size",
                                  file=f, field=f"classes[{i}].grid")
            u = c.units
            if u is None:
                continue
            where = f"classes[{i}].units"
            name = u.layer or layer
            if name not in names:
                raise ConfigError(f"model {self.model!r} has no layer {name!r}; its layers are: {', '.join(names)}",
                                  file=f, field=f"{where}.layer")
            if names.index(name) < names.index(layer):
                later = ", ".join(names[names.index(layer):])
                raise ConfigError(f"layer {name!r} comes before the paint layer {layer!r}, where painting would "
                                  f"overwrite the edit; expected the paint layer or a later one: {later}",
                                  file=f, field=f"{where}.layer")
            channels = gen.layer(name).channels
            for key, ids in (("ablate", u.ablate or []), ("insert.units", u.insert.units if u.insert else [])):
                for j, unit in enumerate(ids):
                    if unit >= channels:
                        raise ConfigError(f"unit {unit} is out of range: layer {name!r} has {channels} units "
                                          f"(0..{channels - 1})", file=f, field=f"{where}.{key}[{j}]")
            if u.top is not None and u.top > channels:
                raise ConfigError(f"top {u.top} is more than the {channels} units of layer {name!r}",
                                  file=f, field=f"{where}.top")


# -- loading ---------------------------------------------------------------------------
def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a recipe file (schema, classes, layout and augmentation).

    Raises ConfigError (file, field, expectation) for every problem, YAML syntax errors
    included (with line and column). Checks that need the model and the library are in
    :meth:`Recipe.validate_against`. ``builtin:NAME`` names a recipe shipped with datagen
    (``builtin:tissue-small-demo``: recipes/tissue-small-demo.yaml, also in a wheel install).
    """
    p = Path(path)
    if str(path).startswith(BUILTIN) and not p.exists():
        p = shipped_path("recipes", str(path))
    try:
        raw = load_yaml(p)
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read the recipe: {e}", file=p) from None
    if raw is None:
        raise ConfigError("the recipe is empty; expected a mapping with at least size: and classes:", file=p)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping of recipe fields (model, layer, library, size, classes, layout, paint, augment), "
            f"got a {type(raw).__name__}", file=p)
    recipe = parse_model(Recipe, raw, file=p)
    recipe._file = p
    recipe._base_dir = p.parent if str(p.parent) else Path(".")
    recipe.parsed_layout()
    recipe.augmentation()
    return recipe


def _as_config_error(fn: Any, data: Any, *, file: Path | None, field: str, **kwargs: Any) -> Any:
    """Call a companion parser; a plain ValueError from it still names the file and field."""
    try:
        return fn(data, file=file, field=field, **kwargs)
    except DatagenError:
        raise
    except ValueError as e:
        raise ConfigError(str(e), file=file, field=field) from None


def _same_model(library_model: str, recipe_model: str, base_dir: Path) -> bool:
    if library_model == recipe_model:
        return True
    if library_model.startswith("builtin:") or recipe_model.startswith("builtin:"):
        return False

    def resolved(spec: str, base: Path) -> Path | None:
        path = spec.split(":", 1)[1] if spec.startswith("stylegan2:") else spec
        p = Path(path).expanduser()
        p = p if p.is_absolute() else base / p
        return p.resolve() if p.exists() else None

    a, b = resolved(library_model, Path.cwd()), resolved(recipe_model, base_dir)
    return a is not None and a == b


# -- class vectors ---------------------------------------------------------------
def resolve_class_vector_ids(recipe: Recipe, library: "VectorLibrary") -> dict[str, tuple[list[int], list[float]]]:
    """Painting class name -> (vector ids, sampling probabilities summing to 1).

    A class's vectors are the union of ``vectors`` (with their weights), the members of
    ``clusters`` and the vectors labelled ``label`` (weight 1 each), without duplicates
    (an explicitly listed vector keeps its own weight). Keep classes are not included.
    """
    out: dict[str, tuple[list[int], list[float]]] = {}
    for i, c in enumerate(recipe.classes):
        if c.keep:
            continue
        weights: dict[int, float] = {}
        for ref in c.vectors or []:
            weights[ref.id] = ref.weight
        for k in c.clusters or []:
            for r in library.records:
                if r.cluster == k:
                    weights.setdefault(r.id, 1.0)
        if c.label is not None:
            for r in library.records:
                if r.label == c.label:
                    weights.setdefault(r.id, 1.0)
        if not weights:
            raise ConfigError(f"class {c.name!r} resolves to no vectors in the library",
                              file=recipe.file, field=f"classes[{i}]")
        for vid in weights:
            if vid not in library:
                raise ConfigError(f"vector id {vid} is not in the library ({library._id_range()})",
                                  file=recipe.file, field=f"classes[{i}].vectors")
        total = sum(weights.values())
        if not total > 0 or not math.isfinite(total):
            raise ConfigError(f"class {c.name!r}: vector weights must sum to a positive number",
                              file=recipe.file, field=f"classes[{i}].vectors")
        ids = list(weights)
        out[c.name] = (ids, [weights[v] / total for v in ids])
    return out


def resolve_class_vectors(recipe: Recipe, library: "VectorLibrary") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Painting class name -> (vectors (k, C) float32, probabilities (k,) summing to 1).

    See :func:`resolve_class_vector_ids` for which vectors belong to a class.
    """
    import torch

    return {
        name: (library.get(ids), torch.tensor(w, dtype=torch.float32))
        for name, (ids, w) in resolve_class_vector_ids(recipe, library).items()
    }


__all__ = [
    "ClassSpec", "PaintOptions", "Recipe", "UnitInsert", "UnitsSpec", "VectorRef", "load_recipe",
    "resolve_class_vector_ids", "resolve_class_vectors",
]
