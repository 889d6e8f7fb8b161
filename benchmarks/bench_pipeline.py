"""Pipeline efficiency: end-to-end ``generate`` throughput / rendering alone (target >= 0.90 on CPU).

End to end is :func:`datagen.generate.generate` writing a zarr dataset (layouts
on a helper thread, paint + forward on the calling thread, augmentation and
writing on a writer thread), timed as its report times it (model loading
excluded). Rendering alone renders the same samples in the same batches with
their layouts drawn beforehand, and writes nothing: the speed the pipeline
would reach if layouts, augmentation and writing were hidden completely.
The per-sample costs of those hidden stages are reported too.

    python benchmarks/bench_pipeline.py [--recipe R] [--num 32] [--device cuda]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common as C


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--num", type=int, default=32, help="samples per repetition")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--format", default="zarr", choices=("zarr", "tiff"))
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.num = min(a.reps, 2), min(a.num, 16)
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)

    import numpy as np

    from datagen.generate import augment_block, generate, prepare, render_block
    from datagen.writers import open_writer

    recipe = C.recipe_from_args(a)
    job = prepare(recipe, num=a.num, seed=0, device=device, block_size=a.block_size)
    info = job.info
    blocks = list(range(info.num_blocks))
    layouts = {b: np.stack([job.renderer.make_layout(i) for i in info.block_range(b)]) for b in blocks}
    tmp = Path(tempfile.mkdtemp(prefix="datagen-bench-pipeline-"))
    counter = [0]

    def render_only() -> None:
        for b in blocks:
            render_block(job, info.block_range(b), layouts[b], a.batch_size)

    try:
        # generate() timed as it reports itself (model loading excluded)
        seconds: list[float] = []

        def pipeline_timed() -> None:
            counter[0] += 1
            out = tmp / f"run{counter[0]}"
            rep = generate(recipe, out, num=a.num, seed=0, format=a.format, device=device,
                           batch_size=a.batch_size, block_size=a.block_size, progress=False,
                           workers=1)  # the in-process pipeline (bench_scaling.py measures worker processes)
            seconds.append(rep.seconds)
            shutil.rmtree(out, ignore_errors=True)

        times = C.interleaved({"pipeline": pipeline_timed, "render_only": render_only}, a.reps, device=device)
        times["pipeline"] = seconds[-a.reps:]  # drop the warm-up run

        # the stages the pipeline hides, each alone (informational)
        t0 = time.perf_counter()
        for b in blocks:
            for i in info.block_range(b):
                job.renderer.make_layout(i)
        layout_ms = (time.perf_counter() - t0) / a.num * 1e3
        imgs = {b: render_block(job, info.block_range(b), layouts[b], a.batch_size) for b in blocks}
        out = tmp / "write-only"
        w = open_writer(a.format, out, info)
        t0 = time.perf_counter()
        for b in blocks:
            i, m = augment_block(job, info.block_range(b), *imgs[b])
        aug_ms = (time.perf_counter() - t0) / a.num * 1e3
        t0 = time.perf_counter()
        for b in blocks:
            w.write_block(b, *imgs[b])
        w.close()
        write_ms = (time.perf_counter() - t0) / a.num * 1e3
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "pipeline",
        "recipe": str(recipe),
        "size": list(job.renderer.size),
        "format": a.format,
        "num": a.num,
        "batch_size": a.batch_size,
        "block_size": a.block_size,
        "augment": job.augment is not None,
        "pipeline": C.summary(times["pipeline"], a.num),
        "render_only": C.summary(times["render_only"], a.num),
        "ratio": round(med["render_only"] / med["pipeline"], 4),
        "target": 0.90,
        "hidden_stages_ms_per_sample": {"layout": round(layout_ms, 2), "augment": round(aug_ms, 2),
                                        "write": round(write_ms, 2)},
        "machine": C.machine_info(device),
    }
    C.emit(result, a)
    return result


if __name__ == "__main__":
    main()
