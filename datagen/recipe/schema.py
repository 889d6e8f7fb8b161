"""The recipe itself: its top-level fields, cross-field checks, companions and loading.

:class:`Recipe` is what ``load_recipe`` returns; its classes are :mod:`datagen.recipe.fields`.
Loading imports neither torch nor the models (checks against those are in
:mod:`datagen.recipe.checks`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

from ..augment import build_augment
from ..config import excerpt, load_yaml, parse_model
from ..errors import ConfigError, DatagenError
from ..layouts import LAYOUT_KINDS, parse_layout
from ..resources import BUILTIN, shipped_path
from .fields import ClassSpec, PaintOptions, coerce_augment_item, coerce_fixed_style, coerce_layout, coerce_size

if TYPE_CHECKING:  # no runtime import: loading a recipe imports neither torch nor the models (and no cycles)
    from ..models.generator import Generator
    from ..vectors.library import VectorLibrary

DEFAULT_MODEL = "builtin:tissue-small"  # same as datagen.models.registry.DEFAULT_MODEL (not imported: keeps this light)


class Recipe(BaseModel):
    """A validated recipe (see module docstring for the YAML form)."""

    model_config = ConfigDict(extra="forbid")
    model: Annotated[str, Field(min_length=1)] = DEFAULT_MODEL
    layer: Annotated[str, Field(min_length=1)] | None = None
    library: Annotated[str, Field(min_length=1)] | None = None
    size: Annotated[tuple[Annotated[int, Field(strict=True, ge=1)], Annotated[int, Field(strict=True, ge=1)]],
                    BeforeValidator(coerce_size), Field(description="[height, width] in px or one integer, e.g. size: [256, 256]")]
    classes: Annotated[list[ClassSpec], Field(min_length=1, description=(
        'a list of classes like - {name: tumor, id: 1, color: "#d62728", vectors: [0, 1]}'))]
    layout: Annotated[Any, BeforeValidator(coerce_layout)] = None
    paint: PaintOptions = Field(default_factory=PaintOptions)
    ignore_index: Annotated[int, Field(strict=True, ge=0, le=255)] | None = 255
    """Mask value of pixels that claim no class (keep regions, unpainted slivers); null writes
    keep regions with their own class id instead."""
    augment: list[Annotated[dict[str, Any], BeforeValidator(coerce_augment_item)]] = Field(default_factory=list)
    trust: Annotated[bool, Field(strict=True)] = False
    """Allow a ``stylegan2:`` pickle as ``model``: unpickling runs code from the file (same as --trust-pickles)."""
    fixed_style: Annotated[bool | int, BeforeValidator(coerce_fixed_style)] = False
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
        from ..vectors.library import VectorLibrary

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
            layout = coerce_layout(layout)
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
        """Check the recipe against the generator and the vector library; ConfigError if not usable
        (:func:`datagen.recipe.checks.check_recipe`)."""
        from .checks import check_recipe

        check_recipe(self, gen, library)


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


__all__ = ["DEFAULT_MODEL", "Recipe", "load_recipe"]
