"""Open generators by a short spec string.

    builtin:tissue-small        a model shipped inside the package (no network)
    path/to/checkpoint_dir      a directory written by ``datagen train`` / ``save_generator``
    stylegan2:path/to/net.pkl   an NVlabs StyleGAN2-ADA pickle (needs the NVlabs code importable)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint
from .generator import Generator, StyleGAN2Generator

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFAULT_MODEL = "builtin:tissue-small"


def builtin_models() -> dict[str, Path]:
    """Built-in model names and their checkpoint directories."""
    if not BUILTIN_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUILTIN_DIR.iterdir()) if (p / "config.json").is_file()}


def load_stylegan2_pickle(path: str | os.PathLike, **kwargs: object) -> StyleGAN2Generator:
    """Unpickle ``G_ema`` from an NVlabs StyleGAN2-ADA ``.pkl``.

    The pickle references the NVlabs ``dnnlib`` and ``torch_utils`` packages; put a
    checkout of stylegan2-ada-pytorch on PYTHONPATH first. Unpickling runs code from
    the file: only open pickles you trust.
    """
    with open(path, "rb") as f:
        try:
            data = pickle.load(f)
        except ModuleNotFoundError as e:
            raise CheckpointError(
                f"{path}: unpickling needs the NVlabs StyleGAN2-ADA code ({e.name} not importable); "
                "add a stylegan2-ada-pytorch checkout to PYTHONPATH"
            ) from None
    G = data["G_ema"] if isinstance(data, dict) else data
    return StyleGAN2Generator(G.float(), name=Path(path).stem, **kwargs)  # type: ignore[arg-type]


def load_generator(spec: str = DEFAULT_MODEL, device: str | None = None) -> Generator:
    """Open a generator from a spec (see module docstring) and move it to ``device``."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        models = builtin_models()
        if name not in models:
            raise CheckpointError(f"unknown built-in model {name!r}; built-in models: {', '.join(models) or 'none'}")
        gen: Generator = load_checkpoint(models[name], name=spec)
    elif spec.startswith("stylegan2:"):
        gen = load_stylegan2_pickle(spec.split(":", 1)[1])
    else:
        path = Path(spec)
        if not path.exists():
            raise CheckpointError(f"model {spec!r}: no such checkpoint directory (or use builtin:NAME)")
        gen = load_checkpoint(path)
    return gen.to(resolve_device(device))


def resolve_device(device: str | None) -> str:
    """'auto'/None picks CUDA when present, else CPU."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device
