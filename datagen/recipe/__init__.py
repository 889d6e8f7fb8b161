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

from .class_vectors import resolve_class_vector_ids, resolve_class_vectors
from .fields import ClassSpec, PaintOptions, UnitInsert, UnitsSpec, VectorRef
from .schema import DEFAULT_MODEL, Recipe, load_recipe

__all__ = [
    "ClassSpec", "DEFAULT_MODEL", "PaintOptions", "Recipe", "UnitInsert", "UnitsSpec", "VectorRef", "load_recipe",
    "resolve_class_vector_ids", "resolve_class_vectors",
]
