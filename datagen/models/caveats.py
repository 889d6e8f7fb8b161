"""When a painted vector does not decide what is drawn: inputs that enter after the paint layer.

Herdt & Maass (sec. 4.4): painting is problematic "if the GAN has inputs after the
painting layer (like the style vector in StyleGAN2)", because the structure a vector
draws then also depends on those inputs, which differ from sample to sample.

* Digipath UNet: the conditioning vector is concatenated inside ``mid`` (the
  bottleneck). Painting an encoder stage (``enc.*``) happens *before* it enters, so
  each sample's conditioning re-decides the tissue. ``mid`` itself is fine: the hook
  replaces the bottleneck's output, which already holds the conditioning, and nothing
  later reads it (the decoder stages, ``dec.*``, are what the paper paints).
* StyleGAN2: every synthesis layer after the paint layer is modulated by the sample's
  own style ``w``. :meth:`StyleGAN2Generator.set_fixed_style` (recipe ``fixed_style:``)
  shares the styles after the paint layer among all samples, which removes the caveat.

    msg = paint_layer_caveat(gen, "enc.x16")      # a sentence, or None
    warn_paint_layer(gen, layer)                   # the same as a PaintLayerWarning
"""

from __future__ import annotations

import warnings

from ..errors import DatagenError
from .generator import DigipathGenerator, Generator, StyleGAN2Generator


class PaintLayerWarning(UserWarning):
    """The paint layer sits before a per-sample input (conditioning, styles): painting there
    does not fully decide what is drawn."""


def _digipath_caveat(gen: DigipathGenerator, layer: str) -> str | None:
    if gen.module.config.cond_dim <= 0:
        return None  # unconditional: nothing but the noise enters
    if layer == "enc" or layer.startswith("enc."):
        return (f"{gen.name}: paint layer {layer!r} is in the encoder, before the conditioning vector enters "
                f"(at 'mid'): each sample's own conditioning then decides much of what a painted vector draws "
                f"(paper sec. 4.4); paint at a decoder layer (dec.*, default {gen.default_layer!r}) instead")
    if layer == "mid.cond_proj" or layer.startswith("mid.cond_proj."):
        return (f"{gen.name}: {layer!r} is the conditioning projection itself, not a spatial layer; "
                f"paint at 'mid' or a decoder layer (dec.*)")
    return None


def _stylegan2_caveat(gen: StyleGAN2Generator, layer: str) -> str | None:
    try:
        later = gen.style_indices_after(layer)
    except KeyError:
        return None  # not a synthesis layer this adapter knows (the caller reports unknown layers)
    if not later or gen.styles_fixed_after(layer):
        return None
    return (f"{gen.name}: {len(later)} style input(s) (rows {later[0]}..{later[-1]} of ws) act after paint layer "
            f"{layer!r}, and each sample has its own style, so what a painted vector draws changes from sample "
            f"to sample (paper sec. 4.4); set fixed_style: true in the recipe (StyleGAN2Generator."
            f"set_fixed_style) to share those styles among all samples")


def paint_layer_caveat(generator: Generator, layer: str) -> str | None:
    """A one-sentence explanation when a per-sample input enters after ``layer`` (conditioning
    for the digipath UNet, styles for StyleGAN2), else None. Other generator families: None."""
    if isinstance(generator, DigipathGenerator):
        return _digipath_caveat(generator, layer)
    if isinstance(generator, StyleGAN2Generator):
        return _stylegan2_caveat(generator, layer)
    return None


def warn_paint_layer(generator: Generator, layer: str, *, stacklevel: int = 2) -> str | None:
    """:func:`paint_layer_caveat` issued as a :class:`PaintLayerWarning`; returns the message."""
    msg = paint_layer_caveat(generator, layer)
    if msg is not None:
        warnings.warn(msg, PaintLayerWarning, stacklevel=stacklevel + 1)
    return msg


def fix_style(generator: Generator, seed: int | None, layer: str | None) -> None:
    """Share the styles after ``layer`` among all samples (StyleGAN2 only; ``seed`` picks the
    style, None turns it off). DatagenError for other generators."""
    if not isinstance(generator, StyleGAN2Generator):
        if seed is None:
            return
        raise DatagenError(f"{generator.name}: fixed_style applies to StyleGAN2 models only (its synthesis layers "
                           f"take a style per sample); this model has no style inputs")
    generator.set_fixed_style(seed, after=layer)


__all__ = ["PaintLayerWarning", "fix_style", "paint_layer_caveat", "warn_paint_layer"]
