"""Instance maps derived from class masks: one id per connected region of one class.

Written beside each mask when a dataset is generated with ``instances=True``. The map is a
pure function of the mask, so it never needs its own hash: the manifest's sample sha256
(image + mask) pins it, and ``datagen validate`` recomputes it to check the stored one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: 4-connectivity: pixels that touch only at a corner are separate regions (as scipy's default).
CONNECTIVITY = 4
INSTANCE_DTYPE = np.uint32


def instance_map(mask: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """uint32 (H,W) map of ``mask`` (H,W): 0 at ``ignore_index`` pixels, else the id of the pixel's region.

    Regions are the 4-connected components of each class; ids count up from 1 by class id
    (ascending), then by raster order of each region's first pixel, so the same mask always
    gives the same map.
    """
    mask = np.asarray(mask)
    out = np.zeros(mask.shape, dtype=INSTANCE_DTYPE)
    next_id = 1
    for cid in np.unique(mask):
        if ignore_index is not None and cid == ignore_index:
            continue
        labels, n = ndimage.label(mask == cid)
        region = labels > 0
        out[region] = labels[region] + (next_id - 1)
        next_id += n
    return out


def instance_maps(masks: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """:func:`instance_map` of each mask of a (B,H,W) stack: (B,H,W) uint32."""
    out = np.empty(np.shape(masks), dtype=INSTANCE_DTYPE)
    for j, mask in enumerate(masks):
        out[j] = instance_map(mask, ignore_index)
    return out


__all__ = ["CONNECTIVITY", "INSTANCE_DTYPE", "instance_map", "instance_maps"]
