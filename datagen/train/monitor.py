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
    with LayerHook(generator, layer) as hook:
        plain = generator(noise, cond)
        act = hook.original
    assert act is not None
    h, w = act.shape[-2:]
    vectors = act[:, :, h // 2, w // 2].roll(1, dims=0)
    with LayerHook(generator, layer, lambda a: full_replace(a, vectors), record=False):
        painted = generator(noise, cond)
    return {
        "influence": (painted - plain).abs().mean().item(),
        "spatial_std": plain.flatten(2).std(dim=2).mean().item(),
        "batch_std": plain.std(dim=0).mean().item(),
    }


__all__ = ["paint_influence"]
