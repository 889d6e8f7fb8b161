"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for small-data GAN training.

Applied identically in kind to real and fake images before the discriminator, so
the generator is not pushed to reproduce the augmentation. Each image gets its
own random parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ZOOM_P = 0.5
"""Share of images that ``zoom`` magnifies; the rest pass whole."""
ZOOM_MIN = 0.375
"""Smallest window ``zoom`` takes, as a share of the side: 96 of 256 px, the magnification
(about 2.5x) at which benchmarks/realism.py's 96-px FD looks at nuclei."""


def _color(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    r = lambda: torch.rand(n, 1, 1, 1, generator=g, device="cpu").to(x)  # noqa: E731
    x = x + (r() - 0.5) * 0.5  # brightness (images in [-1, 1])
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (r() * 1.0 + 0.5) + mean  # saturation in [0.5, 1.5]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (r() * 0.5 + 0.75) + mean  # contrast in [0.75, 1.25]


def _translation(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (n, 1, 1), generator=g).to(x.device)
    ty = torch.randint(-sw, sw + 1, (n, 1, 1), generator=g).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    # reflect-free: clamp to the border (zeros would teach D to look for black frames)
    yy = (gy[None] + tx).clamp(0, h - 1)
    xx = (gx[None] + ty).clamp(0, w - 1)
    idx = (yy * w + xx).reshape(n, 1, h * w).expand(-1, x.shape[1], -1)
    return torch.gather(x.reshape(n, x.shape[1], h * w), 2, idx).reshape_as(x)


def _zoom(x: torch.Tensor, g: torch.Generator | None, p: float = ZOOM_P, smallest: float = ZOOM_MIN) -> torch.Tensor:
    """Magnify a random square window of some images back to full size (bilinear).

    A discriminator that reads a 256-px crop through a frozen ImageNet network sees nuclei
    at 8-10 px, too small for its early features; a zoomed window shows them as a 96-px
    crop does at 224 px. Real and fake images get it alike, so the generator is not asked
    to draw magnified tissue, only tissue that survives magnification.
    """
    n = x.shape[0]
    r = lambda: torch.rand(n, generator=g, device="cpu")  # noqa: E731
    side = torch.where(r() < p, smallest + (1.0 - smallest) * r(), torch.ones(n))
    cx, cy = (2 * r() - 1) * (1 - side), (2 * r() - 1) * (1 - side)  # the window stays inside the image
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = side, side, cx, cy
    grid = torch.nn.functional.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _cutout(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=g).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=g).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = ((gy[None] - oy).abs() < ch // 2) & ((gx[None] - ox).abs() < cw // 2)
    return x * (~inside)[:, None].to(x.dtype)


_OPS = {"color": _color, "zoom": _zoom, "translation": _translation, "cutout": _cutout}
POLICIES = tuple(_OPS)
"""Every DiffAugment op, in the order ``datagen train`` documents them."""


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """The ops of a policy ("color,translation" or a sequence), each checked against :data:`POLICIES`.

    One check for both the training config (a YAML error at load time) and :func:`diff_augment`.
    """
    ops = tuple(p for p in (policy.split(",") if isinstance(policy, str) else policy) if p)
    bad = [op for op in ops if op not in _OPS]
    if bad:
        raise ValueError(f"unknown DiffAugment op(s) {bad}; expected a comma-separated list of {', '.join(POLICIES)}")
    return ops


def diff_augment(x: torch.Tensor, policy: str | Sequence[str] = ("color", "translation", "cutout"),
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the listed DiffAugment ops ('color', 'zoom', 'translation', 'cutout') to a batch, in the order listed."""
    for op in parse_policy(policy):
        x = _OPS[op](x, generator)
    return x


def dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flips and 90-degree rotations per image: tissue has no orientation."""
    n = x.shape[0]
    k = torch.randint(0, 8, (n,), generator=generator)
    out = torch.empty_like(x)
    for i in range(n):
        y = x[i]
        if k[i] >= 4:
            y = y.flip(-1)
        out[i] = torch.rot90(y, int(k[i] % 4), dims=(-2, -1))
    return out
