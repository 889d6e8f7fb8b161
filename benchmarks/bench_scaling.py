"""Scaling: throughput vs resolution and batch size, and the default ``generate`` vs other settings.

Part ``sizes``: for every (size, batch size) pair the same recipe is rendered at
that size (the model is fully convolutional; the recipe's ``size`` is
overridden), with layouts drawn beforehand. Pairs are measured round-robin,
repetition by repetition, so background load spreads over all of them. Reports
images/s and megapixels/s; the device is ``--device`` (CUDA when asked and present).

Part ``settings``: the whole ``datagen generate RECIPE --out DIR --num N`` command,
as a user runs it (a fresh process: start-up, model load, the ``mask: rendered``
fit and writing included), with its defaults (``OMP_NUM_THREADS`` unset) and with
other settings (``--setting "OMP_NUM_THREADS=1 --workers 1 --batch-size 1"``: leading
``NAME=VALUE`` words are environment variables, the rest ``generate`` options;
``{cores}`` is replaced by this machine's available cores), the settings interleaved
repetition by repetition. Reports each setting's img/s (samples over the command's
wall time, and over the run as ``generate`` reports it), the best setting, and
default / best; also the best among the settings that write the same data as the
default (a different ``--batch-size`` may move pixels by 1; threads and workers never
do). The figures are printed on stderr as a table, and in the JSON.

    python benchmarks/bench_scaling.py [--parts sizes,settings] [--sizes 128 256 512 1024] [--batch-sizes 1 4 8]
    python benchmarks/bench_scaling.py --parts settings --recipe recipes/tissue-small-demo.yaml --num 64 --reps 3 \\
        [--setting "OMP_NUM_THREADS=1 --workers 1 --batch-size 1" ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

#: Settings compared with the default when no --setting is given ("" is the default itself; {cores}: this
#: machine's available cores).
DEFAULT_SETTINGS = [
    "",
    "--workers 1",  # one process with torch's threads (one per core): the default before worker processes
    "--workers {cores}",  # a single-threaded worker per core
    "OMP_NUM_THREADS=1 --workers 1",
    "OMP_NUM_THREADS=1 --workers 1 --batch-size 1",  # the fastest setting of issue 13's report
    "--workers 1 --batch-size 1",
    "--workers {cores} --batch-size 1",
]
#: generate's default --batch-size: settings with another one write other data.
DEFAULT_BATCH = 8
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def parse_setting(text: str) -> tuple[dict[str, str], list[str]]:
    """``"A=1 B=2 --opt x"`` -> ({"A": "1", "B": "2"}, ["--opt", "x"])."""
    words = shlex.split(text)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    return env, words


def run_generate(recipe: Path, out: Path, num: int, setting: str, extra: list[str]) -> dict[str, Any]:
    """One ``datagen generate`` command in a fresh process: wall seconds and the img/s it reports."""
    env_add, args = parse_setting(setting)
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}  # the default: nothing set
    env["PYTHONPATH"] = os.pathsep.join([str(C.ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(env_add)
    cmd = [sys.executable, "-m", "datagen.cli", "generate", str(recipe), "--out", str(out), "--num", str(num),
           *extra, *args]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    m = re.search(r"([0-9.]+) img/s\)", proc.stdout)
    return {"wall_s": wall, "reported_img_s": float(m.group(1)) if m else None, "load_1min": round(load, 2)}


def settings_part(recipe: Path, a: argparse.Namespace, reps: int) -> dict[str, Any]:
    """Default vs other settings of the whole command, interleaved (A B C, B C A, ...), medians."""
    cores = len(os.sched_getaffinity(0))
    settings = list(dict.fromkeys(x.replace("{cores}", str(cores)) for x in (a.setting or DEFAULT_SETTINGS)))
    if "" not in settings:
        settings.insert(0, "")
    extra = ["--seed", "0"] + (["--block-size", str(a.block_size)] if a.block_size else [])
    tmp = Path(tempfile.mkdtemp(prefix="datagen-bench-settings-"))
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    try:
        for r in range(reps):
            k = r % len(settings)
            for j, s in enumerate(settings[k:] + settings[:k]):
                res = run_generate(recipe, tmp / f"r{r}-{j}", a.num, s, extra)
                runs[s].append(res)
                print(f"  rep {r + 1}/{reps} {s or '(default)'!s:<48} {res['wall_s']:7.2f} s  "
                      f"load {res['load_1min']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for s in settings:
        env, args = parse_setting(s)
        walls = [x["wall_s"] for x in runs[s]]
        reported = [x["reported_img_s"] for x in runs[s] if x["reported_img_s"] is not None]
        batch = int(args[args.index("--batch-size") + 1]) if "--batch-size" in args else DEFAULT_BATCH
        med = statistics.median(walls)
        rows.append({
            "setting": s or "default", "env": env, "args": args, "batch_size": batch,
            "same_data_as_default": batch == DEFAULT_BATCH,
            "median_wall_s": round(med, 3), "wall_s": [round(w, 3) for w in walls],
            "images_per_s": round(a.num / med, 3),
            "reported_images_per_s": round(statistics.median(reported), 3) if reported else None,
            "load_1min": [x["load_1min"] for x in runs[s]],
        })
    default = rows[0]
    best = max(rows, key=lambda x: x["images_per_s"])
    best_same = max((x for x in rows if x["same_data_as_default"]), key=lambda x: x["images_per_s"])
    result = {
        "recipe": str(recipe), "num": a.num, "reps": reps, "cores": cores,
        "rows": rows,
        "default_images_per_s": default["images_per_s"],
        "best": best["setting"], "best_images_per_s": best["images_per_s"],
        "ratio_default_over_best": round(default["images_per_s"] / best["images_per_s"], 3),
        "best_same_data": best_same["setting"],
        "ratio_default_over_best_same_data": round(default["images_per_s"] / best_same["images_per_s"], 3),
    }
    print(f"\n  {'setting':<50} {'img/s':>7} {'(run)':>7}  same data", file=sys.stderr)
    for x in rows:
        rep = f"{x['reported_images_per_s']:.2f}" if x["reported_images_per_s"] is not None else "-"
        print(f"  {x['setting']:<50} {x['images_per_s']:7.2f} {rep:>7}  {'yes' if x['same_data_as_default'] else 'no'}",
              file=sys.stderr)
    print(f"  default / best ({result['best']}): {result['ratio_default_over_best']:.3f}; default / best with the "
          f"same data ({result['best_same_data']}): {result['ratio_default_over_best_same_data']:.3f}\n",
          file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--parts", default="sizes,settings", help="comma-separated: sizes, settings")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--pixels-per-rep", type=float, default=2.0,
                   help="megapixels rendered per repetition of each pair (whole batches, at least one)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--num", type=int, default=64, help="settings: samples per generate command")
    p.add_argument("--block-size", type=int, default=None, help="settings: --block-size of every command "
                   "(default: generate's)")
    p.add_argument("--setting", action="append", default=None, metavar="'[VAR=V ...] [OPTIONS]'",
                   help="settings: one setting to compare with the default (repeat the option; default: "
                        + "; ".join(repr(s) for s in DEFAULT_SETTINGS[1:]) + ")")
    a = p.parse_args(argv)
    parts = {x.strip() for x in a.parts.split(",") if x.strip()}
    if parts - {"sizes", "settings"}:
        p.error(f"unknown part(s): {', '.join(sorted(parts - {'sizes', 'settings'}))}")
    settings_reps = a.reps
    if a.quick:
        a.sizes, a.batch_sizes, a.reps, a.pixels_per_rep = [64, 128], [1, 4], 2, 0.1
        a.num, a.block_size, settings_reps = min(a.num, 8), a.block_size or 2, 1
        a.setting = a.setting or ["--workers 1"]
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)
    recipe_path = C.recipe_from_args(a)
    settings = settings_part(recipe_path, a, settings_reps) if "settings" in parts else None
    if "sizes" not in parts:
        result = {"benchmark": "scaling", "recipe": str(recipe_path), "results": [], "settings": settings,
                  "machine": C.machine_info(device)}
        C.emit(result, a)
        return result

    import numpy as np

    from datagen.generate import build_renderer
    from datagen.models.registry import load_generator
    from datagen.recipe import load_recipe

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
        "settings": settings,
        "machine": C.machine_info(device),
    }
    C.emit(result, a)
    return result


if __name__ == "__main__":
    main()
