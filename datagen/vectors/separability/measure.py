"""The two measurements: full-replace renders through a frozen feature extractor (fast, the
per-run check) and painted mosaics through ``datagen qc``'s pixel model (the library report's)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DatagenError
from ...features import TILEABILITY_LAYER, EfficientNetLite0, FeatureExtractor, resize_for_features
from ...models.generator import Generator
from ..extract import resolve_layer_name
from ..visualize import resolve_seeds, visualize
from .report import DEFAULT_THRESHOLD, SeparabilityReport, confusion_from_predictions, inseparable_pairs

if TYPE_CHECKING:  # pragma: no cover
    from ..library import VectorLibrary

DEFAULT_SIZE = (128, 128)
DEFAULT_SEEDS = (0, 1)
DEFAULT_MAX_VECTORS = 8


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
    from ...layouts import parse_layout
    from ...masks import cell_boundary_distance
    from ...qc import qc_arrays
    from ...render import PaintClass, Renderer

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
