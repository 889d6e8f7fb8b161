"""Layouts on whole-slide canvases: region sizes kept in pixels, and a warning when a canvas has few regions.

A layout's sizes are fractions of the map it draws, which suits training samples of one size
but not a canvas: the demo recipe's 4-10 Voronoi cells, drawn over a 2048 px canvas, make a
few huge regions. :func:`scale_layout_for_canvas` keeps every size at what it measures, in
pixels, in the recipe's own samples; :func:`warn_few_regions` flags a canvas whose layout
still came out as a handful of regions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .base import LayoutSpec, scale_range
from .islands import IslandsLayout

#: Fewer regions than this on a canvas triggers :class:`FewRegionsWarning`.
MIN_REGIONS = 8


class FewRegionsWarning(UserWarning):
    """A canvas layout came out as very few regions (its region sizes are too large for the canvas)."""


def scale_layout_for_canvas(spec: LayoutSpec, recipe_size: Sequence[int], *, layout_scale: float = 1) -> LayoutSpec:
    """The layout to draw at ``1 / layout_scale`` of a canvas so its regions measure, in canvas pixels,
    what they measure in the recipe's samples of ``recipe_size`` (height, width).

    Fractions and counts without ``reference_px`` refer to the recipe's short side (``reference_px``
    becomes that, so a larger canvas gets more regions of the same size, not larger ones);
    everything in pixels (``reference_px``, ``smooth``, ``min_region``, nest ``rim``) is divided by
    ``layout_scale`` (areas by its square), since one layout pixel covers ``layout_scale`` canvas
    pixels. A ``mask`` layout keeps stretching over the whole canvas.
    """
    f = float(layout_scale)
    if not f > 0:
        raise ValueError(f"layout_scale must be > 0, got {layout_scale}")
    update: dict = {"smooth": scale_range(spec.smooth, 1 / f), "min_region": int(round(spec.min_region / f**2))}
    if spec.LENGTH_FIELDS or spec.COUNT_FIELDS:
        update["reference_px"] = (spec.reference_px or min(int(s) for s in recipe_size)) / f
    if isinstance(spec, IslandsLayout) and spec.nest:
        update["nest"] = {p: n.model_copy(update={"rim": int(round(n.rim / f))}) for p, n in spec.nest.items()}
    return spec.model_copy(update=update)


def count_regions(labels: np.ndarray) -> int:
    """Number of 4-connected regions of one class id in a label map (all classes together)."""
    labels = np.asarray(labels)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)) if labels.dtype == np.uint8 \
        else np.unique(labels)
    return int(sum(ndimage.label(labels == v)[1] for v in present))


def warn_few_regions(labels: np.ndarray, *, what: str = "the canvas layout", minimum: int = MIN_REGIONS) -> int:
    """Count the regions of ``labels`` and issue :class:`FewRegionsWarning` when there are fewer than
    ``minimum``; returns the count. ``what`` names the map in the message (e.g. "the 2048x2048 canvas")."""
    n = count_regions(labels)
    if n < minimum:
        warnings.warn(FewRegionsWarning(
            f"{what} has only {n} region{'s' if n != 1 else ''} (fewer than {minimum}): its layout's regions are "
            "about as large as the canvas. Give the layout `reference_px` (sizes in pixels, docs/layouts.md"
            "#sizes-in-pixels) with a value smaller than the canvas, raise its counts (cells, count), or pick "
            "a layout with smaller regions (e.g. the tissue-mix preset)"), stacklevel=2)
    return n
