"""GAN losses: non-saturating logistic and hinge losses, R1 penalty, conditioning consistency.

A discriminator returns either one logit tensor or a list of them (one per head, e.g.
the projected discriminator's patch-logit maps). Each loss averages each head's logits
and sums over heads; for a single tensor that is the plain mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .data import BLACK_MAX, GLASS_MIN, GLASS_RANGE

Logits = torch.Tensor | Sequence[torch.Tensor]


def _heads(x: Logits) -> Sequence[torch.Tensor]:
    return (x,) if isinstance(x, torch.Tensor) else x


def d_logistic_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    return sum(F.softplus(f).mean() + F.softplus(-r).mean() for r, f in zip(_heads(real_logits), _heads(fake_logits), strict=True))  # type: ignore[return-value]


def g_nonsaturating_loss(fake_logits: Logits) -> torch.Tensor:
    return sum(F.softplus(-f).mean() for f in _heads(fake_logits))  # type: ignore[return-value]


def d_hinge_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(_heads(real_logits), _heads(fake_logits), strict=True))  # type: ignore[return-value]


def g_hinge_loss(fake_logits: Logits) -> torch.Tensor:
    return sum(-f.mean() for f in _heads(fake_logits))  # type: ignore[return-value]


GAN_LOSSES: dict[str, tuple[Callable[[Logits, Logits], torch.Tensor], Callable[[Logits], torch.Tensor]]] = {
    "nonsaturating": (d_logistic_loss, g_nonsaturating_loss),
    "hinge": (d_hinge_loss, g_hinge_loss),
}


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Squared gradient norm of D at real images (Mescheder et al. 2018), per image mean."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).sum(dim=(1, 2, 3)).mean()


def conditioning_consistency(features_of_fake: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The paper's L1 loss: the generated image's features should return its conditioning vector."""
    return (features_of_fake - cond).abs().mean()


def soft_background_fraction(images: torch.Tensor, softness: float = 4.0) -> torch.Tensor:
    """A differentiable :func:`datagen.train.data.background_fraction_t` per image of a (N, 3, H, W)
    batch in [-1, 1]: each threshold of the sampler's glass test (``GLASS_MIN``, ``GLASS_RANGE``,
    ``BLACK_MAX`` in :mod:`datagen.train.data`, on 0-255) becomes a sigmoid ``softness`` units wide."""
    u = (images.float().clamp(-1, 1) + 1) * 127.5
    mx, mn = u.amax(dim=1), u.amin(dim=1)
    glass = torch.sigmoid((mn - GLASS_MIN) / softness) * torch.sigmoid((GLASS_RANGE - (mx - mn)) / softness)
    black = torch.sigmoid((BLACK_MAX - mx) / softness)
    return (glass + black - glass * black).flatten(1).mean(dim=1)


def glass_consistency(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between each generated image's soft glass share and its conditioning crop's glass share."""
    return (soft_background_fraction(images) - target).abs().mean()
