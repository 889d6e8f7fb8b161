"""``datagen train``: train the digipath GAN on unlabeled images (the work is in datagen.train).

Nothing heavy is imported here: the parser is built for every ``datagen`` command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import DatagenError
from .app import add_command, add_quiet

#: Options that override a training config's value (None: keep the config's), and TrainConfig's
#: defaults for the help text (datagen.train imports torch; tests/test_cli.py keeps these in step).
TRAIN_DEFAULTS = {"steps": 5000, "crop": 128, "batch": 16, "device": "auto", "seed": 0, "threads": None,
                  "feature_extractor": "efficientnet-lite0", "precision": "fp32"}
OVERRIDES = tuple(TRAIN_DEFAULTS)


def cmd_train(a: argparse.Namespace) -> int:
    from ..train import TrainConfig, load_train_config, train
    from ..train.loop import CONFIG_NAME

    if a.data and a.config is not None:
        raise DatagenError("--data and a CONFIG file are exclusive: list data sources in the config")
    overrides: dict[str, Any] = {k: getattr(a, k) for k in OVERRIDES}
    if a.resume and a.config is None and (Path(a.out) / CONFIG_NAME).exists():
        cfg = load_train_config(Path(a.out) / CONFIG_NAME, **overrides)
    elif a.config is not None:
        cfg = load_train_config(a.config, **overrides)
    else:
        if not a.data:
            raise DatagenError("give a training config (CONFIG) or at least one --data image/folder")
        from ..config import parse_model

        raw = {"data": [{"path": str(Path(p).resolve())} for p in a.data], **{k: v for k, v in overrides.items() if v is not None}}
        cfg = parse_model(TrainConfig, raw, prefix=None)
        cfg.check()
    ckpt = train(cfg, a.out, resume=a.resume, progress=not a.quiet)
    if not a.quiet:
        print(f"checkpoint: {ckpt}  (load it with --model {ckpt} or in a recipe's 'model:')")
    return 0


def add_train_command(sub: Any) -> None:
    def from_cfg(name: str) -> str:
        d = TRAIN_DEFAULTS[name]
        return "default: CONFIG's value, else " + ("torch's" if d is None else str(d))

    t = add_command(sub, "train", cmd_train, "train the digipath GAN on unlabeled images")
    t.add_argument("config", nargs="?", help="training YAML (see training/tissue-small/train.yaml)")
    t.add_argument("--data", action="append", help="image file or folder (repeatable) when no CONFIG is given")
    t.add_argument("--out", required=True, help="run directory (checkpoints, samples, logs)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out (with its train.yaml "
                   "unless CONFIG is given)")
    t.add_argument("--steps", type=int, help=f"train until this step, counted from the start of the run ({from_cfg('steps')})")
    t.add_argument("--crop", type=int, help=f"training crop size in px, a multiple of the generator stride ({from_cfg('crop')})")
    t.add_argument("--batch", type=int, help=f"crops per step ({from_cfg('batch')})")
    t.add_argument("--device", help=f"auto (CUDA when present), cpu, cuda or cuda:N ({from_cfg('device')})")
    t.add_argument("--seed", type=int, help=f"seed of initialisation, crops and noise ({from_cfg('seed')})")
    t.add_argument("--threads", type=int, help=f"CPU threads for torch ({from_cfg('threads')})")
    t.add_argument("--feature-extractor", choices=("efficientnet-lite0", "none"),
                   help=f"conditioning features of real crops; none: an unconditional GAN ({from_cfg('feature_extractor')})")
    t.add_argument("--precision", choices=("fp32", "bf16"),
                   help=f"bf16: forward passes under bfloat16 autocast; on a 2-core AVX512-BF16 CPU a step was "
                        f"2.1x faster at 256-px crops, 1.1-1.3x at 128 px ({from_cfg('precision')})")
    add_quiet(t)
