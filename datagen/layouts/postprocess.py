"""Post-processing shared by every layout kind: boundary smoothing and minimum region size.

Both work on any ``(H, W)`` uint8 class-id map, so a kind only has to draw
regions; how ragged their outlines are and how small they may get is decided
here, the same way for all kinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

# Neighbour offsets used to find what surrounds a region; 4-connectivity,
# matching the components that ndimage.label finds with its default structure.
_SHIFTS = ((slice(1, None), slice(None), slice(None, -1), slice(None)),
           (slice(None, -1), slice(None), slice(1, None), slice(None)),
           (slice(None), slice(1, None), slice(None), slice(None, -1)),
           (slice(None), slice(None, -1), slice(None), slice(1, None)))


def render_coarse_to_fine(label_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
                          size: tuple[int, int], step: int) -> np.ndarray:
    """Evaluate ``label_at(ys, xs)`` on a lattice every ``step`` px, then per pixel only near boundaries.

    Why: per-pixel evaluation (nearest of K Voronoi seeds, argmax of K blurred
    masks) costs K passes over the whole image; regions are large compared to
    ``step``, so only the blocks whose four corners disagree need per-pixel
    work. Exact for convex regions (plain Voronoi cells); for smooth curved
    regions a sliver thinner than ``step`` that touches no lattice point can be
    missed, which is invisible in practice.
    """
    h, w = size
    if step <= 1 or h <= 2 * step or w <= 2 * step:
        ys, xs = np.indices((h, w))
        return label_at(ys.ravel(), xs.ravel()).reshape(h, w)
    # Block i covers rows [i*step, (i+1)*step); its corners lie on the lattice
    # (clamped into the image for the last, partial block).
    gy = np.minimum(np.arange(0, -(-h // step) * step + 1, step), h - 1)
    gx = np.minimum(np.arange(0, -(-w // step) * step + 1, step), w - 1)
    cy, cx = np.meshgrid(gy, gx, indexing="ij")
    c = label_at(cy.ravel(), cx.ravel()).reshape(len(gy), len(gx))
    tl = c[:-1, :-1]
    impure = (tl != c[1:, :-1]) | (tl != c[:-1, 1:]) | (tl != c[1:, 1:])
    out = np.repeat(np.repeat(tl, step, axis=0), step, axis=1)[:h, :w]
    if impure.any():
        bi, bj = np.nonzero(impure)
        oy, ox = np.divmod(np.arange(step * step), step)
        ys = (bi[:, None] * step + oy[None, :]).ravel()
        xs = (bj[:, None] * step + ox[None, :]).ravel()
        keep = (ys < h) & (xs < w)
        ys, xs = ys[keep], xs[keep]
        out[ys, xs] = label_at(ys, xs)
    return np.ascontiguousarray(out)


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-x * x / (2.0 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def _blur_axis(a: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric 1-D convolution with edge padding, as sums of shifted slices.

    Why not scipy.ndimage: its column pass is ~5x slower than this on one core
    (strided access); slices of a padded copy stream through memory instead.
    """
    r = len(k) // 2
    n = a.shape[axis]
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")

    def sl(i: int) -> np.ndarray:
        return p[i:i + n] if axis == 0 else p[:, i:i + n]

    out = sl(r) * k[r]
    tmp = np.empty_like(out)
    for i in range(r):
        np.add(sl(i), sl(2 * r - i), out=tmp)
        tmp *= k[i]
        out += tmp
    return out


def _block_fractions(labels: np.ndarray, present: np.ndarray, f: int) -> np.ndarray:
    """``(K, ceil(H/f), ceil(W/f))`` share of each present class in each f x f block (one bincount)."""
    h, w = labels.shape
    bh, bw = -(-h // f), -(-w // f)
    lut = np.zeros(256, dtype=np.int32)
    lut[present] = np.arange(len(present), dtype=np.int32)
    k = len(present)
    bid = (np.arange(h, dtype=np.int32) // f * (bw * k))[:, None] + (np.arange(w, dtype=np.int32) // f * k)[None, :]
    bid += lut[labels]
    counts = np.bincount(bid.ravel(), minlength=bh * bw * k).reshape(bh, bw, k).astype(np.float32)
    # Blocks cut by the image edge hold fewer pixels.
    counts /= np.maximum(counts.sum(axis=2, keepdims=True), 1.0)
    return np.ascontiguousarray(counts.transpose(2, 0, 1))


def smooth_labels(labels: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth region outlines: Gaussian-blur each class's one-hot mask and take the argmax.

    Why this and not a mode filter: the Gaussian gives round,
    resolution-independent outlines with no square-kernel artefacts; bumps
    and necks narrower than about ``sigma`` px disappear. Only classes present
    are blurred and the last needs no blur of its own (the blurred one-hots
    sum to 1). For large sigma the blur runs on a block-averaged copy and is
    upsampled bilinearly, which keeps the cost nearly flat in sigma.
    """
    if sigma <= 0:
        return labels
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    if len(present) < 2:
        return labels
    h, w = labels.shape
    f = max(1, int(round(sigma / 1.5))) if sigma >= 3.0 else 1
    f = min(f, max(1, min(h, w) // 8))
    low_sigma = math.sqrt(max(sigma * sigma - (f * f - 1) / 12.0, 0.25)) / f
    k = _gauss_kernel(low_sigma)

    def soft(cid: int) -> np.ndarray:
        return _blur_axis(_blur_axis((labels == cid).astype(np.float32), k, 0), k, 1)

    if f == 1:
        best = soft(int(present[0]))
        total = best.copy()
        out = np.full(labels.shape, present[0], dtype=np.uint8)
        for cid in present[1:-1]:
            b = soft(int(cid))
            total += b
            win = b > best
            np.maximum(best, b, out=best)
            np.copyto(out, np.uint8(cid), where=win)
        rest = np.subtract(1.0, total, out=total)
        np.copyto(out, np.uint8(present[-1]), where=rest > best)
        return out

    # Large sigma: blurred one-hots at 1/f resolution; the argmax of their
    # bilinear upsampling is evaluated per pixel only where it can change.
    soft_low = _block_fractions(labels, present, f)  # (K, h/f, w/f)
    for c in range(len(present)):
        soft_low[c] = _blur_axis(_blur_axis(soft_low[c], k, 0), k, 1)
    lh, lw = soft_low.shape[1:]
    flat = soft_low.reshape(len(present), -1)

    def label_at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        u = np.clip((ys + 0.5) / f - 0.5, 0, lh - 1)
        v = np.clip((xs + 0.5) / f - 0.5, 0, lw - 1)
        y0, x0 = u.astype(np.intp), v.astype(np.intp)
        y1, x1 = np.minimum(y0 + 1, lh - 1), np.minimum(x0 + 1, lw - 1)
        wy, wx = (u - y0).astype(np.float32), (v - x0).astype(np.float32)
        r0, r1 = y0 * lw, y1 * lw
        top = np.take(flat, r0 + x0, axis=1)
        top += (np.take(flat, r0 + x1, axis=1) - top) * wx
        bot = np.take(flat, r1 + x0, axis=1)
        bot += (np.take(flat, r1 + x1, axis=1) - bot) * wx
        val = top + (bot - top) * wy
        return present.astype(np.uint8)[np.argmax(val, axis=0)]

    return render_coarse_to_fine(label_at, (h, w), f)


def _components(labels: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique ids for all 4-connected components of all classes (ids from 1) and their sizes."""
    comp = np.zeros(labels.shape, dtype=np.int32)
    sizes = [np.zeros(1, dtype=np.int64)]
    offset = 0
    for cid in present:
        mask = labels == cid
        lab, n = ndimage.label(mask)
        if n == 0:
            continue
        sizes.append(np.bincount(lab.ravel(), minlength=n + 1)[1:])
        comp += lab
        if offset:
            comp += mask * np.int32(offset)
        offset += n
    return comp, np.concatenate(sizes)


def remove_small_regions(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Merge every 4-connected region smaller than ``min_area`` px into its main neighbour class.

    The "main neighbour" is the class with the most pixels touching the
    region's outline from outside (a speck inside a tumour becomes tumour). The
    largest region is always kept, so a map never ends up empty; afterwards no
    region is smaller than ``min_area`` unless the whole map is one region.
    """
    if min_area <= 1:
        return labels
    out = labels.copy()
    for _ in range(256):  # rounds; only maps of specks far below min_area need more than a few
        present = np.flatnonzero(np.bincount(out.ravel(), minlength=256))
        if len(present) < 2:
            return out
        comp, sizes = _components(out, present)
        small = sizes < min_area
        small[0] = False
        if not small.any():
            return out
        forced = bool(small[1:].all())
        if forced:  # nothing big to merge into: keep the largest region and grow it
            small[1 + int(np.argmax(sizes[1:]))] = False
        n = len(sizes)
        cls_index = np.zeros(256, dtype=np.int64)
        cls_index[present] = np.arange(len(present))
        k = len(present)
        # Relabel so only small regions have non-zero ids, then count for each
        # small region the classes of the non-small pixels right next to it.
        small_id = np.where(small, np.arange(n), 0).astype(np.int32)[comp]
        counts = np.zeros(n * k, dtype=np.int64)
        for a, b, c, d in _SHIFTS:
            src = small_id[a, b]
            nb = small_id[c, d]
            edge = (src > 0) & (nb == 0)
            counts += np.bincount(src[edge].astype(np.int64) * k + cls_index[out[c, d][edge]], minlength=n * k)
        counts = counts.reshape(n, k)
        has_nb = counts.sum(axis=1) > 0
        target = present.astype(np.uint8)[counts.argmax(axis=1)]
        # Regions walled in by other small regions wait for the next round.
        move = small & has_nb
        if not move.any():
            return out
        out = np.where(move[small_id], target[small_id], out)
        if not forced and (move == small).all():
            # Each moved region now touches a big region of its new class,
            # and big regions never shrink, so no small region is left.
            return out
    return out


def postprocess(labels: np.ndarray, *, smooth: float = 0.0, min_region: int = 0) -> np.ndarray:
    """Smoothing first, then the minimum region size, so ``min_region`` holds in the result."""
    labels = smooth_labels(labels, smooth)
    return remove_small_regions(labels, min_region)
