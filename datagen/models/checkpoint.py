"""Generator checkpoints: safetensors weights plus a JSON config that fully rebuilds the model.

A checkpoint is a directory:

    config.json                 {"architecture": "digipath-unet", "config": {...}, "meta": {...}}
    generator.safetensors       generator weights (the EMA copy when saved by training)
    conditioning.safetensors    optional: {"vectors": (K, D)} conditioning library

No pickles: loading never executes code from the checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import DatagenError
from ..fsutil import atomic_path, atomic_write_text
from .generator import DigipathGenerator
from .unet import DigipathUNet, UNetConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "generator.safetensors"
CONDITIONING_NAME = "conditioning.safetensors"
ARCHITECTURES = {"digipath-unet": (DigipathUNet, UNetConfig)}


class CheckpointError(DatagenError, ValueError):
    """A checkpoint directory that is missing files or does not match its config."""


def _atomic_save_file(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors file of ``tensors`` (on the CPU), replaced atomically: a killed save keeps the old one."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def save_generator(
    directory: str | os.PathLike,
    model: DigipathUNet,
    conditioning: torch.Tensor | None = None,
    meta: dict[str, Any] | None = None,
    *,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (and its conditioning library) as a checkpoint directory.

    ``weights_dtype=torch.float16`` halves the file for shipping; loading casts back
    to the model's float32 parameters.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if weights_dtype is not None:
        state = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()}
    _atomic_save_file(state, d / WEIGHTS_NAME)
    if conditioning is not None:
        _atomic_save_file({"vectors": conditioning.float()}, d / CONDITIONING_NAME)
    atomic_write_text(d / CONFIG_NAME, json.dumps({
        "architecture": "digipath-unet",
        "config": model.config.to_dict(),
        "meta": meta or {},
    }, indent=2) + "\n")
    return d


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a generator checkpoint (no {CONFIG_NAME})")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    if cfg.get("architecture") not in ARCHITECTURES:
        raise CheckpointError(f"{path}: field 'architecture' must be one of {sorted(ARCHITECTURES)}, got {cfg.get('architecture')!r}")
    return cfg


def load_unet(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[DigipathUNet, torch.Tensor | None, dict[str, Any]]:
    """Rebuild the UNet from ``config.json`` and load its weights and conditioning library."""
    d = Path(directory)
    cfg = read_config(d)
    try:
        model = DigipathUNet(UNetConfig.from_dict(cfg["config"]))
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{d / CONFIG_NAME}: field 'config' does not describe a digipath UNet ({e})") from None
    weights = d / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{d}: missing {WEIGHTS_NAME}")
    try:
        model.load_state_dict(load_file(str(weights), device=str(map_location)))
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not match config.json ({str(e).splitlines()[0]})") from None
    cond = None
    if (d / CONDITIONING_NAME).is_file():
        cond = load_file(str(d / CONDITIONING_NAME))["vectors"]
    return model.eval(), cond, cfg.get("meta", {})


def load_checkpoint(directory: str | os.PathLike, name: str | None = None) -> DigipathGenerator:
    model, cond, meta = load_unet(directory)
    crop = meta.get("crop")  # the training crop: the size the model knows best
    gen = DigipathGenerator(model, cond, name=name or meta.get("name") or Path(directory).name,
                            train_size=crop if isinstance(crop, int) and crop > 0 else None)
    mpp = meta.get("mpp")  # microns per pixel of the training images (the model's output scale)
    if isinstance(mpp, (int, float)) and not isinstance(mpp, bool) and mpp > 0:
        gen.mpp = float(mpp)
    return gen
