"""Painting: replace pixels of a hidden layer with activation vectors.

This is the paper's core operation (sec. 3.2) as a pure tensor function. Full and
grid replace (sec. 3.1) are special cases: a label map that is all one class, or
one that marks the grid blocks and keeps everything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KEEP = -1
"""Label value meaning: leave the layer's own activations here."""


def paint(
    activations: torch.Tensor,
    labels: torch.Tensor,
    vectors: torch.Tensor,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace layer pixels by the vectors their labels point to.

    activations: (N, C, h, w) the layer's own output.
    labels:      (N, h, w) or (h, w) integer index into ``vectors``; ``KEEP`` (-1) keeps
                 the original activation at that pixel.
    vectors:     (N, K, C) one set of K vectors per sample, or (K, C) shared by all.
    alpha:       optional (N, h, w) or (h, w) blend weight in [0, 1] for soft boundaries:
                 out = act + alpha * (vector - act) where painted.
    Returns a new tensor; ``activations`` is not modified.
    """
    n, c, h, w = activations.shape
    if labels.ndim == 2:
        labels = labels.expand(n, h, w)
    if labels.shape != (n, h, w):
        raise ValueError(f"paint: labels {tuple(labels.shape)} do not match the layer {(n, h, w)}")
    if vectors.ndim == 2:
        vectors = vectors.expand(n, *vectors.shape)
    if vectors.shape[0] != n or vectors.shape[2] != c:
        raise ValueError(f"paint: vectors {tuple(vectors.shape)} do not fit a layer with {c} channels and batch {n}")
    labels = labels.to(activations.device, torch.long)
    vectors = vectors.to(activations.device, activations.dtype)
    painted_mask = labels != KEEP
    idx = labels.clamp(min=0).reshape(n, h * w, 1).expand(n, h * w, c)
    painted = torch.gather(vectors, 1, idx).reshape(n, h, w, c).permute(0, 3, 1, 2)
    if alpha is not None:
        a = alpha.to(activations.device, activations.dtype)
        a = (a.expand(n, h, w) if a.ndim == 2 else a)[:, None]
        painted = activations + a * (painted - activations)
    return torch.where(painted_mask[:, None], painted, activations)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of (N, H, W) or (H, W) integer maps, as in the paper.

    Sampling is centred: layer pixel (i, j) takes the label at output pixel
    (floor((i + 0.5) * H / h), floor((j + 0.5) * W / w)), the centre of the output
    block it covers (torch 'nearest-exact'), not its top-left corner, which would
    shift every painted region by half a cell.
    """
    squeeze = labels.ndim == 2
    x = labels[None] if squeeze else labels
    out = F.interpolate(x[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(labels.dtype)
    return out[0] if squeeze else out


def boundary_alpha(labels: torch.Tensor, soft: float) -> torch.Tensor:
    """Blend weights for soft boundaries: cells with a 4-neighbour of another label get
    ``1 - soft`` (painted vector and original activations mixed), all others 1."""
    padded = F.pad(labels[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    c = padded[1:-1, 1:-1]
    edge = (padded[:-2, 1:-1] != c) | (padded[2:, 1:-1] != c) | (padded[1:-1, :-2] != c) | (padded[1:-1, 2:] != c)
    return torch.where(edge, 1.0 - soft, 1.0)


def grid_mask(height: int, width: int, grid: int) -> torch.Tensor:
    """The paper's grid-replace mask: g x g blocks from (0, 0) with stride g + 1.

    One row and one column of original activations separate neighbouring blocks;
    a block starts at every multiple of g + 1 below ``size - grid`` (as in the
    reference code). Returns a bool (height, width) tensor, True inside blocks.
    """
    if grid < 1:
        raise ValueError(f"grid size must be >= 1, got {grid}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    for r in range(0, max(height - grid, 0), grid + 1):
        for c in range(0, max(width - grid, 0), grid + 1):
            mask[r : r + grid, c : c + grid] = True
    return mask


def full_replace(activations: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Every pixel of the layer := ``vector`` (C,) or one vector per sample (N, C)."""
    n, c, h, w = activations.shape
    v = vector.to(activations.device, activations.dtype)
    v = v.expand(n, c) if v.ndim == 1 else v
    return v[:, :, None, None].expand(n, c, h, w).clone()


def grid_replace(
    activations: torch.Tensor, vector: torch.Tensor, grid: int, background: torch.Tensor | None = None
) -> torch.Tensor:
    """Grid blocks := ``vector``; elsewhere the original activations, or ``background`` if given.

    ``vector`` and ``background`` are (C,) or one per sample (N, C).
    """
    n, c, h, w = activations.shape
    inside = grid_mask(h, w, grid).to(activations.device)
    v = vector.expand(n, c) if vector.ndim == 1 else vector
    if background is None:
        return paint(activations, torch.where(inside, 0, KEEP), v[:, None])
    bg = background.expand(n, c) if background.ndim == 1 else background
    return paint(activations, torch.where(inside, 0, 1), torch.stack([v, bg.to(v)], dim=1))
