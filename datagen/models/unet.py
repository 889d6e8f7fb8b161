"""The digipath UNet generator (Herdt & Maass, sec. 4.1).

Gaussian noise at output resolution goes in, strided encoder stages go down to a
small bottleneck, an optional conditioning vector (mean-pooled feature-extractor
features of a real image) is projected, replicated spatially and concatenated
at the bottleneck, and a decoder with skip connections goes back up.

Layer names say where a layer sits and at which stride, so a user can read them
off ``model.layers()`` and paint at, say, ``dec.x16`` without opening the code:

    enc.x1  enc.x2 ... enc.x{S}   encoder stage outputs (S = 2**depth)
    mid                           bottleneck, after conditioning
    dec.x{S/2} ... dec.x1          decoder stage outputs
    to_rgb                        the image, in [-1, 1]

The network is fully convolutional and uses only per-pixel normalisation, so a
sample does not depend on what else is in its batch and a model trained on
96-px crops generates at any multiple of its stride.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerInfo


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a :class:`DigipathUNet` (stored in checkpoints)."""

    channels: tuple[int, ...] = (32, 64, 96, 128, 160, 192)
    """Width per level; level k runs at stride 2**k, so depth = len(channels) - 1."""
    noise_channels: int = 8
    cond_dim: int = 0
    """Length of the conditioning vector; 0 builds an unconditional generator."""
    cond_channels: int = 64
    """The conditioning vector is projected to this many channels before concatenation."""
    padding_mode: str = "reflect"
    """'reflect' avoids the border bands that zero padding leaves in noise-driven UNets."""
    default_layer: str = "dec.x16"
    skip_min_stride: int = 1
    """Skip connections only at strides >= this. 1 is the plain UNet; larger values stop the
    decoder from drawing fine texture straight from the input noise, which would let it
    ignore (and so make unpaintable) the deep layers."""
    noise_injection: bool = False
    """Add per-pixel noise (StyleGAN-style, learned per-channel strength, starting at 0) in the
    decoder stages without skips, so fine stochastic detail has a source that cannot carry
    structure: the structure then has to come through the (paintable) deep layers."""
    decoder_bias: bool = True
    """False drops the biases of the decoder convolutions (an experiment against the
    bias-dominated collapse that 'norm' turned out to explain)."""
    norm: str = "pixel"
    """Per-pixel normalisation after every conv: 'pixel' (ProGAN's PixelNorm, RMS only) or
    'channel' (centre, then scale each pixel's channel vector: LayerNorm over channels, no
    affine). LeakyReLU outputs have a positive mean, and without centring that mean adds the
    same direction to every pixel, layer after layer: trained PixelNorm models ended with every
    activation vector at cosine 0.99 to the mean, i.e. nothing left to paint. Both are
    per-pixel, so batches never mix and a full-replaced layer stays constant. The default stays
    'pixel' so older checkpoints (which do not record it) rebuild unchanged."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 2:
            raise ValueError("UNetConfig.channels needs at least two levels")
        if self.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"UNetConfig.padding_mode: unknown mode {self.padding_mode!r}")
        if self.norm not in ("pixel", "channel"):
            raise ValueError(f"UNetConfig.norm: expected 'pixel' or 'channel', got {self.norm!r}")
        if self.skip_min_stride < 1:
            raise ValueError("UNetConfig.skip_min_stride must be >= 1")

    @property
    def depth(self) -> int:
        return len(self.channels) - 1

    @property
    def stride(self) -> int:
        """Output sizes must be multiples of this."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"UNetConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


class PixelNorm(nn.Module):
    """Normalise each pixel's channel vector; per-sample, so batches never mix."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ChannelNorm(nn.Module):
    """Centre and scale each pixel's channel vector (LayerNorm over channels, no affine)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=1, keepdim=True)
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def _norm(kind: str) -> nn.Module:
    return ChannelNorm() if kind == "channel" else PixelNorm()


def _conv(cin: int, cout: int, padding_mode: str, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode=padding_mode, bias=bias)


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution whose inference result does not depend on the thread count or batch size.

    CPU convolution kernels split work by thread count (and by batch shape), which moves
    the rounding of their sums: the same sample rendered with 1 or 2 threads, or in
    another batch, came out different by 1 in a few output pixels (issue 15). Without
    gradients this layer sums the input channels one by one, in a fixed order, with
    elementwise operations only, so every output pixel is computed the same way
    whatever the threads, batch or load. Training (gradients on) uses the ordinary
    convolution; the parameters (and checkpoints) are those of ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self.kernel_size != (1, 1) or self.groups != 1 or x.device.type != "cpu":
            return super().forward(x)
        w = self.weight[:, :, 0, 0].to(x.dtype)  # (out, in)
        out = x.new_zeros((x.shape[0], w.shape[0], *x.shape[2:]))
        for c in range(w.shape[1]):  # fixed order: out += w[:, c] * x[:, c]
            out.addcmul_(x[:, c : c + 1], w[:, c].view(1, -1, 1, 1))
        if self.bias is not None:
            out.add_(self.bias.to(x.dtype).view(1, -1, 1, 1))
        return out


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions with LeakyReLU and pixel norm; the first may be strided."""

    def __init__(self, cin: int, cout: int, padding_mode: str, stride: int = 1, norm: str = "pixel") -> None:
        super().__init__(
            _conv(cin, cout, padding_mode, stride),
            nn.LeakyReLU(0.2),
            _norm(norm),
            _conv(cout, cout, padding_mode),
            nn.LeakyReLU(0.2),
            _norm(norm),
        )


class UpBlock(nn.Module):
    """Upsample 2x, concatenate the encoder skip at the same stride (if any), then two convs.

    With ``inject_noise`` a noise map (N, 1, H, W) is added after each conv, scaled by a
    learned per-channel strength that starts at zero.
    """

    def __init__(self, cin: int, cskip: int, cout: int, padding_mode: str, inject_noise: bool = False,
                 bias: bool = True, norm: str = "pixel") -> None:
        super().__init__()
        self.has_skip = cskip > 0
        self.conv1 = _conv(cin + cskip, cout, padding_mode, bias=bias)
        self.conv2 = _conv(cout, cout, padding_mode, bias=bias)
        self.act = nn.LeakyReLU(0.2)
        self.norm = _norm(norm)
        self.noise_strength = nn.Parameter(torch.zeros(2, cout)) if inject_noise else None

    def _inject(self, x: torch.Tensor, noise: torch.Tensor | None, k: int) -> torch.Tensor:
        if self.noise_strength is None or noise is None:
            return x
        return x + noise.to(x.dtype) * self.noise_strength[k].to(x.dtype)[None, :, None, None]

    def forward(self, x: torch.Tensor, skip: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        if self.has_skip:
            x = torch.cat([x, skip], dim=1)
        x = self.norm(self._inject(self.act(self.conv1(x)), noise, 0))
        return self.norm(self._inject(self.act(self.conv2(x)), noise, 1))


class Bottleneck(nn.Module):
    """Concatenate the spatially replicated conditioning projection, then convolve."""

    def __init__(self, channels: int, cond_dim: int, cond_channels: int, padding_mode: str, norm: str = "pixel") -> None:
        super().__init__()
        self.cond_proj = nn.Linear(cond_dim, cond_channels) if cond_dim > 0 else None
        extra = cond_channels if cond_dim > 0 else 0
        self.body = ConvBlock(channels + extra, channels, padding_mode, norm=norm)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this generator is conditional: pass cond of shape (N, cond_dim)")
            c = self.cond_proj(cond.to(x.dtype))[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, c], dim=1)
        return self.body(x)


class DigipathUNet(nn.Module):
    """Noise (N, noise_channels, H, W) [+ cond (N, cond_dim)] -> image (N, 3, H, W) in [-1, 1]."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or UNetConfig()
        ch, pm = cfg.channels, cfg.padding_mode
        self.enc = nn.ModuleDict()
        self.enc["x1"] = ConvBlock(cfg.noise_channels, ch[0], pm, norm=cfg.norm)
        for k in range(1, len(ch)):
            self.enc[f"x{2**k}"] = ConvBlock(ch[k - 1], ch[k], pm, stride=2, norm=cfg.norm)
        self.mid = Bottleneck(ch[-1], cfg.cond_dim, cfg.cond_channels, pm, norm=cfg.norm)
        self.dec = nn.ModuleDict()
        for k in range(len(ch) - 2, -1, -1):
            skip = ch[k] if 2**k >= cfg.skip_min_stride else 0
            self.dec[f"x{2**k}"] = UpBlock(ch[k + 1], skip, ch[k], pm, inject_noise=cfg.noise_injection and skip == 0,
                                          bias=cfg.decoder_bias, norm=cfg.norm)
        self.to_rgb = nn.Sequential(PointwiseConv(ch[0], 3, 1), nn.Tanh())

    def forward(self, noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h, w = noise.shape[-2:]
        s = self.config.stride
        if h % s or w % s:
            raise ValueError(f"DigipathUNet: input size {h}x{w} is not a multiple of the stride {s}")
        skips = []
        x = noise
        for block in self.enc.values():
            x = block(x)
            skips.append(x)
        x = self.mid(x, cond)
        for (name, block), skip in zip(self.dec.items(), reversed(skips[:-1])):
            x = block(x, skip, self._noise_map(noise, int(name[1:])) if block.noise_strength is not None else None)
        return self.to_rgb(x)

    @staticmethod
    def _noise_map(noise: torch.Tensor, stride: int) -> torch.Tensor:
        """Unit-variance per-pixel noise at ``stride``, taken from the input noise itself so a
        sample stays fully determined by its inputs."""
        n = noise[:, :1]
        return n if stride == 1 else F.avg_pool2d(n, stride) * stride

    def layers(self) -> list[LayerInfo]:
        """Name, channels and stride of every paintable stage, input to output."""
        ch = self.config.channels
        out = [LayerInfo(f"enc.x{2**k}", ch[k], 2**k) for k in range(len(ch))]
        out.append(LayerInfo("mid", ch[-1], 2 ** (len(ch) - 1)))
        out += [LayerInfo(f"dec.x{2**k}", ch[k], 2**k) for k in range(len(ch) - 2, -1, -1)]
        out.append(LayerInfo("to_rgb", 3, 1))
        return out

    def sample_noise(self, generator: torch.Generator, size: tuple[int, int]) -> torch.Tensor:
        """One sample's input noise (1, C, H, W), drawn on the CPU so every device sees the same."""
        return torch.randn((1, self.config.noise_channels, *size), generator=generator)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["UNetConfig", "DigipathUNet", "PixelNorm", "ChannelNorm", "count_parameters"]
