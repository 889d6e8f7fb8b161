"""Painting overhead: painted-generation throughput / plain generator throughput (target >= 0.95).

Both sides render the same sample indices in the same batches on the same
device from the same per-sample noise; layouts are drawn beforehand (in a run
they are drawn on a helper thread, see bench_pipeline.py). The painted side is
``Renderer.render`` as ``datagen generate`` calls it: per-sample paint plans
(connected regions -> vectors -> layer cells) plus the hooked forward pass.
A third, informational side renders with the plans computed ahead
(``render(..., plans=...)``), which is what the device sees when plans are
made off its critical path. ``plan_ms_per_sample`` is that host-side work alone:
on a GPU, where a forward pass takes a few milliseconds, it is what matters.

    python benchmarks/bench_paint_overhead.py [--recipe R] [--device cuda] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common as C


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=2, help="batches per repetition")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.batches = min(a.reps, 3), 1
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)

    import numpy as np

    from datagen.generate import prepare
    from datagen.render import render_plain

    recipe = C.recipe_from_args(a)
    n = a.batch_size * a.batches
    job = prepare(recipe, num=n, seed=0, device=device)
    r = job.renderer
    layouts = np.stack([r.make_layout(i) for i in range(n)])
    batches = [list(range(k, min(k + a.batch_size, n))) for k in range(0, n, a.batch_size)]
    plans = [r.plan(i, layouts[i]) for i in range(n)]

    def painted() -> None:
        for b in batches:
            r.render(b, layouts[b[0]:b[-1] + 1])

    def painted_preplanned() -> None:
        for b in batches:
            r.render(b, layouts[b[0]:b[-1] + 1], plans=plans[b[0]:b[-1] + 1])

    def plain() -> None:
        for b in batches:
            render_plain(job.generator, b, r.size, 0)

    times = C.interleaved({"painted": painted, "plain": plain, "painted_preplanned": painted_preplanned},
                          a.reps, device=device)
    t0 = time.perf_counter()
    for _ in range(3):
        for i in range(n):
            r.plan(i, layouts[i])
    plan_ms = (time.perf_counter() - t0) / (3 * n) * 1e3

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "paint_overhead",
        "recipe": str(recipe),
        "size": list(r.size),
        "layer": r.layer,
        "layer_size": list(r.layer_size),
        "batch_size": a.batch_size,
        "samples_per_rep": n,
        "painted": C.summary(times["painted"], n),
        "plain": C.summary(times["plain"], n),
        "painted_preplanned": C.summary(times["painted_preplanned"], n),
        "plan_ms_per_sample": round(plan_ms, 3),
        "ratio": round(med["plain"] / med["painted"], 4),
        "ratio_preplanned": round(med["plain"] / med["painted_preplanned"], 4),
        "target": 0.95,
        "machine": C.machine_info(device),
    }
    C.emit(result, a)
    return result


if __name__ == "__main__":
    main()
