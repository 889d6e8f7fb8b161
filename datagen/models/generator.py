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

from ..errors import UsageError
from .hooks import LayerNotFoundError, discover_layers
from .layers import LayerInfo
from .unet import DigipathUNet

Inputs = dict[str, torch.Tensor]


class Generator(ABC):
    """Adapter around a torch generator: inputs from seeds, forward, layer listing."""

    name: str = "generator"
    module: nn.Module
    #: The crop side the model was trained at, when its checkpoint records it.
    train_size: int | None = None
    #: Microns per pixel of the images it was trained on (its output scale), when its checkpoint records it.
    mpp: float | None = None

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
    def native_size(self) -> tuple[int, int]:
        """The size used when none is given: the fixed size, else the training crop, else 256 px
        (each rounded up to a size the model supports)."""
        if self.fixed_size is not None:
            return (int(self.fixed_size[0]), int(self.fixed_size[1]))
        m = self.size_multiple
        side = max(int(self.train_size or 256), self.min_size)
        side = -(-side // m) * m
        return (side, side)

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
        raise LayerNotFoundError(f"{self.name} has no layer {name!r}; layers: {names}")

    @property
    def min_size(self) -> int:
        """Smallest output side the model can generate (a multiple of :attr:`size_multiple`)."""
        return self.size_multiple

    def check_size(self, size: tuple[int, int]) -> None:
        if self.fixed_size is not None and tuple(size) != tuple(self.fixed_size):
            raise UsageError(f"{self.name} only generates {self.fixed_size[0]}x{self.fixed_size[1]}, not {size[0]}x{size[1]}")
        m = self.size_multiple
        if size[0] % m or size[1] % m or min(size) <= 0:
            raise UsageError(f"{self.name}: output size {size[0]}x{size[1]} must be a positive multiple of {m}")
        if min(size) < self.min_size:
            raise UsageError(f"{self.name}: output size {size[0]}x{size[1]} is too small for this model; each side "
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

    def __init__(self, module: DigipathUNet, conditioning: torch.Tensor | None = None, name: str = "digipath-unet",
                 train_size: int | None = None) -> None:
        self.module = module.eval()
        self.name = name
        self.train_size = train_size
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

    *Fixed style* (``fixed_style=SEED``, or :meth:`set_fixed_style`): the styles (rows of
    ``ws``) that act after ``fixed_style_after`` (a layer name; None: every style) are one
    ``w``, drawn from ``SEED``, for every sample. Painting at a layer is then not undone
    by each sample's own later styles (Herdt & Maass sec. 4.4), while the styles before
    the layer still vary per sample, so the unpainted content does.
    """

    def __init__(self, G: nn.Module, *, truncation_psi: float = 1.0, noise_mode: str = "const",
                 default_layer: str | None = None, name: str = "stylegan2",
                 fixed_style: int | None = None, fixed_style_after: str | None = None) -> None:
        self.module = G.eval()
        self.name = name
        self.truncation_psi = truncation_psi
        self.noise_mode = noise_mode
        res = int(G.img_resolution)
        self._size = (res, res)
        self._layers: list[LayerInfo] | None = None
        self._default = default_layer
        self._style_use: dict[str, int] | None = None
        self._style_calls: dict[str, tuple[int, int]] = {}
        self.fixed_style: int | None = None
        self.fixed_style_after: str | None = None
        self._fixed_start = 0
        self._fixed_ws: dict[torch.device, torch.Tensor] = {}
        if fixed_style is not None:
            self.set_fixed_style(fixed_style, after=fixed_style_after)

    @property
    def fixed_size(self) -> tuple[int, int]:
        return self._size

    @property
    def default_layer(self) -> str:
        if self._default:
            return self._default
        # the paper paints b16.conv1: 16x16, at 256 px (sec. 4.2.2); else a middle block's second conv
        names = [i.name for i in self.layers()]
        if "synthesis.b16.conv1" in names:
            return "synthesis.b16.conv1"
        blocks = [n for n in names if n.startswith("synthesis.b") and n.endswith(".conv1")]
        return blocks[len(blocks) // 2] if blocks else names[len(names) // 2]

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
        if self.fixed_style is not None:
            fixed = self._fixed_w(ws.device, ws.dtype)
            s = self._fixed_start
            ws = torch.cat([ws[:, :s], fixed[:, s:].expand(ws.shape[0], -1, -1)], dim=1)
        return self.module.synthesis(ws, noise_mode=self.noise_mode)

    # -- styles -----------------------------------------------------------------------
    def style_indices_after(self, layer: str) -> list[int]:
        """The rows of ``ws`` read by the synthesis after ``layer`` has produced its output.

        Found by one forward pass: every style affine (a submodule called ``affine``, as in
        NVlabs' SynthesisLayer/ToRGBLayer) is recorded in call order with the ``ws`` row it
        reads (each row is given a distinct constant value)."""
        order = self._style_order()
        if layer not in order:
            raise LayerNotFoundError(f"{self.name} has no layer {layer!r} in its synthesis network")
        pos = order[layer]
        return sorted({i for n, (p, i) in self._style_calls.items() if p > pos})

    def _style_order(self) -> dict[str, int]:
        """Layer name -> position in the forward pass (completion order); style affines are
        kept in ``_style_calls`` as name -> (position, ws row)."""
        if self._style_use is not None:
            return self._style_use
        m = self.module
        num_ws = int(getattr(m.synthesis, "num_ws", 0) or getattr(m.mapping, "num_ws", 0))
        w_dim = int(getattr(m, "w_dim", 0) or getattr(m.synthesis, "w_dim", 0))
        dev = self.device
        ws = (torch.arange(num_ws, dtype=torch.float32, device=dev) + 1.0)[None, :, None].expand(1, num_ws, w_dim)
        order: dict[str, int] = {}
        calls: dict[str, tuple[int, int]] = {}
        handles = []
        for name, mod in m.synthesis.named_modules():
            full = f"synthesis.{name}" if name else "synthesis"

            def hook(mod_: nn.Module, args: Any, out: Any, full: str = full) -> None:
                order.setdefault(full, len(order))
                if full.endswith(".affine") and args and isinstance(args[0], torch.Tensor):
                    calls.setdefault(full, (order[full], int(round(float(args[0].reshape(-1)[0]))) - 1))

            handles.append(mod.register_forward_hook(hook))
        try:
            with torch.no_grad():
                m.synthesis(ws.contiguous(), noise_mode=self.noise_mode)
        finally:
            for h in handles:
                h.remove()
        self._style_calls = calls
        self._style_use = order
        return order

    def set_fixed_style(self, seed: int | None, *, after: str | None = None) -> None:
        """Share one style among all samples (None turns it off).

        ``seed``: the fixed ``w`` is ``mapping(z)`` for ``z`` drawn from
        ``torch.Generator().manual_seed(seed)``. ``after``: only the styles that act after
        this layer are fixed (the paint layer: styles before it keep varying); None fixes all.
        """
        self._fixed_ws.clear()
        if seed is None:
            self.fixed_style, self.fixed_style_after, self._fixed_start = None, None, 0
            return
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"expected a seed (integer >= 0), got {seed!r}", param="fixed_style")
        start = 0
        if after is not None:
            later = self.style_indices_after(after)
            start = min(later) if later else int(getattr(self.module.synthesis, "num_ws", 0))
        self.fixed_style, self.fixed_style_after, self._fixed_start = int(seed), after, start

    def styles_fixed_after(self, layer: str) -> bool:
        """True when every style that acts after ``layer`` is shared by all samples."""
        if self.fixed_style is None:
            return False
        later = self.style_indices_after(layer)
        return not later or min(later) >= self._fixed_start

    def _fixed_w(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        ws = self._fixed_ws.get(device)
        if ws is None:
            g = torch.Generator().manual_seed(int(self.fixed_style))  # type: ignore[arg-type]
            z = torch.randn((1, int(self.module.z_dim)), generator=g).to(device)
            c = torch.zeros((1, int(getattr(self.module, "c_dim", 0))), device=device)
            with torch.no_grad():
                ws = self.module.mapping(z, c, truncation_psi=self.truncation_psi)
            self._fixed_ws[device] = ws
        return ws.to(dtype)


def describe(gen: Generator) -> dict[str, Any]:
    return {
        "name": gen.name,
        "default_layer": gen.default_layer,
        "size_multiple": gen.size_multiple,
        "fixed_size": gen.fixed_size,
        "layers": [vars(i) for i in gen.layers()],
    }
