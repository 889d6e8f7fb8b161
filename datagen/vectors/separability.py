"""Class separability: can the classes a recipe paints be told apart in the images? (issue 9)

A segmentation model can only learn a mask that the image supports. If two classes
are painted with vectors that draw the same thing, every generated pair labels the
same texture two ways and the mask is noise there. This module measures that
*before* generating, from the vectors alone:

1. Every vector of every class (at most ``max_vectors`` per class, picked evenly
   over the class's ids so the result is deterministic) is rendered full-replace
   (the whole paint layer := v, :func:`datagen.vectors.visualize`) for each noise
   seed in ``seeds``.
2. Each render goes through the frozen feature extractor that tileability uses
   (EfficientNet-Lite0 ``blocks.4``, stride 8); the render's descriptor is the
   per-channel spatial mean and standard deviation of that feature map (a texture
   descriptor), z-scored per dimension over all renders of the measurement.
3. Every render is classified by the nearest class centroid (cosine similarity),
   leaving its own vector out of its own class's centroid (*leave one vector
   out*: the other seeds of the same vector would make the test too easy). A class
   with a single vector leaves out only the render itself; a class with a single
   render keeps it.
4. The counts give a confusion matrix (rows: true class, columns: predicted class,
   each row normalised to sum to 1), per-class accuracy (its diagonal) and the
   centroid cosine-similarity matrix.

A pair of classes (a, b) is *inseparable* when ``confusion[a, b] + confusion[b, a]
>= threshold`` (default :data:`DEFAULT_THRESHOLD` = 0.2), or when the two classes
share a vector (the same id, or an identical tensor) - a shared vector is label
noise by construction, whatever the renders look like.

:func:`check_recipe_separability` runs this for a recipe's painted classes (``keep``
classes are skipped) and emits one :class:`ClassSeparabilityWarning` per inseparable
pair; ``datagen preview`` and ``datagen generate`` call it once per process for each
(recipe classes, model, library) combination. Set ``DATAGEN_SEPARABILITY=0`` to skip it.
See docs/vectors.md#separability.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatagenError
from ..features import TILEABILITY_LAYER, EfficientNetLite0, FeatureExtractor, resize_for_features
from ..fsutil import atomic_write_text
from ..models.generator import Generator
from .extract import resolve_layer_name
from .visualize import resolve_seeds, visualize

if TYPE_CHECKING:  # pragma: no cover
    from ..recipe import Recipe
    from .library import VectorLibrary

DEFAULT_THRESHOLD = 0.2
"""A pair is inseparable when confusion[a, b] + confusion[b, a] reaches this."""
DEFAULT_SIZE = (128, 128)
DEFAULT_SEEDS = (0, 1)
DEFAULT_MAX_VECTORS = 8
ENV_VAR = "DATAGEN_SEPARABILITY"
"""Set to 0 / false / no / off to skip the check in ``preview`` and ``generate``."""
RESULT_FILE = "separability.json"
"""Where ``datagen vectors separability LIB`` stores its results, inside the library folder."""
DOCS = "docs/vectors.md#separability"


class ClassSeparabilityWarning(UserWarning):
    """Two classes of a recipe paint vectors whose renders cannot be told apart."""


@dataclass
class InseparablePair:
    """Classes ``a`` and ``b`` (in report order) that cannot be told apart.

    ``a_as_b``: fraction of ``a``'s renders classified as ``b``; ``b_as_a`` the reverse.
    ``shared``: vector ids painted by both; ``-1`` stands for identical tensors under different ids.
    """

    a: str
    b: str
    a_as_b: float
    b_as_a: float
    shared: list[int] = field(default_factory=list)

    @property
    def confusion(self) -> float:
        return self.a_as_b + self.b_as_a

    def describe(self) -> str:
        """``31% of 'dense' renders look like 'stroma'`` (+ shared vectors), the worse direction first."""
        parts = []
        if self.shared:
            ids = [i for i in self.shared if i >= 0]
            what = []
            if ids:
                what.append(f"vector{'s' if len(ids) > 1 else ''} " + ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else ""))
            if -1 in self.shared:
                what.append("identical vectors")
            parts.append("they share " + " and ".join(what))
        if self.b_as_a >= self.a_as_b:
            worse, other, rate = self.b, self.a, self.b_as_a
        else:
            worse, other, rate = self.a, self.b, self.a_as_b
        if rate > 0 or not parts:
            parts.append(f"{rate:.0%} of {worse!r} renders look like {other!r}")
        return "; ".join(parts)


@dataclass
class SeparabilityReport:
    """Result of :func:`measure_separability`. Matrices are indexed like ``classes``."""

    classes: list[str]
    confusion: list[list[float]]
    """Row-normalised: confusion[i][j] = fraction of class i's renders classified as class j."""
    counts: list[list[int]]
    """The same as render counts."""
    accuracy: dict[str, float]
    centroid_similarity: list[list[float]]
    """Cosine similarity of the class centroids (z-scored descriptors, all renders)."""
    pairs: list[InseparablePair]
    vectors: dict[str, list[int]]
    """Vector ids measured per class (after the ``max_vectors`` cap; row positions without ids)."""
    num_vectors: dict[str, int]
    """Vectors per class before the cap."""
    threshold: float = DEFAULT_THRESHOLD
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No inseparable pair."""
        return not self.pairs

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / max(len(self.accuracy), 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for p, pd in zip(self.pairs, d["pairs"]):
            pd["confusion"] = round(p.confusion, 6)
        d["mean_accuracy"] = round(self.mean_accuracy, 6)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SeparabilityReport":
        keys = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in d.items() if k in keys}
        data["pairs"] = [InseparablePair(**{k: v for k, v in p.items() if k in ("a", "b", "a_as_b", "b_as_a", "shared")})
                         for p in d.get("pairs", [])]
        return cls(**data)

    def format(self, *, title: str | None = None) -> str:
        """A short text table: confusion in % (rows true, columns predicted), accuracy, pairs."""
        names = self.classes
        heads = _short_names(names)
        width = max(4, min(10, max((len(n) for n in heads), default=4)))
        row_w = max(6, max((len(n) for n in names), default=6))
        lines = [title or "class separability: nearest class centroid, leave one vector out "
                 "(rows: true class, columns: predicted, % of renders)"]
        lines.append(" " * row_w + " " + " ".join(f"{n[:width]:>{width}}" for n in heads) + "   acc")
        for i, n in enumerate(names):
            cells = " ".join(f"{100 * v:>{width}.0f}" for v in self.confusion[i])
            lines.append(f"{n:<{row_w}} {cells}  {100 * self.accuracy[n]:>3.0f}%")
        if self.settings.get("method") == "painted":
            what = f"{sum(len(v) for v in self.vectors.values())} vectors painted in {self.settings.get('num')} mosaics"
        else:
            what = f"{sum(len(v) for v in self.vectors.values())} vectors x {len(self.settings.get('seeds', [])) or '?'} seeds"
        lines.append(f"mean accuracy {100 * self.mean_accuracy:.0f}%; {what} in {self.seconds:.1f} s")
        if self.pairs:
            lines.append(f"inseparable (confusion a->b + b->a >= {self.threshold:g}, or shared vectors):")
            for p in sorted(self.pairs, key=lambda p: -p.confusion):
                lines.append(f"  {p.a!r} ~ {p.b!r}: {p.describe()} (sum {100 * p.confusion:.0f}%)")
        else:
            lines.append(f"every pair separable (confusion a->b + b->a < {self.threshold:g})")
        return "\n".join(lines)


def _short_names(names: Sequence[str]) -> list[str]:
    """Column headers: names without a prefix common to all (``cluster 0`` -> ``0``)."""
    prefix = os.path.commonprefix(list(names)) if len(names) > 1 else ""
    prefix = prefix[: prefix.rfind(" ") + 1] if " " in prefix else ""
    return [n[len(prefix):] or n for n in names]


# -- the measurement ------------------------------------------------------------------
_EXTRACTORS: dict[str, FeatureExtractor] = {}
_LOCK = threading.Lock()


def default_extractor(device: torch.device | str = "cpu") -> FeatureExtractor:
    """EfficientNet-Lite0 read at the tileability layer, built once per process and device."""
    key = str(device)
    with _LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = EfficientNetLite0([TILEABILITY_LAYER]).to(device).eval()
        return _EXTRACTORS[key]


def pick_evenly(count: int, cap: int) -> list[int]:
    """``min(count, cap)`` positions spread evenly over ``0..count-1`` (first and last included)."""
    if count <= cap:
        return list(range(count))
    if cap == 1:
        return [0]
    return sorted({round(i * (count - 1) / (cap - 1)) for i in range(cap)})


def measure_size(gen: Generator, size: int | Sequence[int] | None = DEFAULT_SIZE) -> tuple[int, int]:
    """The render size: the generator's fixed size if it has one, else ``size`` rounded up to its
    size multiple."""
    if gen.fixed_size is not None:
        return tuple(gen.fixed_size)  # type: ignore[return-value]
    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in (size or DEFAULT_SIZE))
    m = max(1, int(gen.size_multiple))
    return tuple(max(m, -(-int(s) // m) * m) for s in hw)  # type: ignore[return-value]


def _descriptors(images: torch.Tensor, extractor: FeatureExtractor, layer: str, batch_size: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for k in range(0, len(images), batch_size):
            x = resize_for_features(images[k:k + batch_size].to(next(extractor.parameters()).device))
            f = extractor(x)[layer].float()
            out.append(torch.cat([f.mean(dim=(2, 3)), f.flatten(2).std(dim=2)], dim=1).double().cpu())
    return torch.cat(out)


def _shared(a_ids: Sequence[int] | None, b_ids: Sequence[int] | None, a: torch.Tensor, b: torch.Tensor) -> list[int]:
    """Vector ids painted by both classes, plus one ``-1`` when they also paint identical tensors
    under different ids (or without ids)."""
    shared = sorted(set(a_ids) & set(b_ids)) if a_ids is not None and b_ids is not None else []
    if len(a) and len(b):
        same = (a[:, None, :] == b[None, :, :]).all(dim=2).nonzero().tolist()
        if any(a_ids is None or b_ids is None or a_ids[i] != b_ids[j] for i, j in same):
            shared.append(-1)
    return shared


def confusion_from_predictions(true: Sequence[int], pred: Sequence[int], n: int) -> tuple[list[list[int]], list[list[float]]]:
    """Counts (n, n) and the row-normalised confusion matrix (an empty row stays 0)."""
    counts = [[0] * n for _ in range(n)]
    for t, p in zip(true, pred):
        counts[t][p] += 1
    conf = [[c / max(sum(row), 1) for c in row] for row in counts]
    return counts, conf


def inseparable_pairs(classes: Sequence[str], confusion: Sequence[Sequence[float]], *, threshold: float = DEFAULT_THRESHOLD,
                      shared: Mapping[tuple[int, int], list[int]] | None = None) -> list[InseparablePair]:
    """Pairs (i < j) with confusion[i][j] + confusion[j][i] >= threshold or shared vectors."""
    out = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            s = (shared or {}).get((i, j), [])
            if confusion[i][j] + confusion[j][i] >= threshold or s:
                out.append(InseparablePair(classes[i], classes[j], round(float(confusion[i][j]), 6),
                                           round(float(confusion[j][i]), 6), list(s)))
    return out


def measure_separability(
    generator: Generator,
    layer: str | None,
    classes: Mapping[str, torch.Tensor],
    *,
    ids: Mapping[str, Sequence[int]] | None = None,
    size: int | Sequence[int] | None = DEFAULT_SIZE,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    max_vectors: int = DEFAULT_MAX_VECTORS,
    threshold: float = DEFAULT_THRESHOLD,
    device: torch.device | str | None = None,
    extractor: FeatureExtractor | None = None,
    extractor_layer: str | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> SeparabilityReport:
    """How distinguishable are the renders of each class's vectors from the other classes'?

    ``classes``: class name -> vectors (k, C) painted at ``layer`` (None: the generator's
    default layer). ``ids``: class name -> the k vector ids (for the report and the shared-vector
    rule; identical tensors count as shared either way). Each class is capped at
    ``max_vectors`` vectors, spread evenly over its rows. Renders are full-replace at ``size``
    (rounded up to the generator's size multiple; a fixed-size generator uses its own size) for
    each of ``seeds`` (an int n means 0..n-1; seed s uses the same inputs as
    :func:`~datagen.vectors.visualize`). ``extractor`` defaults to EfficientNet-Lite0 read at
    ``blocks.4`` (``extractor_layer``, default its first layer). ``device``: where the
    extractor runs (default: the generator's device). See the module docstring for the method.
    """
    t0 = time.perf_counter()
    if len(classes) < 2:
        raise DatagenError(f"separability needs at least two classes, got {len(classes)}")
    if max_vectors < 1:
        raise DatagenError(f"max_vectors must be >= 1, got {max_vectors}")
    layer = resolve_layer_name(generator, layer)
    hw = measure_size(generator, size)
    seed_list = resolve_seeds(seeds)
    names = list(classes)
    full = {n: torch.as_tensor(classes[n]).detach().float().cpu() for n in names}
    for n, v in full.items():
        if v.ndim != 2 or len(v) == 0:
            raise DatagenError(f"class {n!r}: expected a non-empty (k, C) tensor of vectors, got shape {tuple(v.shape)}")
        if ids is not None and len(ids.get(n, ())) != len(v):
            raise DatagenError(f"class {n!r}: {len(ids.get(n, ()))} ids for {len(v)} vectors")
    all_ids = {n: [int(i) for i in ids[n]] for n in names} if ids is not None else None

    # shared vectors are judged on the full sets, before the cap
    shared: dict[tuple[int, int], list[int]] = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            s = _shared(all_ids[names[i]] if all_ids else None, all_ids[names[j]] if all_ids else None,
                        full[names[i]], full[names[j]])
            if s:
                shared[(i, j)] = s

    picked = {n: pick_evenly(len(full[n]), max_vectors) for n in names}
    vecs = torch.cat([full[n][picked[n]] for n in names])
    owner = torch.cat([torch.full((len(picked[n]),), c) for c, n in enumerate(names)])
    imgs = visualize(generator, vecs, layer, mode="full", seeds=seed_list, size=hw, batch_size=batch_size,
                     progress=progress, dtype="float")  # (V, S, 3, H, W) in [-1, 1]
    v_count, s_count = imgs.shape[:2]

    if extractor is None:
        extractor = default_extractor(device if device is not None else generator.device)
    else:
        extractor = extractor.to(device if device is not None else generator.device).eval()
    feat_layer = extractor_layer or extractor.layers[0]
    if feat_layer not in extractor.layers:
        raise DatagenError(f"the feature extractor reads layers {', '.join(extractor.layers)}, not {feat_layer!r}")
    desc = _descriptors(imgs.reshape(v_count * s_count, *imgs.shape[2:]), extractor, feat_layer, batch_size)
    desc = (desc - desc.mean(0)) / desc.std(0, unbiased=False).clamp_min(1e-8)  # z-score each dimension

    unit = torch.arange(v_count).repeat_interleave(s_count)   # which vector each render shows
    true = owner[unit]                                         # its class
    n_cls = len(names)
    class_sum = torch.zeros(n_cls, desc.shape[1], dtype=torch.float64).index_add_(0, true, desc)
    class_cnt = torch.bincount(true, minlength=n_cls).double()
    unit_sum = torch.zeros(v_count, desc.shape[1], dtype=torch.float64).index_add_(0, unit, desc)
    unit_cnt = torch.bincount(unit, minlength=v_count).double()
    units_per_class = torch.bincount(owner, minlength=n_cls)

    centroids = (class_sum / class_cnt[:, None]).unsqueeze(0).repeat(len(desc), 1, 1)  # (N, n_cls, D)
    for r in range(len(desc)):
        c, u = int(true[r]), int(unit[r])
        if units_per_class[c] > 1:      # leave the render's vector out of its own class
            centroids[r, c] = (class_sum[c] - unit_sum[u]) / (class_cnt[c] - unit_cnt[u])
        elif class_cnt[c] > 1:          # one vector: leave only this render out
            centroids[r, c] = (class_sum[c] - desc[r]) / (class_cnt[c] - 1)
    sims = F.cosine_similarity(desc[:, None, :], centroids, dim=2, eps=1e-12)
    pred = sims.argmax(dim=1)
    counts, conf = confusion_from_predictions(true.tolist(), pred.tolist(), n_cls)
    full_centroids = class_sum / class_cnt[:, None]
    csim = F.cosine_similarity(full_centroids[:, None, :], full_centroids[None, :, :], dim=2, eps=1e-12)

    r6 = lambda x: round(float(x), 6)  # noqa: E731
    feat_name = type(extractor).__name__
    return SeparabilityReport(
        classes=names,
        confusion=[[r6(v) for v in row] for row in conf],
        counts=counts,
        accuracy={n: r6(conf[i][i]) for i, n in enumerate(names)},
        centroid_similarity=[[r6(v) for v in row] for row in csim.tolist()],
        pairs=inseparable_pairs(names, conf, threshold=threshold, shared=shared),
        vectors={n: ([all_ids[n][p] for p in picked[n]] if all_ids else picked[n]) for n in names},
        num_vectors={n: len(full[n]) for n in names},
        threshold=threshold,
        settings={
            "layer": layer, "size": list(hw), "seeds": seed_list, "max_vectors": max_vectors,
            "extractor": "efficientnet-lite0" if isinstance(extractor, EfficientNetLite0) else feat_name,
            "extractor_layer": feat_layer, "descriptor": "per-channel spatial mean and std, z-scored",
            "classifier": "nearest class centroid (cosine), leave one vector out",
        },
        seconds=round(time.perf_counter() - t0, 3),
    )


def measure_painted_separability(
    generator: Generator,
    layer: str | None,
    classes: Mapping[str, torch.Tensor],
    *,
    ids: Mapping[str, Sequence[int]] | None = None,
    size: int | Sequence[int] = 256,
    num: int = 32,
    seed: int = 0,
    steps: int = 300,
    threshold: float = DEFAULT_THRESHOLD,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> SeparabilityReport:
    """Can a pixel model tell the classes apart *painted side by side*? (``datagen qc`` on mosaics)

    Full-replace renders (:func:`measure_separability`) compare whole textures; painted
    next to each other two classes can still look alike to a segmentation model (one
    spreads into the other, or both draw the same tissue at the scale a model sees).
    This renders ``num`` Voronoi mosaics of the classes at ``size`` (each region one
    vector of its class, new noise per sample), keeps the interiors of the painted cells
    (pixels more than one paint cell from a class boundary) as labels, and runs
    :func:`datagen.qc.qc_arrays` on them: its confusion matrix (rows = painted class,
    row-normalised) is the report's. Slower than the feature measure (about a minute on
    a CPU), so it is the library report's figure, not the per-run warning.
    """
    from ..layouts import parse_layout
    from ..masks import cell_boundary_distance
    from ..qc import qc_arrays
    from ..render import PaintClass, Renderer

    t0 = time.perf_counter()
    if len(classes) < 2:
        raise DatagenError(f"separability needs at least two classes, got {len(classes)}")
    layer = resolve_layer_name(generator, layer)
    hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    names = list(classes)
    pcs = [PaintClass(k + 1, n, vectors=classes[n].float()) for k, n in enumerate(names)]
    layout = parse_layout({"kind": "voronoi", "classes": {n: 1.0 for n in names}, "cells": [4, 10]})
    r = Renderer(generator, pcs, layout, size=hw, seed=seed, layer=layer, mask_mode="cells", ignore_index=None)
    idx = list(range(num))
    layouts = np.stack([r.make_layout(i) for i in idx])
    images = np.concatenate([r.render(idx[k:k + 8], layouts[k:k + 8]) for k in range(0, num, 8)])
    masks = np.stack([r.cells_mask(lay) for lay in layouts])
    for m in masks:
        m[cell_boundary_distance(m) <= max(r.stride)] = 255
    rep = qc_arrays(images, masks, class_names={k + 1: n for k, n in enumerate(names)}, ignore_index=255,
                    seed=seed, steps=steps, device=device or "cpu", progress=progress)
    conf = [[0.0 if np.isnan(v) else float(v) for v in row] for row in rep.confusion_normalized]
    counts = rep.confusion.astype(int).tolist()
    shared: dict[tuple[int, int], list[int]] = {}
    if ids:
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                common = sorted(set(ids.get(a, ())) & set(ids.get(names[j], ())))
                if common:
                    shared[(i, j)] = common
    r6 = lambda x: round(float(x), 6)  # noqa: E731
    return SeparabilityReport(
        classes=names,
        confusion=[[r6(v) for v in row] for row in conf],
        counts=counts,
        accuracy={n: r6(conf[i][i]) for i, n in enumerate(names)},
        centroid_similarity=[],
        pairs=inseparable_pairs(names, conf, threshold=threshold, shared=shared),
        vectors={n: list(ids[n]) if ids and n in ids else list(range(len(classes[n]))) for n in names},
        num_vectors={n: len(classes[n]) for n in names},
        threshold=threshold,
        settings={"method": "painted", "layer": layer, "size": list(hw), "num": num, "seed": seed, "steps": steps,
                  "classifier": "datagen qc pixel model on painted Voronoi mosaics, cell interiors",
                  "iou": {n: (None if np.isnan(v) else r6(v)) for n, v in zip(names, rep.iou)}},
        seconds=round(time.perf_counter() - t0, 3),
    )


# -- libraries and recipes --------------------------------------------------------------
def library_classes(library: "VectorLibrary", by: str = "label") -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """Class name -> vectors and ids, grouped by ``label`` (labelled vectors only) or ``cluster``
    (class names ``cluster 0``, ``cluster 1``, ...)."""
    groups: dict[str, list[int]] = {}
    if by == "label":
        for r in library.records:
            if r.label is not None:
                groups.setdefault(r.label, []).append(r.id)
        groups = dict(sorted(groups.items()))
    elif by == "cluster":
        for r in library.records:
            if r.cluster is not None:
                groups.setdefault(f"cluster {r.cluster}", []).append(r.id)
        groups = dict(sorted(groups.items(), key=lambda kv: int(kv[0].split()[1])))
    else:
        raise DatagenError(f"group vectors by 'label' or 'cluster', not {by!r}")
    return {n: library.get(i) for n, i in groups.items()}, groups


def recipe_classes(recipe: "Recipe", library: "VectorLibrary") -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The recipe's painted classes (``keep`` classes skipped) -> vectors and ids, in recipe order."""
    from ..recipe import resolve_class_vector_ids

    resolved = resolve_class_vector_ids(recipe, library)
    ids = {c.name: sorted(int(i) for i in resolved[c.name][0]) for c in recipe.classes if not c.keep and c.name in resolved}
    return {n: library.get(i) for n, i in ids.items()}, ids


def _disabled() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off")


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
    with _LOCK:
        report = _CACHE.get(key)
    if report is None:
        report = measure_separability(generator, layer, vecs, ids=ids, size=size, seeds=seeds, max_vectors=max_vectors,
                                      threshold=threshold, extractor=extractor)
        with _LOCK:
            _CACHE[key] = report
    if warn:
        for p in report.pairs:
            warnings.warn(pair_message(p, recipe, recipe.library_path), ClassSeparabilityWarning, stacklevel=2)
    return report


def clear_cache() -> None:
    """Forget cached measurements (tests)."""
    with _LOCK:
        _CACHE.clear()


def save_result(library_dir: str | os.PathLike, section: str, report: SeparabilityReport) -> Path:
    """Store ``report`` as ``section`` of ``LIBRARY/separability.json`` (other sections kept), atomically."""
    import json

    path = Path(library_dir) / RESULT_FILE
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
    if not isinstance(data, dict) or data.get("format") != "datagen-separability":
        data = {"format": "datagen-separability", "version": 1, "sections": {}}
    data.setdefault("sections", {})[section] = report.to_dict()
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


def load_result(library_dir: str | os.PathLike, section: str = "labels") -> SeparabilityReport | None:
    """``section`` of ``LIBRARY/separability.json``, or None when absent or unreadable."""
    import json

    path = Path(library_dir) / RESULT_FILE
    try:
        data = json.loads(path.read_text())
        return SeparabilityReport.from_dict(data["sections"][section])
    except (OSError, ValueError, KeyError, TypeError):
        return None


__all__ = [
    "ClassSeparabilityWarning", "DEFAULT_THRESHOLD", "ENV_VAR", "InseparablePair", "RESULT_FILE", "SeparabilityReport",
    "check_recipe_separability", "clear_cache", "confusion_from_predictions", "default_extractor", "inseparable_pairs",
    "library_classes", "load_result", "measure_separability", "measure_size", "pair_message", "pick_evenly",
    "recipe_classes", "save_result",
]
