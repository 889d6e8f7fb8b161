"""Tileability: does a vector draw the same structure alone as when repeated? (paper sec. 4.2)

For a vector v and a seed s, two visualisations are rendered with the same
generator inputs: full replace (the whole layer := v) and grid-2 replace. Both
go through a frozen feature extractor (default: EfficientNet-Lite0, block 4,
stride 8, the analogue of the paper's ResNet50 layer2). Each feature map is
averaged over space *weighted by the grid mask* - only where the grid
visualisation actually shows v - giving two vectors; their cosine similarity,
averaged over seeds, is the score. Tileable vectors (textures) look the same
both ways and score high; vectors that need contrast to their neighbours
(structures) render differently when tiled and score low.

Mask weights at feature resolution: the layer's grid mask is first upsampled
to image resolution by nearest neighbour (each layer pixel owns a
stride x stride cell), then area-averaged (adaptive average pooling) down to
the feature map. A feature pixel's weight is therefore the fraction of its
image cell covered by grid blocks: 1 inside a block, 0 in the gaps, and a
fraction where a feature cell straddles a block border (when the feature map
is coarser than the layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import DatagenError
from ..features import TILEABILITY_LAYER, EfficientNetLite0, FeatureExtractor
from ..models.generator import Generator
from ..paint import grid_mask
from .extract import resolve_layer_name, resolve_size
from .library import VectorLibrary
from .visualize import check_grid, iter_renders, resolve_seeds, upsample_mask

TILEABILITY_GRID = 2


def mask_weights(layer_mask: torch.Tensor, image_size: tuple[int, int], feature_size: tuple[int, int]) -> torch.Tensor:
    """Fractional weights (fh, fw) of a bool layer mask at a feature map's resolution."""
    img = upsample_mask(layer_mask, image_size).float()
    return F.adaptive_avg_pool2d(img[None, None], tuple(feature_size))[0, 0]


def masked_mean(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted spatial mean (N, C) of (N, C, h, w) features with (h, w) weights."""
    w = weights.to(features)
    total = w.sum()
    if total <= 0:
        raise DatagenError("the grid mask covers no feature-map pixel")
    return (features * w).sum(dim=(2, 3)) / total


def tileability_scores(
    gen: Generator,
    vectors: torch.Tensor,
    layer: str | None = None,
    *,
    extractor: FeatureExtractor | None = None,
    extractor_layer: str | None = None,
    grid: int = TILEABILITY_GRID,
    seeds: int | Sequence[int] = 4,
    size: int | Sequence[int] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> torch.Tensor:
    """Cosine similarity (V,) between the mask-weighted mean features of the full-replace and
    the grid-replace visualisation of each vector, averaged over ``seeds`` (see module doc).

    ``extractor`` defaults to ``EfficientNetLite0([TILEABILITY_LAYER])``; ``extractor_layer``
    to the extractor's first layer. Raises DatagenError when the layer is too small at
    ``size`` for the grid to place a block.
    """
    layer = resolve_layer_name(gen, layer)
    hw = resolve_size(gen, size)
    seed_list = resolve_seeds(seeds)
    check_grid(gen, layer, hw, grid)
    if extractor is None:
        extractor = EfficientNetLite0([extractor_layer or TILEABILITY_LAYER])
    feat_layer = extractor_layer or extractor.layers[0]
    if feat_layer not in extractor.layers:
        raise DatagenError(f"the feature extractor reads layers {', '.join(extractor.layers)}, not {feat_layer!r}")
    extractor = extractor.to(gen.device).eval()

    v_count, s_count = len(vectors), len(seed_list)
    total = torch.zeros(v_count, dtype=torch.float64)
    weights_cache: dict[tuple, torch.Tensor] = {}
    for vi, _si, (full, gridded), shapes in iter_renders(
        gen, vectors, layer, modes=[("full", grid), ("grid", grid)], seeds=seed_list, size=hw,
        batch_size=batch_size, progress=progress, desc=f"tileability {layer}",
    ):
        n = len(vi)
        with torch.no_grad():
            feats = extractor(torch.cat([full, gridded]))[feat_layer].float()
        key = (shapes[1], tuple(full.shape[-2:]), tuple(feats.shape[-2:]))
        if key not in weights_cache:
            layer_mask = grid_mask(*shapes[1], grid)
            weights_cache[key] = mask_weights(layer_mask, tuple(full.shape[-2:]), tuple(feats.shape[-2:]))
        w = weights_cache[key]
        m = masked_mean(feats, w)
        cos = F.cosine_similarity(m[:n], m[n:], dim=1, eps=1e-8).double().cpu()
        total.index_add_(0, vi, cos)
    return (total / s_count).float()


def default_threshold(scores: torch.Tensor, bins: int = 64) -> float:
    """The default cut between non-tileable and tileable: Otsu's threshold on the scores.

    Scores of a library are usually bimodal (textures near 1, structures lower); Otsu's
    method picks the cut that maximises the between-class variance of the two groups
    (scores >= threshold are tileable). With fewer than 2 distinct scores it returns the
    minimum (everything counts as tileable).
    """
    s = scores.detach().double().flatten().cpu()
    s = s[torch.isfinite(s)]
    if len(s) == 0:
        return float("nan")
    lo, hi = float(s.min()), float(s.max())
    if hi - lo < 1e-12:
        return lo
    hist = torch.histc(s, bins=bins, min=lo, max=hi)
    centers = lo + (torch.arange(bins, dtype=torch.float64) + 0.5) * (hi - lo) / bins
    p = hist / hist.sum()
    w0 = torch.cumsum(p, 0)
    mu = torch.cumsum(p * centers, 0)
    mu_t = mu[-1]
    w1 = 1 - w0
    valid = (w0 > 0) & (w1 > 0)
    between = torch.where(valid, (mu_t * w0 - mu) ** 2 / (w0 * w1).clamp_min(1e-12), torch.zeros_like(w0))
    k = int(between.argmax())
    return float(lo + (k + 1) * (hi - lo) / bins)  # upper edge of the last low bin


def rank_tileable(
    scores: torch.Tensor, threshold: float | str | None = None, top: int | None = None
) -> torch.Tensor:
    """Indices of tileable vectors, best first.

    ``threshold``: keep scores >= threshold; ``"auto"`` uses :func:`default_threshold`.
    ``top``: keep at most this many. With neither given the auto threshold applies.
    NaN scores are never returned.
    """
    s = scores.detach().flatten().float().cpu()
    order = torch.argsort(torch.nan_to_num(s, nan=float("-inf")), descending=True, stable=True)
    order = order[torch.isfinite(s[order])]
    if threshold is None and top is None:
        threshold = "auto"
    if threshold == "auto":
        threshold = default_threshold(s)
    if threshold is not None:
        if isinstance(threshold, str):
            raise DatagenError(f"threshold must be a number or 'auto', got {threshold!r}")
        order = order[s[order] >= float(threshold)]
    if top is not None:
        if top < 0:
            raise DatagenError(f"top must be >= 0, got {top}")
        order = order[:top]
    return order


def score_library(
    library: VectorLibrary,
    gen: Generator,
    *,
    extractor: FeatureExtractor | None = None,
    extractor_spec: str = "efficientnet-lite0",
    extractor_layer: str | None = None,
    grid: int = TILEABILITY_GRID,
    seeds: int | Sequence[int] = 4,
    size: int | Sequence[int] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> torch.Tensor:
    """Score every vector of ``library`` (in place: records' ``tileability`` and the library's
    ``tileability`` provenance). ``size`` defaults to the extraction size."""
    hw = resolve_size(gen, size if size is not None else library.image_size)
    if extractor is None:
        extractor = EfficientNetLite0([extractor_layer or TILEABILITY_LAYER])
    feat_layer = extractor_layer or extractor.layers[0]
    scores = tileability_scores(
        gen, library.vectors, library.layer, extractor=extractor, extractor_layer=feat_layer,
        grid=grid, seeds=seeds, size=hw, batch_size=batch_size, progress=progress,
    )
    info: dict[str, Any] = {
        "extractor": extractor_spec,
        "layer": feat_layer,
        "grid": grid,
        "seeds": resolve_seeds(seeds),
        "size": list(hw),
        "threshold": round(default_threshold(scores), 6),
        "threshold_rule": "otsu",
    }
    library.set_scores(scores, info)
    return scores


__all__ = [
    "TILEABILITY_GRID", "default_threshold", "mask_weights", "masked_mean",
    "rank_tileable", "score_library", "tileability_scores",
]
