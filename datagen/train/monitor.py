"""Training diagnostics that say whether a generator is becoming *paintable*.

A GAN can look fine in its sample grid and still be useless here: if the decoder
routes everything around the paint layer, replacing that layer changes nothing.
``paint_influence`` measures exactly that, cheaply, so a run can be stopped (or
its config changed) long before the compute is spent.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.hooks import LayerHook
from ..paint import full_replace
from .data import background_fraction_t


def _image_and_centre_vectors(generator: nn.Module, layer: str, noise: torch.Tensor,
                              cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and each one's ``layer`` activation vector at its centre pixel (N, C)."""
    with LayerHook(generator, layer) as hook:
        image = generator(noise, cond)
        act = hook.original
    assert act is not None
    h, w = act.shape[-2:]
    return image, act[:, :, h // 2, w // 2]


def _full_replaced(generator: nn.Module, layer: str, vectors: torch.Tensor, noise: torch.Tensor,
                   cond: torch.Tensor | None) -> torch.Tensor:
    """The images with every pixel of ``layer`` replaced by their row of ``vectors`` (N, C)."""
    with LayerHook(generator, layer, lambda a: full_replace(a, vectors), record=False):
        return generator(noise, cond)


@torch.no_grad()
def paint_influence(generator: nn.Module, noise: torch.Tensor, cond: torch.Tensor | None, layer: str) -> dict[str, float]:
    """How much full-replacing ``layer`` changes the image, and how much the image varies.

    Each sample's layer is full-replaced by the centre activation vector of the next
    sample in the batch. Returns (images in [-1, 1]):

    - ``influence``: mean |image(painted) - image|; near 0 means the layer is bypassed.
    - ``spatial_std``: mean per-image pixel std; near 0 means flat colour.
    - ``batch_std``: pixel std across samples; near 0 means every noise gives the same image.
    """
    if noise.shape[0] < 2:
        raise ValueError("paint_influence needs at least two samples")
    plain, vectors = _image_and_centre_vectors(generator, layer, noise, cond)
    painted = _full_replaced(generator, layer, vectors.roll(1, dims=0), noise, cond)
    return {
        "influence": (painted - plain).abs().mean().item(),
        "spatial_std": plain.flatten(2).std(dim=2).mean().item(),
        "batch_std": plain.std(dim=0).mean().item(),
    }


@torch.no_grad()
def paint_glass(generator: nn.Module, noise: torch.Tensor, cond: torch.Tensor, glass_cond: torch.Tensor,
                tissue_cond: torch.Tensor, layer: str) -> dict[str, float]:
    """Whether glass can still be *painted*: the most glass that any of the vectors of images
    conditioned on glassy crops (``glass_cond``, K rows) draws when it full-replaces ``layer`` in
    every scene (``noise`` and ``cond``, S rows), as a mean over the scenes (``paint_glass``); the
    same for the vectors of tissue crops (``paint_tissue``, which should stay low).

    A generator can keep drawing glass in its samples while no vector paints mostly glass any
    more (glass then follows the noise below the paint layer, or never exceeds the share of the
    training crops), and a recipe's background class paints tissue under a mask that says
    glass. CPU continuations of ``builtin:tissue-small`` did this while FD improved
    (training/tissue-small/README.md). Images are in [-1, 1].
    """
    s = len(noise)
    out = {}
    for key, source in (("paint_glass", glass_cond), ("paint_tissue", tissue_cond)):
        k = len(source)
        _, vectors = _image_and_centre_vectors(generator, layer, noise[torch.arange(k) % s], source)
        painted = _full_replaced(generator, layer, vectors.repeat_interleave(s, dim=0),  # each vector into every scene
                                 noise.repeat(k, 1, 1, 1), cond.repeat(k, 1))
        out[key] = background_fraction_t(painted).view(k, s).mean(dim=1).max().item()
    return out


__all__ = ["paint_glass", "paint_influence"]
