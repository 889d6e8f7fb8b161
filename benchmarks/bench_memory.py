"""Memory: peak RSS of ``generate`` for N and 10 x N samples at the same batch size (target: within 10%).

Each run is a fresh Python process that generates a zarr dataset and reports its
own peak resident set size (``VmHWM`` from /proc/self/status; elsewhere
``ru_maxrss``); the parent also reads ``getrusage(RUSAGE_CHILDREN)`` after each
child as a cross-check (a running maximum over all children, so only
meaningful for the larger run, which comes second). Memory must not grow with
the number of samples: at most two rendered blocks wait for the writer. Choose
N of a few blocks, so the small run reaches the pipeline's steady state too
(blocks being rendered, prefetched and written at once).

    python benchmarks/bench_memory.py [--recipe R] [--num 16] [--factor 10]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
from pathlib import Path

import _common as C

CHILD = C.PEAK_RSS_SNIPPET + r"""
import json, sys, time
sys.path.insert(0, {root!r})
import torch
if {threads}:
    torch.set_num_threads({threads})
from datagen.generate import generate
t0 = time.perf_counter()
rep = generate({recipe!r}, {out!r}, num={num}, seed=0, format="zarr", device={device!r},
               batch_size={batch}, block_size={block}, progress=False, workers=1)  # this process's memory only
print(json.dumps({{"num": {num}, "written": rep.written_samples, "seconds": time.perf_counter() - t0,
                  "maxrss_kib": _peak_rss_kib()}}))
"""


def run_child(recipe: Path, out: Path, num: int, a: argparse.Namespace, device: str) -> dict:
    code = CHILD.format(root=str(C.ROOT), recipe=str(recipe), out=str(out), num=num, device=device,
                        batch=a.batch_size, block=a.block_size, threads=a.threads or 0)
    res = C.run_child(code, a.threads)
    res["children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--num", type=int, default=64, help="N: samples of the small run")
    p.add_argument("--factor", type=int, default=10, help="the large run generates factor x N samples")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=16)
    a = p.parse_args(argv)
    if a.quick:
        a.num = min(a.num, 8)
    device = C.resolve_device(a.device)
    recipe = C.recipe_from_args(a)
    tmp = Path(tempfile.mkdtemp(prefix="datagen-bench-memory-"))
    try:
        small = run_child(recipe, tmp / "small", a.num, a, device)
        large = run_child(recipe, tmp / "large", a.num * a.factor, a, device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = large["maxrss_kib"] / small["maxrss_kib"]
    result = {
        "benchmark": "memory",
        "recipe": str(recipe),
        "batch_size": a.batch_size,
        "block_size": a.block_size,
        "small": {**small, "peak_rss_mib": round(small["maxrss_kib"] / 1024, 1)},
        "large": {**large, "peak_rss_mib": round(large["maxrss_kib"] / 1024, 1)},
        "ratio_large_over_small": round(ratio, 4),
        "target": "<= 1.10",
        "machine": C.machine_info(device),
    }
    C.emit(result, a)
    return result


if __name__ == "__main__":
    main()
