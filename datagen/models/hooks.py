"""Read or replace the output of any named submodule of any ``torch.nn.Module``.

Everything the product does to a GAN's hidden layer goes through :class:`LayerHook`:
extraction reads an activation, visualisation and painting replace it. The hook is
a context manager, so nothing stays registered after the ``with`` block and there
is no global state.

    with LayerHook(model, "dec.x16", edit=lambda a: paint(a, ...)) as hook:
        image = model(noise, cond)
    hook.original   # the layer's own activations (before the edit)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import DatagenError

Edit = Callable[[torch.Tensor], torch.Tensor]


class LayerNotFoundError(DatagenError, KeyError):
    """A layer name that the generator does not have; the message lists near matches (or the layers)."""


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted path), or an error naming the closest ones."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LayerNotFoundError(
            f"layer {name!r} not found in {type(model).__name__}{hint}"
        ) from None


class LayerHook:
    """Forward hook on one named layer: records its output and optionally replaces it.

    ``edit`` receives the layer's activation tensor (N, C, H, W) and returns the
    tensor to use instead (same shape). For modules that return tuples (StyleGAN2
    synthesis blocks return ``(x, img)``), ``output_index`` picks the activation.
    ``record=False`` skips keeping references, for bulk rendering.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        edit: Edit | None = None,
        *,
        output_index: int = 0,
        record: bool = True,
    ) -> None:
        self.module = resolve_layer(model, layer)
        self.layer = layer
        self.edit = edit
        self.output_index = output_index
        self.record = record
        self.original: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        self._handle: Any = None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        is_tuple = isinstance(output, tuple)
        act = output[self.output_index] if is_tuple else output
        if self.record:
            self.original = act
        if self.edit is None:
            return None  # leave the output object untouched: bit-identical forward
        new = self.edit(act)
        if new.shape != act.shape:
            raise ValueError(
                f"edit of layer {self.layer!r} changed its shape {tuple(act.shape)} -> {tuple(new.shape)}"
            )
        if self.record:
            self.output = new
        if is_tuple:
            out = list(output)
            out[self.output_index] = new
            return tuple(out)
        return new

    def __enter__(self) -> "LayerHook":
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def discover_layers(model: nn.Module, run: Callable[[], Any]) -> dict[str, tuple[int, ...]]:
    """Output shape of every named submodule during one call of ``run``.

    Works for any generator: it is how layer listings are built for models that
    do not describe their own layers (e.g. a StyleGAN2 pickle).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            t = out[0] if isinstance(out, tuple) else out
            if isinstance(t, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(t.shape)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return shapes
