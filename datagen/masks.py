"""What the written mask claims: one value per pixel, a class only where the image shows it.

A mask value is a claim about the pixels under it. Three places break that claim
unless the mask says so:

* **keep regions** (``keep: true`` classes) show the generator's own activations,
  tissue of whatever kind the noise and conditioning happen to draw. They are
  written with the *ignore value* (default 255), never with a class id.
* **unpainted slivers**: a region thinner than about half a paint-layer cell
  contains no cell centre, so nothing is painted there (the centred nearest
  resize never samples it). With ``mask: layout`` those pixels are written as
  ignore; with ``mask: cells`` / ``mask: rendered`` they are simply not a region.
* **boundaries**: the decoder does not draw the cell edges of the paint layer
  exactly; measured on ``builtin:tissue-small`` one class spreads 4-6 px into
  its neighbour, depending on the pair (docs/fidelity.md). ``mask: rendered``
  reads the boundary from the generator's own decoder activations instead.

``paint.boundary_ignore: N`` writes a strip of N px on each side of every boundary
as ignore, in any mask mode: the decoder blends the two sides there (the VOC
datasets' "void" border is the same convention).

``mask: rendered`` follows DatasetGAN (Zhang et al. 2021) without human labels:
the painted cells *are* labels. A small per-pixel classifier on the decoder
activations below the paint layer is fitted, once per run, on the interiors of
painted cells of calibration renders (their own random streams, so fitting is
deterministic for a seed), then labels every pixel near a cell boundary. Away
from boundaries the painted cell is the label. A pixel whose best class is a
keep region, or whose classifier confidence is below ``min_confidence``, is
written as ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .errors import DatagenError

DEFAULT_IGNORE = 255
"""The ignore value written where a mask pixel claims no class (recipes: ``ignore_index``)."""


def ignore_keep(mask: np.ndarray, keep_ids: Sequence[int], ignore_index: int | None) -> np.ndarray:
    """``mask`` with every pixel of a keep class set to ``ignore_index`` (in place; no-op if None)."""
    if ignore_index is not None and len(keep_ids):
        mask[np.isin(mask, np.asarray(list(keep_ids), dtype=mask.dtype))] = ignore_index
    return mask


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Pixels of a 2-D label map whose value differs from at least one 4-neighbour.

    Both sides of a label change are boundary pixels; changes against ignored pixels
    count like any other; the image border is not a boundary.
    """
    edge = np.zeros(labels.shape, dtype=bool)
    dy = labels[1:] != labels[:-1]
    dx = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def cell_boundary_distance(cells: np.ndarray) -> np.ndarray:
    """Distance (px) of every pixel to the nearest pixel whose 4-neighbour has another label."""
    edge = boundary_mask(cells)
    if not edge.any():
        return np.full(cells.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~edge).astype(np.float32)


# ---- mask: rendered ------------------------------------------------------------------
class _PixelHead(torch.nn.Module):
    """Per-pixel MLP over the concatenated decoder layers, applied without concatenating them.

    The first linear map of a concatenation is the sum of one linear map per layer, and a
    1x1 linear map commutes with bilinear upsampling, so each layer is projected at its own
    resolution and only the small hidden vectors are sampled at the pixels that need them
    (:meth:`RenderedMaskModel.logits_at`).
    """

    def __init__(self, channels: Sequence[int], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.proj = torch.nn.ModuleList([torch.nn.Conv2d(c, hidden, 1, bias=False) for c in channels])
        self.bias = torch.nn.Parameter(torch.zeros(hidden))
        self.out = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(hidden, hidden, 1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(hidden, num_classes, 1))


@dataclass
class RenderedMaskModel:
    """A fitted per-pixel classifier from decoder activations to the classes painted there.

    ``classes[k]`` is the class id of output ``k``; ``keep_index`` is the output that
    stands for keep regions (or None when the recipe has none).
    """

    layers: list[str]
    head: _PixelHead
    classes: list[int]
    keep_index: int | None
    mean: list[torch.Tensor]
    std: list[torch.Tensor]
    calibration: dict

    def _normalise(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [(f.float() - m.to(f.device)) / s.to(f.device) for f, m, s in zip(feats, self.mean, self.std)]

    def _head_on(self, device: torch.device) -> tuple[_PixelHead, torch.dtype]:
        """The head to apply on ``device`` and its dtype: float64 on the CPU.

        On the CPU the head runs in float64: matrix kernels group their sums by thread
        count, batch shape and (under load) by how many threads actually ran, which in
        float32 flipped the class of a few boundary pixels between identical runs
        (issue 15); in float64 those differences are far below anything an argmax sees.
        """
        if device.type != "cpu":
            return self.head.to(device), torch.float32
        head64 = getattr(self, "_head64", None)
        if head64 is None:
            import copy

            head64 = self._head64 = copy.deepcopy(self.head).double()
        return head64, torch.float64

    @torch.no_grad()
    def logits_at(self, feats: Sequence[torch.Tensor], size: tuple[int, int], where: torch.Tensor) -> torch.Tensor:
        """(M, K) logits at the pixels ``where`` (M, 3: sample, row, column) only.

        Bilinear at pixel centres, as the fit samples them (:func:`_sample_at`): the
        ``mask: rendered`` pass needs logits only near painted-cell boundaries, so it pays
        for M pixels instead of every pixel. float64 on the CPU (see :meth:`_head_on`).
        """
        head, dtype = self._head_on(feats[0].device)
        hidden = torch.zeros(len(where), head.bias.shape[0], dtype=dtype, device=feats[0].device)
        feats = [f.to(dtype) for f in self._normalise(feats)]
        for i in torch.unique(where[:, 0]).tolist():
            sel = (where[:, 0] == i).nonzero()[:, 0]
            acc = head.bias.to(dtype)[None].expand(len(sel), -1).clone()
            for proj, f in zip(head.proj, feats):  # each layer projected at its own resolution
                acc = acc + _sample_at(proj(f[i:i + 1]), where[sel, 1], where[sel, 2], size)
            hidden[sel] = acc
        return head.out(hidden[:, :, None, None])[:, :, 0, 0]


def _sample_at(f: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(M, C) values of the map ``f`` (1, C, h, w), bilinearly upsampled to ``size``, at output
    pixels (ys, xs): what ``F.interpolate(..., mode="bilinear", align_corners=False)`` gives
    there, without upsampling the whole map. A map already at ``size`` is indexed directly."""
    H, W = size
    if f.shape[-2:] == (H, W):
        return f[0][:, ys, xs].T
    gy = (ys.double() + 0.5) / H * 2 - 1  # grid in float64, then the map's dtype
    gx = (xs.double() + 0.5) / W * 2 - 1
    grid = torch.stack([gx, gy], -1)[None, None].to(f.dtype)
    return F.grid_sample(f, grid, mode="bilinear", align_corners=False, padding_mode="border")[0, :, 0].T


def feature_layers(generator, layer: str) -> list[str]:
    """The generator layers after the paint layer and finer than it: what the decoder draws from."""
    infos = generator.layers()
    names = [i.name for i in infos]
    if layer not in names:
        return []
    paint_stride = generator.layer(layer).stride
    after = infos[names.index(layer) + 1:]
    return [i.name for i in after if i.stride < paint_stride]


def fit_rendered_mask(features: list[list[torch.Tensor]], cells: np.ndarray, **kwargs) -> RenderedMaskModel:
    """Fit the classifier on pixels at least ``margin`` px inside their painted cell region (see :func:`_fit`).

    The fit runs on one CPU thread: float32 gradient sums are grouped by thread count (and
    by how many threads actually ran on a loaded machine), so with several threads the
    fitted classifier -- and a few hundred boundary pixels of every mask -- differed
    between identical runs (issue 15). One thread makes it the same on every run.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(features, cells, **kwargs)
    finally:
        torch.set_num_threads(before)


def _fit(features: list[list[torch.Tensor]], cells: np.ndarray, *, class_ids: Sequence[int],
                      keep_ids: Sequence[int], margin: float, seed: int, steps: int = 300,
                      pixels_per_sample: int = 3000) -> RenderedMaskModel:
    """Fit the classifier on pixels at least ``margin`` px inside their painted cell region.

    features: per calibration sample, one (1, C_l, h_l, w_l) tensor per decoder layer (CPU).
    cells:    (N, H, W) the painted class of every pixel (keep classes by their own id).
    """
    n, H, W = cells.shape
    keep_ids = list(keep_ids)
    painted = [c for c in class_ids if c not in keep_ids]
    classes = painted + ([-1] if keep_ids else [])  # -1: any keep region
    lut = np.full(256, -100, dtype=np.int64)
    for k, c in enumerate(painted):
        lut[c] = k
    for c in keep_ids:
        lut[c] = len(painted)
    rng = np.random.default_rng(seed)
    # per-layer normalisation from the calibration set
    nl = len(features[0])
    # (statistics in float64: float32 sums depend on the thread count, and the fit must not; issue 15)
    mean = [torch.stack([f[l].double().mean(dim=(0, 2, 3)) for f in features]).mean(0)[:, None, None].float() for l in range(nl)]
    std = [torch.stack([f[l].double().std(dim=(0, 2, 3)) for f in features]).mean(0).clamp_min(1e-4)[:, None, None].float()
           for l in range(nl)]
    xs: list[list[torch.Tensor]] = [[] for _ in range(nl)]
    ys: list[np.ndarray] = []
    for i in range(n):
        y = lut[cells[i]]
        ok = (cell_boundary_distance(cells[i]) >= margin) & (y >= 0)
        cand = np.flatnonzero(ok.ravel())
        if cand.size == 0:
            continue
        # balance classes within the sample: draw the same number of pixels from each
        lab = y.ravel()[cand]
        picks = []
        present = np.unique(lab)
        for k in present:
            pool = cand[lab == k]
            picks.append(rng.choice(pool, size=min(len(pool), pixels_per_sample // len(present)), replace=False))
        pick = np.concatenate(picks)
        ys.append(y.ravel()[pick])
        py, px = torch.from_numpy(pick // W), torch.from_numpy(pick % W)
        for l, f in enumerate(features[i]):
            xs[l].append(_sample_at((f.float() - mean[l]) / std[l], py, px, (H, W)))
    if not ys:
        raise DatagenError("mask: rendered found no painted cell interiors in its calibration renders; "
                         "make regions larger (layout) or use mask: cells")
    X = [torch.cat(x) for x in xs]
    Y = torch.from_numpy(np.concatenate(ys))
    torch_gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = _PixelHead([x.shape[1] for x in X], len(classes))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    m = len(Y)
    counts = torch.bincount(Y, minlength=len(classes)).float()
    weight = (counts.sum() / counts.clamp_min(1)) / len(classes)
    for step in range(steps):
        idx = torch.randint(m, (min(4096, m),), generator=torch_gen)
        hid = sum(torch.nn.functional.linear(x[idx], p.weight[:, :, 0, 0]) for x, p in zip(X, head.proj)) + head.bias
        logits = head.out(hid[:, :, None, None])[:, :, 0, 0]
        loss = F.cross_entropy(logits, Y[idx], weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        hid = sum(torch.nn.functional.linear(x, p.weight[:, :, 0, 0]) for x, p in zip(X, head.proj)) + head.bias
        acc = float((head.out(hid[:, :, None, None])[:, :, 0, 0].argmax(1) == Y).float().mean())
    head = head.float().eval()
    return RenderedMaskModel(layers=[], head=head, classes=classes, keep_index=len(painted) if keep_ids else None,
                             mean=mean, std=std,
                             calibration={"samples": n, "pixels": int(m), "margin_px": margin, "steps": steps,
                                          "train_accuracy": round(acc, 4)})


def square_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over a (2r+1)^2 square around every pixel of (N, C, H, W) ``x``, as two 1-D passes
    (a max is separable: O(r) per pixel instead of O(r^2))."""
    if radius <= 0:
        return x
    k = 2 * int(radius) + 1
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, int(radius)))
    return F.max_pool2d(x, (k, 1), stride=1, padding=(int(radius), 0))


def near_boundary(cells: torch.Tensor, band: int) -> torch.Tensor:
    """(N, H, W) bool: pixels within ``band`` px (square window) of a place where the
    class of ``cells`` (N, H, W) changes between 4-neighbours. Runs on the tensor's device."""
    c = cells.to(torch.int16)
    edge = torch.zeros_like(c, dtype=torch.bool)
    dy = c[:, 1:] != c[:, :-1]
    dx = c[:, :, 1:] != c[:, :, :-1]
    edge[:, 1:] |= dy
    edge[:, :-1] |= dy
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    return square_max(edge[:, None].float(), int(band))[:, 0] > 0


def ignore_boundaries(masks: np.ndarray, width: int, ignore_index: int | None) -> np.ndarray:
    """``masks`` (N, H, W) with every pixel that has a pixel of another value within ``width``
    px (square window) set to ``ignore_index``: a strip of ``width`` px on each side of every
    boundary, where the rendered image blends both sides (in place; no-op if width is 0 or
    there is no ignore value). Boundaries against ignored regions count too."""
    if width <= 0 or ignore_index is None:
        return masks
    m = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
    hi = square_max(m, int(width))
    lo = -square_max(-m, int(width))
    masks[(hi != lo)[:, 0].numpy()] = ignore_index
    return masks


def rendered_masks(model: RenderedMaskModel, features: Sequence[torch.Tensor], cells: np.ndarray, *,
                   band: float, ignore_index: int | None, keep_ids: Sequence[int],
                   min_confidence: float = 0.0) -> np.ndarray:
    """Masks (N, H, W) uint8 that follow the rendered boundaries.

    Pixels further than ``band`` px (square window) from a painted-cell boundary take their
    cell's class; nearer ones take the classifier's class among the classes painted within
    ``band`` px (a boundary moves, it does not invent a class that was not painted nearby).
    Computed on the features' device (the GPU when rendering there).
    """
    n, H, W = cells.shape
    dev = features[0].device
    K = len(model.classes)
    keep_ids = list(keep_ids)
    r = int(np.ceil(band))
    cl = torch.from_numpy(np.ascontiguousarray(cells)).to(dev).long()
    near = near_boundary(cl, r)
    where = near.nonzero()  # (M, 3): only these pixels need the classifier
    # which output each painted cell stands for (-1: not a class of the model)
    lut = torch.full((256,), -1, dtype=torch.long, device=dev)
    for k, c in enumerate(model.classes):
        if c >= 0:
            lut[c] = k
    if model.keep_index is not None:
        for c in keep_ids:
            lut[c] = model.keep_index
    idx = lut[cl]
    onehot = torch.zeros(n, K, H, W, device=dev)
    onehot.scatter_(1, idx.clamp(min=0)[:, None], (idx >= 0)[:, None].float())
    allowed = square_max(onehot, r) > 0
    allowed_at = allowed.permute(0, 2, 3, 1)[where[:, 0], where[:, 1], where[:, 2]]  # (M, K)
    logits = model.logits_at(features, (H, W), where) if len(where) else torch.zeros(0, K, device=dev)
    if logits.dtype != torch.float64:
        logits = logits.float()
    prob = logits.masked_fill(~allowed_at, float("-inf")).softmax(1)
    conf_m, best_m = prob.max(1)
    ids = torch.tensor([c if c >= 0 else 0 for c in model.classes], dtype=torch.long, device=dev)
    out = cl.clone()
    out[where[:, 0], where[:, 1], where[:, 2]] = ids[best_m]
    keep_lut = torch.zeros(256, dtype=torch.bool, device=dev)
    if keep_ids:
        keep_lut[torch.tensor(keep_ids, device=dev)] = True
    best_keep_m = (best_m == model.keep_index) if model.keep_index is not None else torch.zeros_like(best_m, dtype=torch.bool)
    unsure_m = best_keep_m | (conf_m < min_confidence) if min_confidence > 0 else best_keep_m
    if ignore_index is not None:
        out[keep_lut[out]] = ignore_index
        sel = where[unsure_m]
        out[sel[:, 0], sel[:, 1], sel[:, 2]] = ignore_index
    else:  # no ignore value: a boundary pixel read as a keep region keeps its painted cell's id
        sel = where[best_keep_m]
        out[sel[:, 0], sel[:, 1], sel[:, 2]] = cl[sel[:, 0], sel[:, 1], sel[:, 2]]
    return out.to(torch.uint8).cpu().numpy()


__all__ = [
    "DEFAULT_IGNORE", "RenderedMaskModel", "boundary_mask", "cell_boundary_distance", "feature_layers", "fit_rendered_mask",
    "ignore_boundaries", "ignore_keep", "near_boundary", "rendered_masks",
]
