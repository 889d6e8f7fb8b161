"""A recipe against the model and the vector library it names: checks that need both loaded.

:func:`check_recipe` is what :meth:`datagen.recipe.Recipe.validate_against` runs: the layer exists
and has pixels at the recipe's size, grid blocks fit in it, unit edits name real units at or
after the paint layer, and the library was extracted from this model at this layer with vectors
for every id, cluster and label the classes name. Every failure is a ConfigError naming the
recipe file and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..models.generator import Generator
    from ..vectors.library import VectorLibrary
    from .schema import Recipe


def check_recipe(recipe: "Recipe", gen: "Generator", library: "VectorLibrary | None") -> None:
    """Check the recipe against the generator and the vector library; ConfigError if not usable."""
    f = recipe.file
    layer = recipe.layer or gen.default_layer
    where = f"layer {layer!r}" + ("" if recipe.layer else " (the model's default layer)")
    try:
        info = gen.layer(layer)
    except KeyError:
        names = ", ".join(i.name for i in gen.layers())
        raise ConfigError(f"model {recipe.model!r} has no layer {layer!r}; its layers are: {names}",
                          file=f, field="layer") from None
    try:
        gen.check_size(tuple(recipe.size))
    except ValueError as e:
        raise ConfigError(str(e), file=f, field="size") from None
    lh, lw = gen.layer_size(layer, tuple(recipe.size))
    if lh < 1 or lw < 1:
        raise ConfigError(f"{where} has no pixels at {recipe.size[0]}x{recipe.size[1]}", file=f, field="size")
    from ..models.caveats import warn_paint_layer

    if recipe.style_seed is not None and not hasattr(gen, "set_fixed_style"):
        raise ConfigError(f"fixed_style applies to StyleGAN2 models only; model {recipe.model!r} has no style inputs",
                          file=f, field="fixed_style")
    warn_paint_layer(gen, layer)  # conditioning or styles entering after the paint layer (paper sec. 4.4)
    _check_grid_and_units(recipe, gen, layer, (lh, lw))
    if library is None:
        if any(not c.keep for c in recipe.classes):
            raise ConfigError("a vector library is required when a class paints vectors", file=f, field="library")
        return
    lib_name = str(recipe.library_path) if recipe.library_path is not None else "the vector library"
    if not _same_model(library.model, recipe.model, recipe.base_dir):
        raise ConfigError(
            f"vector library {lib_name!r} was extracted from model {library.model!r}, "
            f"but the recipe paints with model {recipe.model!r}; extract vectors from this model "
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
            f"{recipe.model!r} has {info.channels} channels",
            file=f, field="library",
        )
    for i, c in enumerate(recipe.classes):
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


def _check_grid_and_units(recipe: "Recipe", gen: "Generator", layer: str, layer_size: tuple[int, int]) -> None:
    """Grid classes place a block in the layer; unit edits name a layer at or after the paint layer
    and units it has."""
    from ..paint import grid_mask

    f = recipe.file
    names = [i.name for i in gen.layers()]
    for i, c in enumerate(recipe.classes):
        g = c.grid_size
        if g and not grid_mask(*layer_size, g).any():
            raise ConfigError(f"grid {g} places no block in layer {layer!r}, which is only {layer_size[0]}x"
                              f"{layer_size[1]} at {recipe.size[0]}x{recipe.size[1]} px; it needs at least "
                              f"{g + 1}x{g + 1} cells: use a smaller grid or a larger size",
                              file=f, field=f"classes[{i}].grid")
        u = c.units
        if u is None:
            continue
        where = f"classes[{i}].units"
        name = u.layer or layer
        if name not in names:
            raise ConfigError(f"model {recipe.model!r} has no layer {name!r}; its layers are: {', '.join(names)}",
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


__all__ = ["check_recipe"]
