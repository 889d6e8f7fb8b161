"""Ship a training run as a built-in model and keep a resumable snapshot of it.

    python scripts/export_builtin.py runs/tissue-small tissue-small

writes ``datagen/models/builtin/<name>/`` (fp16 EMA weights, config, conditioning
library, a 256-px sample grid) and ``training/<name>/resume/`` (a compact
train_state.pt without optimiser moments, fp16 weights; the feature bank and the log), from which
``datagen train training/<name>/train.yaml --out RUN --resume`` continues after
copying the snapshot into RUN (see training/<name>/README.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from datagen.models import load_unet, save_generator
from datagen.seeding import sample_torch_generator
from datagen.train.loop import compact_state, save_grid

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("name")
    p.add_argument("--grid-size", type=int, default=256)
    p.add_argument("--mpp", type=float, default=None,
                   help="microns per pixel at the training scale (default: the shipped model's meta.mpp, if any)")
    p.add_argument("--train-config", default=None, help="meta.train_config text (default: the run's)")
    p.add_argument("--full-precision-snapshot", action="store_true",
                   help="keep the snapshot's weights in fp32 (default fp16: half the size, rounded once on resume)")
    a = p.parse_args()
    run = Path(a.run)
    model, cond, meta = load_unet(run / "checkpoint")
    dest = ROOT / "datagen" / "models" / "builtin" / a.name
    old = json.loads((dest / "config.json").read_text()).get("meta", {}) if (dest / "config.json").exists() else {}
    meta = {**meta, "name": f"builtin:{a.name}", "note": "fp16 weights of the run's EMA checkpoint"}
    mpp = a.mpp if a.mpp is not None else old.get("mpp")  # a property of the training data, not of the run
    if mpp is not None:
        meta["mpp"] = mpp
    if a.train_config is not None:
        meta["train_config"] = a.train_config
    save_generator(dest, model, cond, meta, weights_dtype=torch.float16)
    # the grid comes from the shipped (fp16-rounded) weights, exactly as users load them
    shipped, cond16, _ = load_unet(dest)
    noise = torch.cat([shipped.sample_noise(sample_torch_generator(0, i, "noise"), (a.grid_size, a.grid_size)) for i in range(16)])
    c = cond16[torch.randint(len(cond16), (16,), generator=torch.Generator().manual_seed(0))] if cond16 is not None else None
    with torch.no_grad():
        imgs = torch.cat([shipped(noise[i:i + 4], None if c is None else c[i:i + 4]) for i in range(0, 16, 4)])
    save_grid(imgs, dest / "samples.png", nrow=4)
    snap = ROOT / "training" / a.name / "resume"
    compact_state(run / "train_state.pt", snap / "train_state.pt", half=not a.full_precision_snapshot)
    for f in ("feature_bank.pt", "log.jsonl"):  # resume/train.yaml is kept by hand (relative data paths)
        if (run / f).exists():
            shutil.copy2(run / f, snap / f)
    print(f"built-in model -> {dest}\nresumable snapshot -> {snap}")


if __name__ == "__main__":
    main()
