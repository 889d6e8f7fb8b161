"""``kind: noise`` — class regions from thresholded multi-octave noise, plus the noise itself.

The noise is fractal *value noise*: per octave a low-resolution lattice of
Gaussian values, interpolated with a cubic B-spline, octaves summed with
amplitude ``persistence**o``. Why our own instead of a noise package: the
interpolation is separable, so a whole field (all octaves, all classes) is
one batched matrix product ``Wy @ G @ Wx.T`` that BLAS does in a few ms even at
1024 px on one core. The candidates on PyPI were either pure-Python/per-pixel
(``noise``, ``opensimplex`` without numba, ``perlin-noise``) or a young
compiled wrapper (``pyfastnoiselite`` 0.0.x, measured no faster at 1024 px
than this), and none adds anything the label maps need (Perlin/simplex
directional artefacts do not matter after thresholding). The B-spline gives
C2-smooth, blob-like fields without the lattice ringing of cubic zoom.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from .base import FloatRange, LayoutSpec, Weights, draw, id_lut, range_of, weight_probs

# Mean over positions of sum_j B3(u - j)^2 (= integral of B3^2 = 151/315): the
# variance a unit-variance lattice keeps per axis after B-spline interpolation.
_BSPLINE_VAR_1D = 151.0 / 315.0
# Octaves finer than this lattice spacing (px) add nothing visible.
_MIN_SPACING = 1.5


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    out = np.zeros_like(t)
    a = t < 1
    b = (t >= 1) & (t < 2)
    out[a] = (4.0 - 6.0 * t[a] ** 2 + 3.0 * t[a] ** 3) / 6.0
    out[b] = (2.0 - t[b]) ** 3 / 6.0
    return out


def _interp_matrix(n: int, spacing: float, phase: float) -> np.ndarray:
    """``(n, g)`` weights that turn a lattice of ``g`` values into ``n`` smoothly interpolated samples."""
    u = np.arange(n, dtype=np.float64) / spacing + phase
    g = int(math.floor(u[-1])) + 4
    j = np.arange(g, dtype=np.float64) - 1.0
    return _bspline3(u[:, None] - j[None, :]).astype(np.float32)


def _octave_spacings(scale: float, octaves: int) -> list[float]:
    out = []
    for o in range(max(1, octaves)):
        sp = scale / 2.0**o
        if o > 0 and sp < _MIN_SPACING:
            break
        out.append(max(sp, _MIN_SPACING))
    return out


def fractal_noise(rng: np.random.Generator, size: tuple[int, int], *, scale: float, octaves: int = 4,
                  persistence: float = 0.5, count: int = 1) -> np.ndarray:
    """``count`` independent ``(H, W)`` float32 noise fields, about zero mean and unit variance.

    ``scale`` is the lattice spacing of the coarsest octave in px (roughly the
    size of the largest blobs); each further octave halves it.
    """
    h, w = size
    wy, gs = [], []
    t_parts = []
    amps = []
    for o, sp in enumerate(_octave_spacings(scale, octaves)):
        my = _interp_matrix(h, sp, float(rng.random()))
        mx = _interp_matrix(w, sp, float(rng.random()))
        amp = persistence**o
        g = rng.standard_normal((count, my.shape[1], mx.shape[1]), dtype=np.float32)
        wy.append(my)
        gs.append(g)
        t_parts.append(np.matmul(g * np.float32(amp), mx.T))  # (count, gy, W)
        amps.append(amp)
    wy_all = np.hstack(wy)  # (H, sum gy)
    t_all = np.concatenate(t_parts, axis=1)  # (count, sum gy, W)
    out = np.matmul(wy_all[None], t_all)  # (count, H, W)
    norm = _BSPLINE_VAR_1D * math.sqrt(sum(a * a for a in amps))
    out *= np.float32(1.0 / norm)
    return out


def noise_1d(rng: np.random.Generator, n: int, *, scale: float, octaves: int = 3,
             persistence: float = 0.5) -> np.ndarray:
    """A 1-D version of :func:`fractal_noise` (wavy boundaries): ``(n,)`` float32, about unit variance."""
    out = np.zeros(n, dtype=np.float32)
    amps = []
    for o, sp in enumerate(_octave_spacings(scale, octaves)):
        m = _interp_matrix(n, sp, float(rng.random()))
        amp = persistence**o
        out += np.float32(amp) * (m @ rng.standard_normal(m.shape[1], dtype=np.float32))
        amps.append(amp)
    out *= np.float32(1.0 / (math.sqrt(_BSPLINE_VAR_1D) * math.sqrt(sum(a * a for a in amps))))
    return out


def _subsample(fields: np.ndarray, target: int = 96) -> np.ndarray:
    """About ``target``x``target`` evenly spaced samples per field, for cheap statistics."""
    _, h, w = fields.shape
    sy, sx = max(1, h // target), max(1, w // target)
    return fields[:, ::sy, ::sx].reshape(fields.shape[0], -1)


def calibrate_argmax(samples: np.ndarray, probs: np.ndarray, sweeps: int = 20, tol: float = 0.005) -> np.ndarray:
    """Offsets ``b`` so that ``argmax(samples + b)`` picks class k for about ``probs[k]`` of samples.

    Why: independent fields per class with a plain argmax give every class
    the same area; shifting each field up or down sets the areas, and fitting
    the shifts on a subsample keeps every map close to the weights (within
    about ``tol`` plus subsampling error), not just the average over maps.
    Coordinate-wise: class k wins a sample exactly when ``b[k]`` exceeds the
    sample's margin ``max_j(s_j + b_j) - s_k``, so the quantile of the margins
    sets its fraction exactly given the others; a few sweeps settle all of them.
    (A gradient-style update oscillates when one big blob flips class at once.)
    """
    k, n = samples.shape
    b = np.zeros(k, dtype=np.float32)
    active = probs > 0
    b[~active] = -np.inf
    act = np.flatnonzero(active)
    if len(act) <= 1:
        return b
    for _ in range(sweeps):
        for c in act:
            shifted = samples + b[:, None]
            shifted[c] = -np.inf
            b[c] = np.quantile(shifted.max(axis=0) - samples[c], probs[c])
        b[act] -= b[act].mean()
        frac = np.bincount(np.argmax(samples + b[:, None], axis=0), minlength=k) / n
        if np.abs(frac - probs).max() < tol:
            break
    return b


class NoiseLayout(LayoutSpec):
    """Organic, blobby regions: thresholded fractal noise.

    ``mode: blobs`` (default) draws one noise field per class and paints each
    pixel with the class whose field is highest, after shifting the fields so
    that area fractions match ``classes`` weights in every map; any class can
    touch any other. ``mode: levels`` thresholds a single field at quantiles:
    classes become nested contour bands in the order they are listed (the
    first class at the field's lows, the last at its highs), with exact area
    fractions.
    """

    kind: Literal["noise"] = "noise"
    LENGTH_FIELDS = ("scale",)

    #: ``{class: weight}``: the area fraction of each class (weights are relative); left out: the
    #: recipe's classes by their ``weight``.
    classes: Weights | None = None
    #: ``blobs`` (per-class fields + argmax) or ``levels`` (one field, quantile thresholds).
    mode: Literal["blobs", "levels"] = "blobs"
    #: Size of the largest features, as a fraction of the image's short side.
    scale: Annotated[FloatRange, range_of(lo=0.0, hi=4.0, lo_open=True)] = (0.15, 0.35)
    #: Number of noise octaves (each adds detail at half the size).
    octaves: Annotated[int, Field(ge=1, le=8, strict=True)] = 4
    #: Amplitude ratio between successive octaves: higher = more ragged outlines.
    persistence: Annotated[FloatRange, range_of(lo=0.0, hi=1.0)] = 0.5

    def class_refs(self) -> list[tuple[str, str]]:
        return [(f"classes.{n}", n) for n in self.classes or {}]

    def _draw(self, rng: np.random.Generator, size: tuple[int, int],
              class_ids: Mapping[str, int]) -> np.ndarray:
        names = list(self.classes)
        lut = id_lut(names, class_ids)
        probs = weight_probs(self.classes)
        scale = draw(rng, self.scale) * min(size)
        persistence = draw(rng, self.persistence)
        if np.count_nonzero(probs) == 1:
            return np.full(size, lut[int(np.argmax(probs))], dtype=np.uint8)
        if self.mode == "levels":
            field = fractal_noise(rng, size, scale=scale, octaves=self.octaves, persistence=persistence)
            cuts = np.quantile(_subsample(field)[0], np.cumsum(probs)[:-1]).astype(np.float32)
            idx = np.searchsorted(cuts, field[0], side="right")
            return lut[idx]
        fields = fractal_noise(rng, size, scale=scale, octaves=self.octaves, persistence=persistence,
                               count=len(names))
        b = calibrate_argmax(_subsample(fields), probs)
        best = fields[0] + b[0]
        idx = np.zeros(size, dtype=np.uint8)
        for k in range(1, len(names)):
            if not np.isfinite(b[k]):
                continue
            cand = fields[k]
            cand += b[k]
            win = cand > best
            np.copyto(best, cand, where=win)
            idx[win] = k
        return lut[idx]
