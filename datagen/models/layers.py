"""A small record describing one hookable layer of a generator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerInfo:
    """Where a layer sits: its module name, channel count and stride relative to the output."""

    name: str
    channels: int
    stride: int

    def size_at(self, height: int, width: int) -> tuple[int, int]:
        """The layer's spatial size when the generator outputs ``height x width``."""
        return height // self.stride, width // self.stride
