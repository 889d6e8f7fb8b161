"""``kind: voronoi`` — a mosaic of polygonal cells, each painted with one class."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
from pydantic import Field
from scipy.spatial import cKDTree

from .base import FloatRange, IntRange, LayoutSpec, Weights, draw, draw_int, id_lut, range_of, weight_probs
from .noise import fractal_noise
from .postprocess import render_coarse_to_fine

# Points per nearest-seed block: keeps the (points x seeds) distance matrix small.
_CHUNK = 1 << 21
# Above this many seeds a k-d tree beats the distance matrix (whole-slide layouts with
# sizes in pixels have thousands of cells).
_TREE_SEEDS = 512


def nearest_seed(py: np.ndarray, px: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Index of the nearest seed for each point; ``seeds`` is ``(K, 2)`` as (y, x).

    Why a matrix product: ``argmin |p - s|^2 = argmin (|s|^2 - 2 p.s)``, one
    BLAS call for all points and seeds instead of K passes over the points;
    with many seeds (> 512) a k-d tree instead, whose cost grows with log K.
    """
    k = len(seeds)
    if k > _TREE_SEEDS:
        pts = np.stack([np.asarray(py, dtype=np.float64), np.asarray(px, dtype=np.float64)], axis=1)
        return cKDTree(seeds).query(pts)[1].astype(np.int32)
    s = np.empty((3, k), dtype=np.float32)
    s[0] = -2.0 * seeds[:, 0]
    s[1] = -2.0 * seeds[:, 1]
    s[2] = (seeds**2).sum(axis=1)
    out = np.empty(len(py), dtype=np.int32)
    step = max(1, _CHUNK // k)
    for i in range(0, len(py), step):
        p = np.empty((min(step, len(py) - i), 3), dtype=np.float32)
        p[:, 0] = py[i:i + step]
        p[:, 1] = px[i:i + step]
        p[:, 2] = 1.0
        out[i:i + step] = np.argmin(p @ s, axis=1)
    return out


def _lloyd(seeds: np.ndarray, size: tuple[int, int], iters: int) -> np.ndarray:
    """Move each seed to its cell's centroid (on a coarse grid): more even, rounder cells."""
    h, w = size
    n = max(64, int(math.ceil(2 * math.sqrt(len(seeds)))))  # a few grid points per cell
    gy = (np.arange(n) + 0.5) * h / n
    gx = (np.arange(n) + 0.5) * w / n
    py, px = (a.ravel() for a in np.meshgrid(gy, gx, indexing="ij"))
    for _ in range(iters):
        idx = nearest_seed(py, px, seeds)
        cnt = np.bincount(idx, minlength=len(seeds))
        sy = np.bincount(idx, weights=py, minlength=len(seeds))
        sx = np.bincount(idx, weights=px, minlength=len(seeds))
        ok = cnt > 0
        seeds = seeds.copy()
        seeds[ok, 0] = sy[ok] / cnt[ok]
        seeds[ok, 1] = sx[ok] / cnt[ok]
    return seeds


class VoronoiLayout(LayoutSpec):
    """Patches of tissue side by side: Voronoi cells of random seed points.

    Each cell gets a class drawn independently with probability proportional to
    its weight, so on average each class covers its weight's share of the area
    (neighbouring cells of the same class merge into one region).
    """

    kind: Literal["voronoi"] = "voronoi"
    LENGTH_FIELDS = ("warp", "warp_scale")
    COUNT_FIELDS = {"cells": 1}

    #: ``{class: weight}``: the chance of a cell getting each class; left out: the recipe's classes by their ``weight``.
    classes: Weights | None = None
    #: Number of seed points (cells) per map.
    cells: Annotated[IntRange, range_of(lo=1, hi=10000, integer=True)] = (6, 24)
    #: Lloyd relaxation steps: 0 = raw random cells, 1-3 = more even, rounder cells.
    relax: Annotated[int, Field(ge=0, le=20, strict=True)] = 0
    #: Wobble of the cell borders: displacement amplitude as a fraction of the short side.
    warp: Annotated[FloatRange, range_of(lo=0.0, hi=0.5)] = 0.0
    #: Size of the wobble's features, as a fraction of the short side.
    warp_scale: Annotated[FloatRange, range_of(lo=0.0, hi=4.0, lo_open=True)] = 0.15

    def class_refs(self) -> list[tuple[str, str]]:
        return [(f"classes.{n}", n) for n in self.classes or {}]

    def _draw(self, rng: np.random.Generator, size: tuple[int, int],
              class_ids: Mapping[str, int]) -> np.ndarray:
        h, w = size
        names = list(self.classes)
        lut = id_lut(names, class_ids)
        n = draw_int(rng, self.cells)
        seeds = (rng.random((n, 2)) * np.array([h, w])).astype(np.float64)
        if self.relax:
            seeds = _lloyd(seeds, size, self.relax)
        cell_class = rng.choice(len(names), size=n, p=weight_probs(self.classes))
        seeds32 = seeds.astype(np.float32)

        amp = draw(rng, self.warp) * min(h, w)
        if amp > 0:
            dy, dx = fractal_noise(rng, size, scale=draw(rng, self.warp_scale) * min(h, w), octaves=3,
                                    count=2) * np.float32(amp)

            def label_at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
                return nearest_seed(ys + dy[ys, xs], xs + dx[ys, xs], seeds32)
        else:
            def label_at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
                return nearest_seed(ys.astype(np.float32), xs.astype(np.float32), seeds32)

        step = max(1, min(h, w) // 128)
        cells = render_coarse_to_fine(label_at, size, step)
        return lut[cell_class][cells]
