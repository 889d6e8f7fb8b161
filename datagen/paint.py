"""Painting: replace pixels of a hidden layer with activation vectors, and edit single units.

This is the paper's core operation (sec. 3.2) as a pure tensor function. Full and
grid replace (sec. 3.1) are special cases: a label map that is all one class, or
one that marks the grid blocks and keeps everything else. :func:`grid_cells` is that
grid's geometry for any window of a layer (a recipe class painted ``paint: grid``).
:func:`edit_units` is GAN Dissection's intervention (Bau et al.): set a few channels
("units") inside a region, to 0 (ablate) or to a value (insert).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from .errors import UsageError

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


def grid_cells(rows: Sequence[int] | torch.Tensor, cols: Sequence[int] | torch.Tensor, grid: int,
               height: int, width: int) -> torch.Tensor:
    """Which layer cells ``rows`` x ``cols`` (indices into a ``height`` x ``width`` layer) lie in the
    paper's grid blocks: bool (len(rows), len(cols)). The geometry of :func:`grid_mask`, cell by cell,
    so any window of a layer (a canvas tile) gets the blocks of the whole layer."""
    if grid < 1:
        raise ValueError(f"grid size must be >= 1, got {grid}")

    def axis(i: torch.Tensor, n: int) -> torch.Tensor:
        offset = i % (grid + 1)
        return (offset < grid) & (i - offset < n - grid) & (i >= 0)

    r = torch.as_tensor(rows, dtype=torch.long)
    c = torch.as_tensor(cols, dtype=torch.long)
    return axis(r, int(height))[:, None] & axis(c, int(width))[None, :]


def grid_mask(height: int, width: int, grid: int) -> torch.Tensor:
    """The paper's grid-replace mask: g x g blocks from (0, 0) with stride g + 1.

    One row and one column of original activations separate neighbouring blocks;
    a block starts at every multiple of g + 1 below ``size - grid`` (as in the
    reference code). Returns a bool (height, width) tensor, True inside blocks.
    """
    return grid_cells(torch.arange(height), torch.arange(width), grid, height, width)


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


# -- units (GAN Dissection) ------------------------------------------------------------------
UnitMode = Literal["ablate", "insert"]
UNIT_MODES = ("ablate", "insert")


def resize_region(region: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A bool region (B, H, W) or (H, W) at ``size`` (h, w), by centred nearest neighbour (as painting resizes)."""
    if tuple(region.shape[-2:]) == tuple(size):
        return region.bool()
    return resize_labels(region.to(torch.int64), size).bool()


def edit_units(
    activations: torch.Tensor,
    region: torch.Tensor,
    units: Sequence[int] | torch.Tensor,
    mode: UnitMode = "ablate",
    value: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Set ``units`` (channel indices) of ``activations`` (B, C, h, w) inside ``region``.

    ``region``: bool (B, h, w) or (h, w). ``mode`` "ablate": the units become 0 (or
    ``value`` if given); "insert": they become ``value`` (required): a number, one per
    unit (k,), or one per sample and unit (B, k). Returns a new tensor.
    """
    if mode not in UNIT_MODES:
        raise UsageError(f"must be one of {', '.join(UNIT_MODES)}, got {mode!r}", param="mode")
    if activations.ndim != 4:
        raise UsageError(f"expected activations (B, C, h, w), got shape {tuple(activations.shape)}", param="activations")
    b, c, h, w = activations.shape
    idx = torch.as_tensor(units, dtype=torch.long, device=activations.device).flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= c):
        raise UsageError(f"unit indices must be in 0..{c - 1}, got {idx.tolist()}", param="units")
    reg = region.to(activations.device).bool()
    if reg.ndim == 2:
        reg = reg.expand(b, h, w)
    if tuple(reg.shape) != (b, h, w):
        raise UsageError(f"region {tuple(region.shape)} does not match the activations' {(b, h, w)}", param="region")
    if mode == "insert" and value is None:
        raise UsageError("insert needs a value (a number, or one per unit)", param="value")
    k = idx.numel()
    if value is None:
        val = activations.new_zeros(b, k)
    else:
        val = torch.as_tensor(value, dtype=activations.dtype, device=activations.device)
        if val.ndim == 0:
            val = val.expand(b, k)
        elif val.shape == (k,):
            val = val[None].expand(b, k)
        elif val.shape != (b, k):
            raise UsageError(f"expected a number, ({k},) or ({b}, {k}) values, got shape {tuple(val.shape)}",
                             param="value")
    out = activations.clone()
    if k:
        out[:, idx] = torch.where(reg[:, None], val[:, :, None, None], activations[:, idx])
    return out
