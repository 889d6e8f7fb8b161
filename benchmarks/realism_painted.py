"""Realism of painted data: Fréchet distance of a recipe's image/mask pairs against real crops.

    python benchmarks/realism_painted.py recipes/tissue-small-demo.yaml [OTHER.yaml ...] --num 256

benchmarks/realism.py scores a model's plain samples. What a segmentation model is trained
on is the painted pairs, and their variety depends on the recipe and its vector library too:
a library whose every class is one vector paints one appearance per class however many
samples are drawn. This scores the painted images of each recipe (samples 0..N-1 of
``--seed``, rendered as ``datagen generate`` renders them) against the same real set A as
realism.py (the training config's data through the training sampler, at the recipe's image
size), beside the real-vs-real floor, in one run. Per recipe it also reports the glass share
of the images and how many distinct vectors each painted class holds (cosine <= 0.999, as
``datagen vectors extract`` dedupes).

Numbers are comparable only at the same N, size and reference set. Default reference:
training/tissue-small/train-projected.yaml (256-px crops up to 80 % glass; the data comes
from scripts/fetch_training_data.sh).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import realism  # noqa: E402
from datagen.errors import DatagenError  # noqa: E402
from datagen.generate import Job, prepare  # noqa: E402
from datagen.metrics import FD_INPUT_SIZE, FD_LAYER, extract_features, frechet_distance, realism_extractor  # noqa: E402
from datagen.recipe.class_vectors import resolve_class_vectors  # noqa: E402
from datagen.train import load_train_config  # noqa: E402
from datagen.vectors import count_distinct  # noqa: E402

DEFAULT_REFERENCE = ROOT / "training" / "tissue-small" / "train-projected.yaml"


def painted_images(job: Job, num: int, batch: int) -> tuple[torch.Tensor, dict[str, int]]:
    """Samples 0..num-1 of a prepared recipe as (N, 3, H, W) in [-1, 1], and each painted class's distinct vectors."""
    vectors = resolve_class_vectors(job.recipe, job.recipe.load_library())
    distinct = {name: count_distinct(v) for name, (v, _) in vectors.items()}
    out = []
    for start in range(0, num, batch):
        images, _ = job.renderer.pairs(range(start, min(num, start + batch)), batch_size=batch)
        out.append(torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0))
    return torch.cat(out), distinct


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = load_train_config(args.reference)
    rows, size, real_feats = [], None, None
    ex = realism_extractor(FD_LAYER, device="cpu")
    kw = dict(batch_size=32, input_size=FD_INPUT_SIZE)
    for recipe in args.recipes:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            job = prepare(Path(recipe), num=args.num, seed=args.seed, block_size=args.batch, batch_size=args.batch,
                          check_separability=False)
        h, w = job.renderer.size  # checked before anything is rendered
        if size is None:
            if h != w:
                raise DatagenError(f"{recipe}: size must be square to compare with real crops, got {(h, w)}")
            size = h
            real_a, real_b, _ = realism.real_sets(cfg, size, args.num, args.seed)
            real_feats = (extract_features(real_a, ex, **kw), extract_features(real_b, ex, **kw))
            floor = frechet_distance(real_feats[1], real_feats[0])
        elif (h, w) != (size, size):
            raise DatagenError(f"{recipe}: size {(h, w)} differs from the first recipe's {size} px")
        images, distinct = painted_images(job, args.num, args.batch)
        feats = extract_features(images, ex, **kw)
        rows.append({"recipe": str(recipe), "fd_painted_vs_real": frechet_distance(feats, real_feats[0]),
                     "glass": realism.glass_coverage(images)["mean_glass"], "distinct_vectors": distinct,
                     "wall_s": round(time.perf_counter() - t, 1)})
    return {"num": args.num, "seed": args.seed, "size": size, "reference": str(args.reference),
            "fd_real_vs_real": floor, "rows": rows, "wall_time_s": round(time.perf_counter() - t0, 1)}


def format_report(r: dict) -> str:
    lines = [f"painted realism (N={r['num']}, {r['size']} px, seed {r['seed']}; reference {r['reference']})",
             f"  real vs real (floor)   FD {r['fd_real_vs_real']:.1f}"]
    for row in r["rows"]:
        lines.append(f"  {row['recipe']}: FD {row['fd_painted_vs_real']:.1f}, glass {row['glass']:.3f}, "
                     f"distinct vectors per class {row['distinct_vectors']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipes", nargs="+", help="recipe YAMLs, all of one square image size")
    p.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="training YAML whose data gives the real crops")
    p.add_argument("--num", type=int, default=256, help="images per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if args.num < 2:
        p.error("--num must be at least 2 (a covariance needs two samples)")
    return realism.report("realism_painted", run, format_report, args)


if __name__ == "__main__":
    raise SystemExit(main())
