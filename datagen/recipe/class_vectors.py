"""Which library vectors each painting class samples, and with what probability."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ..vectors.library import VectorLibrary
    from .schema import Recipe


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


__all__ = ["resolve_class_vector_ids", "resolve_class_vectors"]
