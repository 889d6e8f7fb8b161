"""A tiny generator shaped like NVlabs' StyleGAN2 (mapping + synthesis blocks with per-layer styles).

Module names and call signatures follow stylegan2-ada-pytorch (``G.mapping(z, c,
truncation_psi=...)``, ``G.synthesis(ws, noise_mode=...)``, blocks ``synthesis.b16``
with layers ``conv0``, ``conv1``, ``torgb``), so the adapter code path that opens a
real StyleGAN2-ADA pickle is exercised without the NVlabs code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_ws: int, layers: int = 2) -> None:
        super().__init__()
        self.num_ws = num_ws
        dims = [z_dim] + [w_dim] * layers
        for i in range(layers):
            setattr(self, f"fc{i}", nn.Linear(dims[i], dims[i + 1]))
        self.layers = layers
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.layers):
            x = F.leaky_relu(getattr(self, f"fc{i}")(x), 0.2)
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x[:, None].repeat(1, self.num_ws, 1)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv with weight demodulation and (constant) noise."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, up: bool = False) -> None:
        super().__init__()
        self.affine = nn.Linear(w_dim, cin)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.up = up
        self.resolution = resolution
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.tensor(0.1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        n, cin, h, wd = x.shape
        s = self.affine(w)  # (N, cin)
        wgt = self.weight[None] * s[:, None, :, None, None]
        wgt = wgt * torch.rsqrt(wgt.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        y = F.conv2d(x.reshape(1, n * cin, h, wd), wgt.reshape(-1, cin, 3, 3), padding=1, groups=n)
        y = y.reshape(n, -1, h, wd)
        if noise_mode == "random":
            y = y + torch.randn(n, 1, h, wd, device=y.device) * self.noise_strength
        elif noise_mode == "const":
            y = y + self.noise_const * self.noise_strength
        return F.leaky_relu(y + self.bias[None, :, None, None], 0.2)


class ToRGBLayer(nn.Module):
    def __init__(self, cin: int, w_dim: int) -> None:
        super().__init__()
        self.affine = nn.Linear(w_dim, cin)
        self.weight = nn.Parameter(torch.randn(3, cin) * 0.1)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)
        return torch.einsum("nchw,oc,nc->nohw", x, self.weight, s)


class SynthesisBlock(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.num_conv = 1 if cin == 0 else 2
        if cin == 0:
            self.const = nn.Parameter(torch.randn(cout, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(cin, cout, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(cout, cout, w_dim, resolution)
        self.torgb = ToRGBLayer(cout, w_dim)

    def forward(self, x, img, ws, noise_mode="const"):  # type: ignore[no-untyped-def]
        w = iter(ws.unbind(dim=1))
        if self.num_conv == 1:
            x = self.const[None].repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, next(w), noise_mode=noise_mode)
        x = self.conv1(x, next(w), noise_mode=noise_mode)
        y = self.torgb(x, next(w))
        img = y if img is None else F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, channels: int = 16) -> None:
        super().__init__()
        self.block_resolutions = [2**i for i in range(2, img_resolution.bit_length())]
        self.num_ws = 0
        cin = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(cin, channels, w_dim, res)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv + 1
            cin = channels

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        x = img = None
        k = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            n = block.num_conv + 1
            x, img = block(x, img, ws[:, k : k + n], noise_mode=noise_mode)
            k += n - 1  # torgb shares the next block's first w, as in StyleGAN2
        return torch.tanh(img)


class ToyStyleGAN2(nn.Module):
    def __init__(self, z_dim: int = 16, w_dim: int = 16, img_resolution: int = 32, c_dim: int = 0) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim, self.img_resolution = z_dim, w_dim, c_dim, img_resolution
        self.synthesis = SynthesisNetwork(w_dim, img_resolution)
        self.mapping = MappingNetwork(z_dim, w_dim, self.synthesis.num_ws + 1)

    def forward(self, z, c, truncation_psi=1.0, noise_mode="const"):  # type: ignore[no-untyped-def]
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)
