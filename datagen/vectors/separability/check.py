"""The check ``datagen preview`` and ``datagen generate`` run before painting: a warning per
pair of a recipe's classes that cannot be told apart, measured once per process and setting."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...features import FeatureExtractor
from ...models.generator import Generator
from ..visualize import resolve_seeds
from .measure import DEFAULT_MAX_VECTORS, DEFAULT_SEEDS, DEFAULT_SIZE, measure_separability
from .report import DEFAULT_THRESHOLD, InseparablePair, SeparabilityReport

if TYPE_CHECKING:  # pragma: no cover
    from ...recipe import Recipe
    from ..library import VectorLibrary

ENV_VAR = "DATAGEN_SEPARABILITY"
"""Set to 0 / false / no / off to skip the check in ``preview`` and ``generate``."""
DOCS = "docs/vectors.md#separability"


class ClassSeparabilityWarning(UserWarning):
    """Two classes of a recipe paint vectors whose renders cannot be told apart."""


def recipe_classes(recipe: "Recipe", library: "VectorLibrary") -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The recipe's painted classes (``keep`` classes skipped) -> vectors and ids, in recipe order."""
    from ...recipe import resolve_class_vector_ids

    resolved = resolve_class_vector_ids(recipe, library)
    ids = {c.name: sorted(int(i) for i in resolved[c.name][0]) for c in recipe.classes if not c.keep and c.name in resolved}
    return {n: library.get(i) for n, i in ids.items()}, ids


def _disabled() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off")


_CACHE_LOCK = threading.Lock()
_CACHE: dict[tuple, SeparabilityReport] = {}


def _file_stamp(path: Path | None) -> tuple:
    if path is None:
        return ()
    out = []
    for p in (path / "library.yaml", path / "vectors.safetensors"):
        try:
            st = p.stat()
            out.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), None, None))
    return tuple(out)


def pair_message(pair: InseparablePair, recipe: "Recipe | None" = None, library: str | os.PathLike | None = None) -> str:
    """The one-line warning text for an inseparable pair."""
    where = f" of recipe {recipe.file.name}" if recipe is not None and recipe.file is not None else ""
    lib = f"datagen vectors separability {library}" + (f" --recipe {recipe.file}" if recipe is not None and recipe.file else "") \
        if library is not None else "datagen vectors separability LIBRARY"
    return f"classes {pair.a!r} and {pair.b!r}{where} cannot be told apart: {pair.describe()} ({lib}; {DOCS})"


def check_recipe_separability(
    recipe: "Recipe",
    generator: Generator,
    library: "VectorLibrary | None",
    *,
    threshold: float = DEFAULT_THRESHOLD,
    size: int | Sequence[int] | None = DEFAULT_SIZE,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    max_vectors: int = DEFAULT_MAX_VECTORS,
    extractor: FeatureExtractor | None = None,
    warn: bool = True,
) -> SeparabilityReport | None:
    """Measure the recipe's painted classes and warn (:class:`ClassSeparabilityWarning`, one per
    inseparable pair, naming both classes) when two cannot be told apart. Prints nothing.

    Returns None without measuring when ``DATAGEN_SEPARABILITY=0`` is set, there is no library,
    or fewer than two classes paint vectors. Results are cached per process, keyed by the model
    spec, the generator's name, layer, the library files (path, mtime, size), the classes' vector
    ids and the settings, so repeated ``prepare()`` calls measure once (the warnings are issued
    again; Python's warning filters decide whether they are shown again).
    """
    if _disabled() or library is None:
        return None
    vecs, ids = recipe_classes(recipe, library)
    if len(vecs) < 2:
        return None
    layer = recipe.layer_name or generator.default_layer
    key = (
        recipe.model_spec, getattr(generator, "name", None), str(generator.device), layer,
        _file_stamp(recipe.library_path), tuple((n, tuple(i)) for n, i in ids.items()),
        threshold, tuple(size) if isinstance(size, (list, tuple)) else size, tuple(resolve_seeds(seeds)), max_vectors,
        id(extractor) if extractor is not None else None,
    )
    with _CACHE_LOCK:
        report = _CACHE.get(key)
    if report is None:
        report = measure_separability(generator, layer, vecs, ids=ids, size=size, seeds=seeds, max_vectors=max_vectors,
                                      threshold=threshold, extractor=extractor)
        with _CACHE_LOCK:
            _CACHE[key] = report
    if warn:
        for p in report.pairs:
            warnings.warn(pair_message(p, recipe, recipe.library_path), ClassSeparabilityWarning, stacklevel=2)
    return report


def clear_cache() -> None:
    """Forget cached measurements (tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()
