"""Pack a training config's images for a machine without the registry or imagecodecs.

Reads every data source of CONFIG the way ``datagen train`` does (including its
``scale``), and writes each as a JPEG (quality 95; PIL decodes it, no imagecodecs)
into DEST with ``scale: 1.0``, plus ``DEST/train.yaml``: CONFIG with its data paths
pointing there. The whole-slide JPEG tiles of the .svs are re-encoded once, which
is the only loss.

    python scripts/gpu_data.py training/tissue-small/train-projected.yaml .gpudata
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    from datagen.config import load_yaml
    from datagen.train.config import load_train_config
    from datagen.train.data import _open, find_images

    cfg_path, dest = Path(argv[0]), Path(argv[1])
    cfg = load_train_config(cfg_path)  # resolves the data paths
    raw = load_yaml(cfg_path)
    dest.mkdir(parents=True, exist_ok=True)
    data = []
    for src in cfg.data:
        for f in find_images(src.path):
            im = _open(f, src.scale)
            arr = np.asarray(im.array[: im.height, : im.width])[..., :3]
            out = dest / f"{f.stem}.jpg"
            Image.fromarray(np.ascontiguousarray(arr)).save(out, quality=95)
            data.append({"path": out.name, "scale": 1.0})
            print(f"{f} (scale {src.scale}) -> {out} {arr.shape[1]}x{arr.shape[0]}, {out.stat().st_size / 1e6:.2f} MB")
    raw["data"] = data
    (dest / "train.yaml").write_text(f"# {cfg_path} with its images packed by scripts/gpu_data.py\n" + yaml.safe_dump(raw, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
