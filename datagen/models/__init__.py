"""Generators: the digipath UNet, a generic hook point, checkpoints and built-in models."""

from .checkpoint import CheckpointError, load_checkpoint, load_unet, save_generator
from .generator import DigipathGenerator, Generator, StyleGAN2Generator
from .hooks import LayerHook, LayerNotFoundError, discover_layers, resolve_layer
from .layers import LayerInfo
from .registry import DEFAULT_MODEL, builtin_models, load_generator, load_stylegan2_pickle, resolve_device
from .unet import DigipathUNet, UNetConfig

__all__ = [
    "CheckpointError", "DEFAULT_MODEL", "DigipathGenerator", "DigipathUNet", "Generator",
    "LayerHook", "LayerInfo", "LayerNotFoundError", "StyleGAN2Generator", "UNetConfig",
    "builtin_models", "discover_layers", "load_checkpoint", "load_generator",
    "load_stylegan2_pickle", "load_unet", "resolve_device", "resolve_layer", "save_generator",
]
