"""``kind: bands`` — parallel bands (layers) at a random angle, with wavy boundaries."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np

from .base import FloatRange, LayoutSpec, Weights, draw, id_lut, range_of, weight_probs
from .noise import fractal_noise, noise_1d


class BandsLayout(LayoutSpec):
    """Layered tissue (epithelium over stroma over muscle ...): parallel bands across the image.

    Bands run at ``angle`` degrees (0 = horizontal bands stacked top to
    bottom, 90 = vertical), each with its own width drawn from ``width`` and a
    class drawn by weight (neighbouring bands of the same class merge). All
    boundaries share one smooth wave (``wave``, ``wavelength``) so the layers
    stay parallel; ``roughness`` adds independent small-scale wiggle per pixel.
    """

    kind: Literal["bands"] = "bands"
    LENGTH_FIELDS = ("width", "wave", "wavelength", "roughness")

    #: ``{class: weight}``: the chance of a band getting each class; left out: the recipe's classes by their ``weight``.
    classes: Weights | None = None
    #: Direction of the bands in degrees (0 = horizontal).
    angle: Annotated[FloatRange, range_of(lo=-360.0, hi=360.0)] = (0.0, 180.0)
    #: Width of each band as a fraction of the short side (drawn per band when a range).
    width: Annotated[FloatRange, range_of(lo=0.0, hi=4.0, lo_open=True)] = (0.05, 0.25)
    #: Amplitude of the shared boundary wave, as a fraction of the short side.
    wave: Annotated[FloatRange, range_of(lo=0.0, hi=1.0)] = 0.03
    #: Length of the wave's largest features along the bands, as a fraction of the short side.
    wavelength: Annotated[FloatRange, range_of(lo=0.0, hi=8.0, lo_open=True)] = 0.4
    #: Amplitude of extra small-scale boundary wiggle (features of wavelength/4), fraction of short side.
    roughness: Annotated[FloatRange, range_of(lo=0.0, hi=1.0)] = 0.0

    def class_refs(self) -> list[tuple[str, str]]:
        return [(f"classes.{n}", n) for n in self.classes or {}]

    def _draw(self, rng: np.random.Generator, size: tuple[int, int],
              class_ids: Mapping[str, int]) -> np.ndarray:
        h, w = size
        short = min(h, w)
        names = list(self.classes)
        lut = id_lut(names, class_ids)
        a = math.radians(draw(rng, self.angle))
        # t: distance across the bands; s: position along them (both in px).
        ny, nx = math.cos(a), -math.sin(a)
        ys = np.arange(h, dtype=np.float32)[:, None]
        xs = np.arange(w, dtype=np.float32)[None, :]
        corners_t = [y * ny + x * nx for y in (0, h - 1) for x in (0, w - 1)]
        corners_s = [x * ny - y * nx for y in (0, h - 1) for x in (0, w - 1)]
        s0 = min(corners_s)
        t = ys * np.float32(ny) + xs * np.float32(nx)

        wave = draw(rng, self.wave) * short
        wavelength = draw(rng, self.wavelength) * short
        margin = 0.0
        if wave > 0:
            s_idx = (xs * np.float32(ny) - ys * np.float32(nx) - np.float32(s0)).astype(np.int32)
            n_s = int(math.ceil(max(corners_s) - s0)) + 2
            t = t + noise_1d(rng, n_s, scale=wavelength)[s_idx] * np.float32(wave)
            margin += 4.0 * wave
        rough = draw(rng, self.roughness) * short
        if rough > 0:
            t = t + fractal_noise(rng, size, scale=max(wavelength / 4.0, 2.0), octaves=3)[0] * np.float32(rough)
            margin += 4.0 * rough

        # Band edges from below the lowest t to beyond the highest, widths drawn per band.
        t_lo, t_hi = min(corners_t) - margin, max(corners_t) + margin
        edges = [t_lo - rng.random() * draw(rng, self.width) * short]
        while edges[-1] < t_hi:
            edges.append(edges[-1] + max(draw(rng, self.width) * short, 1.0))
        band_class = rng.choice(len(names), size=len(edges) - 1, p=weight_probs(self.classes))
        # A 1 px lookup table from t to class beats searchsorted on every pixel.
        n_t = int(math.ceil(edges[-1] - edges[0])) + 1
        band_of_t = np.searchsorted(np.asarray(edges[1:-1]), edges[0] + np.arange(n_t) + 0.5, side="right")
        t_lut = lut[band_class][band_of_t]
        ti = (t - np.float32(edges[0])).astype(np.int32)
        np.clip(ti, 0, n_t - 1, out=ti)
        return t_lut[ti]
