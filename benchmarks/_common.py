"""Shared helpers of the benchmark scripts: assets, machine facts, fair A/B timing, JSON output.

Every benchmark measures two (or more) things side by side in one run and
interleaves their repetitions (A B A B ... with the order alternating), so a
background load that comes and goes hits both alike; it reports medians and
the ratio of the medians.

Assets: ``--recipe`` runs a benchmark on a real recipe. Without it the recipe
of the built-in model is used when one is installed, otherwise a random model
of realistic size is built once (cached under the system temp folder):
``DigipathUNet(channels=(16, 32, 64, 96, 128, 128), noise_channels=8,
cond_dim=432, cond_channels=32, skip_min_stride=16, noise_injection=True, norm="channel")`` (the
architecture ``datagen train`` builds) painted at ``dec.x16``, 256 px, with a vector
library extracted from it and a voronoi layout. ``--quick`` builds a tiny model
instead so a smoke run takes seconds. The cache folder is the system temp folder,
or ``$DATAGEN_BENCH_CACHE``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/bench_x.py` from a checkout
    sys.path.insert(0, str(ROOT))

try:
    LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]
except OSError:  # not on every platform
    LOAD_AT_START = None

#: The architecture `datagen train` builds by default (datagen/train/config.py), with random weights.
REALISTIC = dict(channels=(16, 32, 64, 96, 128, 128), noise_channels=8, cond_dim=432, cond_channels=32,
                 skip_min_stride=16, noise_injection=True, norm="channel", default_layer="dec.x16")
TINY = dict(channels=(8, 16, 16, 16), noise_channels=4, cond_dim=6, cond_channels=4, default_layer="dec.x4")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="recipe YAML (default: the built-in model's, else a random model of realistic size)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny model and few repetitions: a smoke run of seconds")
    p.add_argument("--json-out", help="also write the JSON result to this file")


def setup_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def resolve_device(device: str) -> str:
    from datagen.models.registry import resolve_device as rd

    return rd(device)


# ---- assets ----------------------------------------------------------------------------

def _builtin_recipe() -> Path | None:
    """A recipe for the built-in default model, when the package ships one."""
    try:
        from datagen.models import builtin_models
    except ImportError:
        return None
    if "tissue-small" not in builtin_models():
        return None
    for cand in sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "recipes").glob("*.yaml")):
        text = cand.read_text()
        if "builtin:tissue-small" in text or "model:" not in text:
            return cand
    return None


def build_assets(directory: Path, *, quick: bool = False, size: int | None = None) -> Path:
    """Write a random model checkpoint, a vector library from it and a recipe into ``directory``."""
    import torch

    from datagen.models import DigipathUNet, UNetConfig, load_checkpoint, save_generator
    from datagen.vectors import extract_vectors

    cfg = TINY if quick else REALISTIC
    size = size or (64 if quick else 256)
    layer = cfg["default_layer"]
    recipe = directory / "recipe.yaml"
    if recipe.is_file():
        try:  # a cache from an older model architecture is rebuilt
            if load_checkpoint(directory / "model").module.config == UNetConfig(**cfg):
                return recipe
        except Exception:  # noqa: BLE001
            pass
        recipe.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet = DigipathUNet(UNetConfig(**cfg))
    save_generator(directory / "model", unet, torch.randn(64, cfg["cond_dim"]), {"name": "bench-random"})
    gen = load_checkpoint(directory / "model")
    lib = extract_vectors(gen, layer, 4, size=size, seed=0, per_image=16, progress=False,
                          model_spec=str(directory / "model"))
    lib.save(directory / "library")
    tmp = directory / "recipe.yaml.tmp"
    tmp.write_text(textwrap.dedent(f"""\
        model: {directory / 'model'}
        layer: {layer}
        library: library
        size: [{size}, {size}]
        classes:
          - {{name: background, id: 0, color: "#f0f0f0", keep: true}}
          - {{name: tumor, id: 1, color: "#d62728", vectors: [0, 1, 2, 3, 4, 5]}}
          - {{name: stroma, id: 2, color: "#1f77b4", vectors: [16, 17, {{id: 18, weight: 2}}, 19]}}
          - {{name: lymphocytes, id: 3, color: "#2ca02c", vectors: [32, 33, 34]}}
        layout:
          kind: voronoi
          classes: {{tumor: 3, stroma: 3, lymphocytes: 1, background: 1}}
          cells: [6, 24]
          relax: 1
          warp: 0.02
          smooth: 1.5
          min_region: 64
        augment:
          - {{name: HorizontalFlip, p: 0.5}}
          - {{name: RandomRotate90, p: 0.5}}
        """))
    os.replace(tmp, recipe)
    return recipe


def default_recipe(quick: bool, size: int | None = None) -> Path:
    if not quick and size is None:
        builtin = _builtin_recipe()
        if builtin is not None:
            return builtin
    from datagen import __version__

    tag = "tiny" if quick else "realistic"
    base = Path(os.environ.get("DATAGEN_BENCH_CACHE") or tempfile.gettempdir())
    d = base / f"datagen-bench-{tag}-{size or 'default'}-{__version__}-v2"
    return build_assets(d, quick=quick, size=size)


def recipe_from_args(a: argparse.Namespace, size: int | None = None) -> Path:
    return Path(a.recipe) if a.recipe else default_recipe(a.quick, size)


# ---- machine facts ---------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | None = None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        info["loadavg_1_5_15"] = {"start": LOAD_AT_START, "end": [round(x, 2) for x in os.getloadavg()]}
    except OSError:
        pass
    if device:
        info["device"] = device
        if device.startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


# ---- memory ----------------------------------------------------------------------------

#: Source for a child process to print its own peak RSS (KiB). Linux: VmHWM, the high-water
#: mark of this process image. Not ru_maxrss: Linux carries that over from the forked parent
#: across exec, so a child of a big parent would report the parent's size.
PEAK_RSS_SNIPPET = r"""
def _peak_rss_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""


def run_child(code: str, threads: int | None) -> dict[str, Any]:
    """Run ``code`` in a fresh Python process (``threads`` torch/OMP threads when given) and
    return the JSON object it prints last; a failing child raises with its stderr."""
    import subprocess

    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- timing ----------------------------------------------------------------------------

def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, *, warmup: int = 1,
                device: str = "cpu") -> dict[str, list[float]]:
    """Seconds of each function per repetition; repetitions interleaved, the order rotating
    (A B C, B C A, C A B, ...) so each function runs in each position equally often."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
            sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        order = names[k:] + names[:k]
        for n in order:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


def summary(seconds: list[float], items: int) -> dict[str, Any]:
    med = statistics.median(seconds)
    return {
        "median_s": round(med, 4),
        "min_s": round(min(seconds), 4),
        "max_s": round(max(seconds), 4),
        "reps": len(seconds),
        "items": items,
        "per_second": round(items / med, 3) if med > 0 else None,
        "seconds": [round(x, 4) for x in seconds],
    }


def emit(result: dict[str, Any], a: argparse.Namespace) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if getattr(a, "json_out", None):
        Path(a.json_out).write_text(text + "\n")
