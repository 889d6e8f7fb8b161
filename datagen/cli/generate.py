"""``datagen generate``, ``preview`` and ``validate``: datasets from a recipe, and their check.

Nothing heavy is imported here: the parser is built for every ``datagen`` command.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import DatagenError, flag_name
from ..options import FORMATS, VERIFY_LEVELS
from .app import add_command, add_device, add_precision, add_quiet, add_trust_pickles, positive_int, sample_count


def cmd_generate(a: argparse.Namespace) -> int:
    if a.engine == "ray":
        try:
            from ..engines.ray import generate_ray
        except ImportError as e:  # the engine module or the ray package itself
            raise DatagenError(f"--engine ray is not available here ({e}); install ray (pip install ray) "
                               "or use --engine local") from None

        report = generate_ray(a.recipe, a.out, num=a.num, seed=a.seed, format=a.format, device=a.device,
                              batch_size=a.batch_size, block_size=a.block_size, resume=a.resume,
                              num_tasks=a.num_tasks, address=a.address, progress=not a.quiet,
                              trust_pickles=a.trust_pickles, instances=a.instances, precision=a.precision)
    else:
        from ..generate import generate

        report = generate(a.recipe, a.out, num=a.num, seed=a.seed, format=a.format, device=a.device,
                          batch_size=a.batch_size, block_size=a.block_size, resume=a.resume,
                          shard_index=a.shard_index, num_shards=a.num_shards, progress=not a.quiet,
                          verify=a.verify, trust_pickles=a.trust_pickles, instances=a.instances,
                          precision=a.precision, workers=a.workers)
    if a.quiet:
        return 0
    repaired = getattr(report, "repaired_blocks", {})
    cleaned = getattr(report, "cleaned", [])
    extra = (f"; {len(repaired)} damaged block(s) rewritten" if repaired else "") + \
            (f"; {len(cleaned)} leftover temporary file(s) removed" if cleaned else "")
    print(f"wrote {report.written_samples} samples to {report.out} "
          f"({report.skipped_blocks} of {report.total_blocks} blocks were already complete{extra}; "
          f"{report.images_per_second:.2f} img/s)")
    return 0


def cmd_preview(a: argparse.Namespace) -> int:
    from ..preview import preview

    out = preview(a.recipe, a.out, num=a.num, seed=a.seed, device=a.device, columns=a.columns,
                  trust_pickles=a.trust_pickles)
    if not a.quiet:
        print(f"{out}: samples 0..{a.num - 1} of seed {a.seed} (image | mask | outlines)")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from ..validate import validate_dataset

    bar: Any = None

    def progress(done: int, total: int) -> None:  # the bar appears with the first checked block only
        nonlocal bar
        if bar is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="block", desc="validate", dynamic_ncols=True)
        bar.n = done
        bar.refresh()

    try:
        report = validate_dataset(a.path, check_data=not a.quick, progress=None if a.quiet else progress,
                                  namer=flag_name)
    finally:
        if bar is not None:
            bar.close()
    if not a.quiet:
        print(report.format())
    else:  # no report; still say why it failed
        for e in report.errors:
            print(f"datagen validate: error: {e}", file=sys.stderr)
    return 0 if report.ok else 1


def add_generate_commands(sub: Any) -> None:
    """``generate``, ``preview`` and ``validate``."""
    g = add_command(sub, "generate", cmd_generate, "generate image + mask pairs from a recipe")
    g.add_argument("recipe", help="recipe YAML")
    g.add_argument("--out", required=True, help="output directory (created)")
    g.add_argument("--num", type=sample_count, required=True, help="number of samples (e.g. 1000 or 1e6)")
    g.add_argument("--seed", type=int, default=0, help="dataset seed: sample i of a seed is always the same")
    g.add_argument("--format", choices=FORMATS, default="zarr", help="dataset format")
    add_device(g)
    g.add_argument("--batch-size", type=int, default=8, help="samples per forward pass")
    g.add_argument("--block-size", type=int, default=16, help="samples per block (unit of writing, resume and splitting)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (checks the blocks "
                   "already recorded and rewrites damaged ones)")
    g.add_argument("--verify", choices=VERIFY_LEVELS, default="files",
                   help="with --resume: 'files' checks recorded blocks' files (size + sha256), 'full' also decodes "
                        "and hashes every sample, 'none' trusts the manifest")
    g.add_argument("--instances", action="store_true", help="also store an instance map per sample (uint32, one id "
                   "per connected region of one class; see docs/formats.md)")
    add_precision(g)
    g.add_argument("--shard-index", type=int, default=0, help="this run's index K (0-based) of --num-shards")
    g.add_argument("--num-shards", type=int, default=1,
                   help="split the blocks over M runs (machines or jobs; see docs/scale-out.md)")
    g.add_argument("--workers", type=positive_int("a number of processes", keyword="auto"), default="auto", metavar="N|auto",
                   help="local: render in N processes of this machine (1: in this process); auto: one "
                        "single-threaded worker per CPU core when there are at least two blocks per worker, "
                        "one process on a GPU. Does not change the data")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: spread the blocks over a Ray cluster")
    g.add_argument("--ray-tasks", dest="num_tasks", metavar="N", type=int, default=None,
                   help="Ray: number of tasks (default: one per CPU/GPU)")
    g.add_argument("--ray-address", dest="address", metavar="ADDRESS", default=None,
                   help="Ray: cluster address (default: start a local cluster)")
    add_quiet(g)
    add_trust_pickles(g)

    pv = add_command(sub, "preview", cmd_preview,
                     "render a few samples of a recipe to one PNG (image | mask | outlines)")
    pv.add_argument("recipe", help="recipe YAML")
    pv.add_argument("--out", default="preview.png", help="PNG to write")
    pv.add_argument("--num", type=sample_count, default=8, help="samples 0..NUM-1, as `generate --seed` makes them")
    pv.add_argument("--seed", type=int, default=0, help="the seed whose samples are shown")
    pv.add_argument("--columns", type=int, default=2, help="samples per row")
    add_device(pv)
    add_quiet(pv, "no summary line")
    add_trust_pickles(pv)

    v = add_command(sub, "validate", cmd_validate, "check a generated dataset end to end",
                    description="Check a generated dataset: metadata, completeness (which blocks or shards are "
                                "still to run), every sample's sha256 and mask ids. Exits 1 unless it is OK.")
    v.add_argument("path", help="dataset folder (zarr or TIFF output)")
    v.add_argument("--quick", action="store_true", help="check structure and manifest only, not every sample's hash")
    add_quiet(v, "no progress bar and no report (only errors, on stderr)")
