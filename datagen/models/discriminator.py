"""A small residual discriminator for training the digipath UNet.

Resolution-agnostic (global average pooling), with a minibatch standard
deviation feature so the generator is penalised for collapsing to one mode.
Only used in training; it is never shipped with a built-in model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResBlockDown(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        s = F.avg_pool2d(self.skip(x), 2)
        return (y + s) / math.sqrt(2)


class Discriminator(nn.Module):
    """Image (N, 3, H, W) in [-1, 1] -> realness logit (N,)."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 192, 256), mbstd_group: int = 4) -> None:
        super().__init__()
        self.from_rgb = nn.Conv2d(3, channels[0], 1)
        self.blocks = nn.Sequential(*[ResBlockDown(a, b) for a, b in zip(channels[:-1], channels[1:])])
        self.mbstd_group = mbstd_group
        self.final = nn.Conv2d(channels[-1] + 1, channels[-1], 3, padding=1)
        self.out = nn.Linear(channels[-1], 1)

    def _mbstd(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.mbstd_group, n)
        while n % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n/g,)
        y = y.repeat(g)[:, None, None, None].expand(n, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(x), 0.2)
        x = self.blocks(x)
        x = F.leaky_relu(self.final(self._mbstd(x)), 0.2)
        return self.out(x.mean(dim=(2, 3))).squeeze(1)
