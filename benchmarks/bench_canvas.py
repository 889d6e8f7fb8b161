"""Whole-slide canvases: seam error vs margin, rendering speed vs tile size, memory vs canvas size.

1. Seams: a canvas rendered tile by tile with context margin M is compared with
   the same canvas rendered in one forward pass (the seam-free reference), for
   several M (``auto`` = the model's receptive-field radius): max and mean
   absolute difference, and the mean difference within 8 px of a tile border.
2. Speed: canvas megapixels per second rendered (tiles + mask, no file output)
   for a few (tile, margin) settings, interleaved.
3. Memory: peak RSS of ``render_canvas`` (all outputs: OME-Zarr, pyramid,
   OME-TIFFs) for a canvas and one with 4x the area, each in a fresh process,
   same tile and margin (memory depends on the window size, not the canvas).

    python benchmarks/bench_canvas.py [--recipe R] [--size 1024] [--device cuda]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import _common as C

CHILD = C.PEAK_RSS_SNIPPET + r"""
import json, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
from datagen.canvas import render_canvas
t0 = time.perf_counter()
rep = render_canvas({recipe!r}, size={size}, out={out!r}, seed=0, tile={tile}, margin={margin}, device={device!r},
                    progress=False)
print(json.dumps({{"size": {size}, "seconds": time.perf_counter() - t0, "tiles": rep.tiles,
                  "maxrss_kib": _peak_rss_kib()}}))
"""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--size", type=int, default=1024, help="canvas size of the seam part")
    p.add_argument("--speed-size", type=int, default=2048, help="canvas size of the speed part")
    p.add_argument("--seam-tile", type=int, default=256)
    p.add_argument("--margins", default="0,32,64,128,auto")
    p.add_argument("--tiles", default="512,1024", help="tile sizes of the speed part (with the auto margin)")
    p.add_argument("--memory-size", type=int, default=1024, help="the memory part renders this and 2x this size")
    p.add_argument("--memory-tile", type=int, default=256)
    p.add_argument("--memory-margin", type=int, default=64, help="(memory depends on the window, not the canvas)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--parts", default="seams,speed,memory", help="which parts to run (comma-separated)")
    a = p.parse_args(argv)
    if a.quick:
        a.size, a.speed_size, a.seam_tile, a.margins, a.tiles, a.reps = 256, 256, 64, "0,auto", "128,256", 1
        a.memory_size, a.memory_tile, a.memory_margin = 256, 64, 16
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)

    from datagen.canvas import canvas_from_recipe

    parts = set(a.parts.split(","))
    recipe = C.recipe_from_args(a)
    size = (a.size, a.size)
    ref_canvas, _ = canvas_from_recipe(recipe, size=size, seed=0, device=device)
    result: dict = {"benchmark": "canvas", "recipe": str(recipe), "layer": ref_canvas.layer,
                    "receptive_radius": ref_canvas.receptive_radius}
    if "seams" in parts:
        result["seams"] = seams_part(a, ref_canvas, recipe, device)
    if "speed" in parts:
        result["speed"] = speed_part(a, recipe, device)
    if "memory" in parts:
        result["memory"] = memory_part(a, recipe, device)
    result["machine"] = C.machine_info(device)
    C.emit(result, a)
    return result


def seams_part(a: argparse.Namespace, ref_canvas, recipe, device) -> dict:  # noqa: ANN001
    import numpy as np

    from datagen.canvas import canvas_from_recipe

    size = (a.size, a.size)
    full = ref_canvas.render_region(0, a.size, 0, a.size).astype(np.int16)
    border = np.zeros(size, dtype=bool)
    for k in range(a.seam_tile, a.size, a.seam_tile):
        border[max(0, k - 8):k + 8, :] = True
        border[:, max(0, k - 8):k + 8] = True
    seams = []
    for m in a.margins.split(","):
        margin = "auto" if m == "auto" else int(m)
        cv, _ = canvas_from_recipe(recipe, size=size, seed=0, device=device, margin=margin)
        img = np.zeros_like(full)
        for y0, y1, x0, x1 in cv.tiles(a.seam_tile):
            img[y0:y1, x0:x1] = cv.render_tile(y0, y1, x0, x1)
        d = np.abs(img - full)
        seams.append({"margin": cv.margin, "requested": m, "max_abs": int(d.max()), "mean_abs": round(float(d.mean()), 4),
                      "mean_abs_near_borders": round(float(d[border].mean()), 4),
                      "pixels_differing": round(float((d > 0).mean()), 6)})
    return {"size": a.size, "tile": a.seam_tile, "by_margin": seams}


def speed_part(a: argparse.Namespace, recipe, device) -> dict:  # noqa: ANN001
    from datagen.canvas import canvas_from_recipe

    fns = {}
    canvases = {}
    ssize = (a.speed_size, a.speed_size)
    for t in (int(x) for x in a.tiles.split(",")):
        if t > a.speed_size:
            continue
        cv, _ = canvas_from_recipe(recipe, size=ssize, seed=0, device=device)
        canvases[t] = cv

        def run(cv=cv, t=t) -> None:
            for bounds in cv.tiles(t):
                image, mask = cv.render_pair(bounds)  # what the slide writer calls: one pass per window
                mask()

        fns[f"tile{t}"] = run
    big, _ = canvas_from_recipe(recipe, size=ssize, seed=0, device=device)
    n = a.speed_size
    fns["one_pass"] = lambda: (big.render_region(0, n, 0, n), big.mask_region(0, n, 0, n))
    times = C.interleaved(fns, a.reps, warmup=0, device=device)
    mpx = n * n / 1e6
    speed = {k: {"median_s": round(statistics.median(v), 3), "megapixels_per_s": round(mpx / statistics.median(v), 4)}
             for k, v in times.items()}
    for t, cv in canvases.items():
        speed[f"tile{t}"]["margin"] = cv.margin
    return {"size": a.speed_size, **speed}


def memory_part(a: argparse.Namespace, recipe, device) -> dict:  # noqa: ANN001
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="datagen-bench-canvas-"))
    memory = []
    try:
        for s in (a.memory_size, 2 * a.memory_size):
            threads = a.threads or torch.get_num_threads()
            code = CHILD.format(root=str(C.ROOT), recipe=str(recipe), size=s, out=str(tmp / f"c{s}.ome.tif"),
                                tile=a.memory_tile, margin=a.memory_margin, device=device, threads=threads)
            r = C.run_child(code, threads)
            r["peak_rss_mib"] = round(r.pop("maxrss_kib") / 1024, 1)
            memory.append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    return {"tile": a.memory_tile, "margin": a.memory_margin, "runs": memory,
            "ratio_2x_over_1x": round(memory[1]["peak_rss_mib"] / memory[0]["peak_rss_mib"], 4)}


if __name__ == "__main__":
    main()
