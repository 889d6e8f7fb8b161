"""GAN losses: non-saturating logistic loss, R1 penalty, conditioning consistency."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Squared gradient norm of D at real images (Mescheder et al. 2018), per image mean."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).sum(dim=(1, 2, 3)).mean()


def conditioning_consistency(features_of_fake: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The paper's L1 loss: the generated image's features should return its conditioning vector."""
    return (features_of_fake - cond).abs().mean()
