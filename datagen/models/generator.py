"""A uniform face over different generator families.

Everything downstream (vector extraction, visualisation, painting, rendering)
talks to a :class:`Generator`: it knows how to draw one sample's inputs from a
seeded random stream, how to run the network, which layers it has and how big
each is at a given output size. Adding a GAN family means writing one subclass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .hooks import discover_layers
from .layers import LayerInfo
from .unet import DigipathUNet

Inputs = dict[str, torch.Tensor]


class Generator(ABC):
    """Adapter around a torch generator: inputs from seeds, forward, layer listing."""

    name: str = "generator"
    module: nn.Module

    @property
    @abstractmethod
    def default_layer(self) -> str:
        """The layer painted when a recipe does not name one."""

    @abstractmethod
    def layers(self) -> list[LayerInfo]:
        """Hookable layers with channels and stride."""

    @abstractmethod
    def sample_inputs(self, generators: Sequence[torch.Generator], size: tuple[int, int]) -> Inputs:
        """Batched inputs on the CPU; row i is drawn from ``generators[i]`` only."""

    @abstractmethod
    def forward(self, inputs: Inputs) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1]; inputs are moved to the module's device."""

    # -- shared helpers -------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Output heights and widths must be multiples of this."""
        return 1

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """The only output size, for generators that are not fully convolutional."""
        return None

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> "Generator":
        self.module.to(device)
        return self

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers():
            if info.name == name:
                return info
        names = ", ".join(i.name for i in self.layers())
        raise KeyError(f"{self.name} has no layer {name!r}; layers: {names}")

    @property
    def min_size(self) -> int:
        """Smallest output side the model can generate (a multiple of :attr:`size_multiple`)."""
        return self.size_multiple

    def check_size(self, size: tuple[int, int]) -> None:
        if self.fixed_size is not None and tuple(size) != tuple(self.fixed_size):
            raise ValueError(f"{self.name} only generates {self.fixed_size[0]}x{self.fixed_size[1]}, not {size[0]}x{size[1]}")
        m = self.size_multiple
        if size[0] % m or size[1] % m or min(size) <= 0:
            raise ValueError(f"{self.name}: output size {size[0]}x{size[1]} must be a positive multiple of {m}")
        if min(size) < self.min_size:
            raise ValueError(f"{self.name}: output size {size[0]}x{size[1]} is too small for this model; each side "
                             f"must be at least {self.min_size} px (and a multiple of {m})")

    def layer_size(self, name: str, size: tuple[int, int]) -> tuple[int, int]:
        return self.layer(name).size_at(*size)

    def _to_device(self, inputs: Inputs) -> Inputs:
        dev = self.device
        return {k: v.to(dev, non_blocking=True) for k, v in inputs.items()}


class DigipathGenerator(Generator):
    """The digipath UNet with its library of conditioning vectors.

    As in the paper, each sample's conditioning vector is drawn at random from a
    library of feature vectors of real images (``conditioning``, shape (K, D)).
    """

    def __init__(self, module: DigipathUNet, conditioning: torch.Tensor | None = None, name: str = "digipath-unet") -> None:
        self.module = module.eval()
        self.name = name
        cfg = module.config
        if cfg.cond_dim > 0:
            if conditioning is None or conditioning.ndim != 2 or conditioning.shape[1] != cfg.cond_dim:
                got = None if conditioning is None else tuple(conditioning.shape)
                raise ValueError(f"{name}: conditional generator needs a (K, {cfg.cond_dim}) conditioning library, got {got}")
        self.conditioning = conditioning.float().cpu() if conditioning is not None else None

    @property
    def default_layer(self) -> str:
        return self.module.config.default_layer

    @property
    def size_multiple(self) -> int:
        return self.module.config.stride

    @property
    def min_size(self) -> int:
        # the deepest stage runs at 1/stride of the output; reflect padding needs at least 2 px there
        cfg = self.module.config
        return cfg.stride * (2 if cfg.padding_mode == "reflect" else 1)

    def layers(self) -> list[LayerInfo]:
        return self.module.layers()

    def sample_inputs(self, generators: Sequence[torch.Generator], size: tuple[int, int]) -> Inputs:
        self.check_size(size)
        noise = torch.cat([self.module.sample_noise(g, size) for g in generators])
        inputs: Inputs = {"noise": noise}
        if self.conditioning is not None:
            idx = torch.cat([torch.randint(len(self.conditioning), (1,), generator=g) for g in generators])
            inputs["cond"] = self.conditioning[idx]
        return inputs

    def forward(self, inputs: Inputs) -> torch.Tensor:
        x = self._to_device(inputs)
        return self.module(x["noise"], x.get("cond"))


class StyleGAN2Generator(Generator):
    """An NVlabs StyleGAN2(-ADA) style generator: ``G.mapping(z, c)`` then ``G.synthesis(ws)``.

    Works with a ``G_ema`` unpickled from a StyleGAN2-ADA checkpoint (the NVlabs code
    must be importable for unpickling; see docs/models.md) and with any module of
    the same shape. Per-layer noise is ``'const'`` by default so a seed fully
    determines the image; layers are discovered by one dummy forward pass.
    """

    def __init__(self, G: nn.Module, *, truncation_psi: float = 1.0, noise_mode: str = "const",
                 default_layer: str | None = None, name: str = "stylegan2") -> None:
        self.module = G.eval()
        self.name = name
        self.truncation_psi = truncation_psi
        self.noise_mode = noise_mode
        res = int(G.img_resolution)
        self._size = (res, res)
        self._layers: list[LayerInfo] | None = None
        self._default = default_layer

    @property
    def fixed_size(self) -> tuple[int, int]:
        return self._size

    @property
    def default_layer(self) -> str:
        if self._default:
            return self._default
        # a middle block's second conv: coarse enough to paint regions (paper: 32x32 at 256 px)
        blocks = [i for i in self.layers() if i.name.startswith("synthesis.b") and i.name.endswith(".conv1")]
        return blocks[len(blocks) // 2].name if blocks else self.layers()[len(self.layers()) // 2].name

    def layers(self) -> list[LayerInfo]:
        if self._layers is None:
            g = [torch.Generator().manual_seed(0)]
            inputs = self.sample_inputs(g, self._size)
            shapes = discover_layers(self.module, lambda: self.forward(inputs))
            h = self._size[0]
            self._layers = [
                LayerInfo(n, s[1], max(1, h // s[2]))
                for n, s in shapes.items()
                if n.startswith("synthesis.") and len(s) == 4 and s[2] > 0
            ]
        return self._layers

    def sample_inputs(self, generators: Sequence[torch.Generator], size: tuple[int, int]) -> Inputs:
        self.check_size(size)
        z_dim = int(self.module.z_dim)
        z = torch.cat([torch.randn((1, z_dim), generator=g) for g in generators])
        c = torch.zeros((len(generators), int(getattr(self.module, "c_dim", 0))))
        return {"z": z, "c": c}

    def forward(self, inputs: Inputs) -> torch.Tensor:
        x = self._to_device(inputs)
        ws = self.module.mapping(x["z"], x["c"], truncation_psi=self.truncation_psi)
        return self.module.synthesis(ws, noise_mode=self.noise_mode)


def describe(gen: Generator) -> dict[str, Any]:
    return {
        "name": gen.name,
        "default_layer": gen.default_layer,
        "size_multiple": gen.size_multiple,
        "fixed_size": gen.fixed_size,
        "layers": [vars(i) for i in gen.layers()],
    }
