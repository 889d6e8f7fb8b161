"""Pure mask-fidelity metrics on label arrays (numpy only, no model).

All functions take *class ids* (the values written in masks, e.g. ``[0, 1, 2, 7]``),
not contiguous indices; row/column ``k`` of a confusion matrix belongs to
``class_ids[k]``.  Pixels whose target value is the ignore value (or any value not
in ``class_ids``) are never counted.

    cm = confusion_matrix(mask, pred, [0, 1, 2], ignore_index=255)   # rows = mask, cols = prediction
    iou = iou_from_confusion(cm)            # nan for a class absent from the masks
    band, interior = band_masks(mask, 8)    # within 8 px of a label change / further away
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from datagen.errors import DatagenError
from datagen.masks import boundary_mask as label_boundaries

__all__ = [
    "class_lut",
    "confusion_matrix",
    "iou_from_confusion",
    "mean_iou",
    "pixel_accuracy",
    "row_normalize",
    "boundary_mask",
    "band_masks",
]


def class_lut(class_ids: Sequence[int]) -> np.ndarray:
    """A 256-entry lookup table mapping a uint8 class id to its index in ``class_ids`` (-1: not a class)."""
    lut = np.full(256, -1, dtype=np.int64)
    for k, c in enumerate(class_ids):
        c = int(c)
        if not 0 <= c <= 255:
            raise DatagenError(f"class id {c} is outside 0..255 (masks are uint8)")
        if lut[c] >= 0:
            raise DatagenError(f"duplicate class id {c}")
        lut[c] = k
    return lut


def confusion_matrix(
    target: np.ndarray,
    pred: np.ndarray,
    class_ids: Sequence[int],
    *,
    ignore_index: int | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Pixel counts ``cm[i, j]``: target class ``class_ids[i]`` predicted as ``class_ids[j]``.

    ``target`` and ``pred`` are integer label arrays of one shape (any number of
    dimensions).  Pixels are left out when the target is ``ignore_index`` or not a
    class id, when the prediction is not a class id, or where ``valid`` (a bool
    array of the same shape, optional) is False.  Returns ``(K, K) int64``.
    """
    target = np.asarray(target)
    pred = np.asarray(pred)
    if target.shape != pred.shape:
        raise DatagenError(f"target shape {target.shape} != prediction shape {pred.shape}")
    k = len(class_ids)
    lut = class_lut(class_ids)
    t = lut[np.clip(target, 0, 255).astype(np.int64)]
    p = lut[np.clip(pred, 0, 255).astype(np.int64)]
    keep = (t >= 0) & (p >= 0) & (target >= 0) & (target <= 255)
    if ignore_index is not None:
        keep &= target != ignore_index
    if valid is not None:
        if valid.shape != target.shape:
            raise DatagenError(f"valid shape {valid.shape} != target shape {target.shape}")
        keep &= valid
    return np.bincount((t[keep] * k + p[keep]).ravel(), minlength=k * k).reshape(k, k).astype(np.int64)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class intersection over union ``TP / (TP + FP + FN)``.

    A class with no target pixels (an empty row) is *absent*: its IoU is ``nan``, not 0,
    even if it was predicted somewhere (those predictions still lower the other
    classes' IoU as false negatives there).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    present = cm.sum(1) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    return iou


def mean_iou(iou: np.ndarray) -> float:
    """Mean over present classes (non-nan entries); ``nan`` when none is present."""
    iou = np.asarray(iou, dtype=np.float64)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of counted pixels whose prediction equals the mask; ``nan`` for an empty matrix."""
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the fraction of a mask class read as each class); empty rows stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    s = cm.sum(1, keepdims=True)
    return np.divide(cm, s, out=np.zeros_like(cm), where=s > 0)


def boundary_mask(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2-D label map whose value differs from at least one 4-neighbour.

    Both sides of a label change are boundary pixels.  Changes against ignored
    pixels count like any other change; the image border is not a boundary.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatagenError(f"boundary_mask needs a 2-D label map, got shape {mask.shape}")
    return label_boundaries(mask)


def band_masks(mask: np.ndarray, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a 2-D label map into ``(band, interior)`` bool maps.

    ``band``: pixels whose Euclidean distance to the nearest boundary pixel
    (:func:`boundary_mask`) is below ``band`` — with boundary pixels on both sides of
    a change that is ``band`` px on each side of it (a ``2 * band`` px wide strip).
    ``interior``: every other pixel.  A map with a single label is all interior.
    Ignored pixels are in one of the two maps but never scored
    (:func:`confusion_matrix` drops them).
    """
    if band < 1:
        raise DatagenError(f"band must be >= 1 px, got {band}")
    b = boundary_mask(mask)
    if not b.any():
        return np.zeros(b.shape, dtype=bool), np.ones(b.shape, dtype=bool)
    dist = ndimage.distance_transform_edt(~b)
    near = dist < band
    return near, ~near
