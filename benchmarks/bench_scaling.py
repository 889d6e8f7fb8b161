"""Scaling: painted-rendering throughput vs output resolution and batch size.

For every (size, batch size) pair the same recipe is rendered at that size
(the model is fully convolutional; the recipe's ``size`` is overridden), with
layouts drawn beforehand. Pairs are measured round-robin, repetition by
repetition, so background load spreads over all of them. Reports images/s and
megapixels/s; the device is ``--device`` (CUDA when asked and present).

    python benchmarks/bench_scaling.py [--sizes 128 256 512 1024] [--batch-sizes 1 4 8] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics

import _common as C


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--pixels-per-rep", type=float, default=2.0,
                   help="megapixels rendered per repetition of each pair (whole batches, at least one)")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.batch_sizes, a.reps, a.pixels_per_rep = [64, 128], [1, 4], 2, 0.1
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)

    import numpy as np

    from datagen.generate import build_renderer
    from datagen.models.registry import load_generator
    from datagen.recipe import load_recipe

    recipe_path = C.recipe_from_args(a)
    recipe = load_recipe(recipe_path)
    gen = load_generator(recipe.model_spec, device)
    fns = {}
    meta = {}
    for size in a.sizes:
        recipe.size = (size, size)
        try:
            r = build_renderer(recipe, gen, seed=0)
        except Exception as e:  # noqa: BLE001 - a size the model cannot make is skipped, and said so
            meta[f"{size}"] = {"skipped": str(e)}
            continue
        for bs in a.batch_sizes:
            batches = max(1, round(a.pixels_per_rep * 1e6 / (size * size * bs)))
            n = batches * bs
            layouts = np.stack([r.make_layout(i) for i in range(n)])

            def fn(r=r, layouts=layouts, bs=bs, n=n) -> None:
                for k in range(0, n, bs):
                    r.render(list(range(k, k + bs)), layouts[k:k + bs])

            key = f"{size}px_b{bs}"
            fns[key] = fn
            meta[key] = {"size": size, "batch_size": bs, "images_per_rep": n}
    times = C.interleaved(fns, a.reps, device=device)
    rows = []
    for key, t in times.items():
        m = meta[key]
        med = statistics.median(t)
        rows.append({**m, "median_s": round(med, 4), "images_per_s": round(m["images_per_rep"] / med, 3),
                     "megapixels_per_s": round(m["images_per_rep"] * m["size"] ** 2 / med / 1e6, 3)})
    result = {
        "benchmark": "scaling",
        "recipe": str(recipe_path),
        "layer": r.layer if fns else None,
        "results": rows,
        "skipped": {k: v for k, v in meta.items() if "skipped" in v},
        "machine": C.machine_info(device),
    }
    C.emit(result, a)
    return result


if __name__ == "__main__":
    main()
