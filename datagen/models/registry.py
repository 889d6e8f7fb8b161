"""Open generators by a short spec string.

    builtin:tissue-small        a model shipped inside the package (no network)
    path/to/checkpoint_dir      a directory written by ``datagen train`` / ``save_generator``
    stylegan2:path/to/net.pkl   an NVlabs StyleGAN2-ADA pickle (needs the NVlabs code importable)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from ..errors import UsageError, arg
from ..options import DEVICE_HELP
from .checkpoint import CheckpointError, load_checkpoint
from .generator import Generator, StyleGAN2Generator

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFAULT_MODEL = "builtin:tissue-small"


def builtin_models() -> dict[str, Path]:
    """Built-in model names and their checkpoint directories."""
    if not BUILTIN_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUILTIN_DIR.iterdir()) if (p / "config.json").is_file()}


#: Why a ``stylegan2:`` pickle needs an explicit opt-in (shown when it is missing).
PICKLE_RISK = ("unpickling runs any code the file contains; open only pickles you trust, then pass "
               f"{arg('trust_pickles', True)} (or set trust: true in the recipe)")


def load_stylegan2_pickle(path: str | os.PathLike, *, trust: bool = False, **kwargs: object) -> StyleGAN2Generator:
    """Unpickle ``G_ema`` from an NVlabs StyleGAN2-ADA ``.pkl``.

    The pickle references the NVlabs ``dnnlib`` and ``torch_utils`` packages; put a
    checkout of stylegan2-ada-pytorch on PYTHONPATH first. Unpickling runs code from
    the file, so it is refused unless ``trust`` is set (``trust_pickles``, or
    ``trust: true`` in a recipe). A missing file or one that is not a pickle is
    reported before that check.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"StyleGAN2 pickle {str(path)!r} " + ("not found" if not p.exists() else "is not a file")
                              + " (a relative path is taken from the recipe's folder)")
    with open(p, "rb") as f:
        head = f.read(2)
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        raise CheckpointError(f"{path}: not a StyleGAN2-ADA pickle (a .pkl written by pickle protocol 2 or later); "
                              "datagen checkpoints are directories: give the directory without stylegan2:")
    if not trust:
        raise CheckpointError(f"{path}: refusing to open a stylegan2: pickle: {PICKLE_RISK}")
    with open(p, "rb") as f:
        try:
            data = pickle.load(f)
        except ModuleNotFoundError as e:
            raise CheckpointError(
                f"{path}: unpickling needs the NVlabs StyleGAN2-ADA code ({e.name} not importable); "
                "add a stylegan2-ada-pytorch checkout to PYTHONPATH"
            ) from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as e:
            from ..config import excerpt

            raise CheckpointError(f"{path}: not a readable StyleGAN2-ADA pickle ({type(e).__name__}: "
                                  f"{excerpt(str(e))})") from None
    G = data["G_ema"] if isinstance(data, dict) and "G_ema" in data else data
    if not (hasattr(G, "mapping") and hasattr(G, "synthesis") and hasattr(G, "float")):
        raise CheckpointError(f"{path}: the pickle holds no StyleGAN2 generator (expected a dict with G_ema, "
                              f"or G itself; got {type(G).__name__})")
    return StyleGAN2Generator(G.float(), name=p.stem, **kwargs)  # type: ignore[arg-type]


def load_generator(spec: str = DEFAULT_MODEL, device: str | None = None, *, trust_pickles: bool = False) -> Generator:
    """Open a generator from a spec (see module docstring) and move it to ``device``.

    ``trust_pickles``: allow ``stylegan2:`` pickles (unpickling runs code from the file)."""
    dev = resolve_device(device)  # a bad --device fails before any model is read
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        models = builtin_models()
        if name not in models:
            raise CheckpointError(f"unknown built-in model {name!r}; built-in models: {', '.join(models) or 'none'}")
        gen: Generator = load_checkpoint(models[name], name=spec)
    elif spec.startswith("stylegan2:"):
        gen = load_stylegan2_pickle(spec.split(":", 1)[1], trust=trust_pickles)
    else:
        path = Path(spec)
        if not path.exists():
            raise CheckpointError(f"model {spec!r}: no such checkpoint directory (or use builtin:NAME)")
        gen = load_checkpoint(path)
    return gen.to(dev)


def resolve_device(device: str | None) -> str:
    """'auto'/None picks CUDA when present, else CPU. Anything else must name a usable device:
    a UsageError (naming ``device`` and the choices) otherwise."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"unknown device {str(device)[:40]!r}; expected {DEVICE_HELP}", param="device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{device!r} requested but CUDA is not available here; use {arg('device', 'cpu')} "
                             "(or auto)", param="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{device!r} requested but this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})", param="device")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError(f"{device!r} requested but MPS is not available here; expected {DEVICE_HELP}",
                             param="device")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {device!r}; expected {DEVICE_HELP}", param="device")
    return device
