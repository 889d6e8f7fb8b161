"""The ``datagen`` command: thin argument parsing over the library.

Errors caused by user input print one line (file, field, expectation) and exit
with status 2; ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import DatagenError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# ---- commands ----------------------------------------------------------------------

def cmd_generate(a: argparse.Namespace) -> int:
    if a.engine == "ray":
        try:
            from ..engines.ray import generate_ray
        except ImportError as e:  # the engine module or the ray package itself
            raise DatagenError(f"--engine ray is not available here ({e}); install ray (pip install ray) "
                               "or use --engine local") from None

        report = generate_ray(a.recipe, a.out, num=a.num, seed=a.seed, format=a.format, device=a.device,
                              batch_size=a.batch_size, block_size=a.block_size, resume=a.resume,
                              num_tasks=a.ray_tasks, address=a.ray_address, progress=not a.quiet,
                              trust_pickles=a.trust_pickles)
    else:
        from ..generate import generate

        report = generate(a.recipe, a.out, num=a.num, seed=a.seed, format=a.format, device=a.device,
                          batch_size=a.batch_size, block_size=a.block_size, resume=a.resume,
                          shard_index=a.shard_index, num_shards=a.num_shards, progress=not a.quiet,
                          verify=a.verify, trust_pickles=a.trust_pickles)
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
    print(f"{out}: samples 0..{a.num - 1} of seed {a.seed} (image | mask | outlines)")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from ..validate import validate_dataset

    progress = None
    if not a.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(unit="block", desc="validate", dynamic_ncols=True)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        report = validate_dataset(a.path, check_data=not a.quick, progress=progress)
    finally:
        if not a.quiet:
            bar.close()
    print(report.format())
    return 0 if report.ok else 1


def cmd_train(a: argparse.Namespace) -> int:
    from ..train import TrainConfig, load_train_config, train
    from ..train.loop import CONFIG_NAME

    overrides: dict[str, Any] = {k: getattr(a, k) for k in ("steps", "crop", "batch", "device", "seed", "threads", "feature_extractor")}
    if a.resume and a.config is None and (Path(a.out) / CONFIG_NAME).exists():
        cfg = load_train_config(Path(a.out) / CONFIG_NAME, **overrides)
    elif a.config is not None:
        cfg = load_train_config(a.config, **overrides)
    else:
        if not a.data:
            raise DatagenError("give a training config (CONFIG) or at least one --data image/folder")
        from ..config import parse_model

        raw = {"data": [{"path": str(Path(p).resolve())} for p in a.data], **{k: v for k, v in overrides.items() if v is not None}}
        cfg = parse_model(TrainConfig, raw, prefix=None)
        cfg.check()
    if a.data and a.config is not None:
        raise DatagenError("--data and a CONFIG file are exclusive: list data sources in the config")
    ckpt = train(cfg, a.out, resume=a.resume, progress=not a.quiet)
    print(f"checkpoint: {ckpt}  (load it with --model {ckpt} or in a recipe's 'model:')")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from ..models import builtin_models, load_generator

    specs = [a.model] if a.model else [f"builtin:{n}" for n in builtin_models()]
    out = []
    for spec in specs:
        gen = load_generator(spec, device="cpu", trust_pickles=a.trust_pickles)
        meta: dict[str, Any] = {}
        card = None
        if spec.startswith("builtin:"):
            d = builtin_models()[spec.split(":", 1)[1]]
            meta = json.loads((d / "config.json").read_text()).get("meta", {})
            card = d / "MODEL_CARD.md"
        out.append({"model": spec, "default_layer": gen.default_layer, "size_multiple": gen.size_multiple,
                    "layers": [vars(l) for l in gen.layers()], "meta": meta, "card": str(card) if card else None})
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    if not out:
        print("no built-in models")
    for m in out:
        params = sum(p.numel() for p in load_generator(m["model"], device="cpu", trust_pickles=a.trust_pickles).module.parameters())
        print(f"{m['model']}  ({params / 1e6:.2f} M parameters; sizes: multiples of {m['size_multiple']} px; "
              f"default layer {m['default_layer']})")
        if m["meta"]:
            print("  trained: " + ", ".join(f"{k}={v}" for k, v in m["meta"].items() if k in ("step", "kimg", "wall_time_s", "crop")))
        if m["card"]:
            print(f"  model card: {m['card']}")
        print(f"  {'layer':<10} {'channels':>8} {'stride':>6}   size at 256 px")
        for l in m["layers"]:
            print(f"  {l['name']:<10} {l['channels']:>8} {l['stride']:>6}   {256 // l['stride']}x{256 // l['stride']}")
    return 0


def cmd_qc(a: argparse.Namespace) -> int:
    from ..qc import qc_dataset, write_html

    if a.threads is not None:
        import torch

        torch.set_num_threads(max(1, a.threads))
    ignore: int | None | str = "dataset"
    if a.ignore_index is not None:
        if a.ignore_index.lower() == "none":
            ignore = None
        elif a.ignore_index.isdigit() and 0 <= int(a.ignore_index) <= 255:
            ignore = int(a.ignore_index)
        else:
            raise DatagenError(f"--ignore-index must be 0..255 or none, got {a.ignore_index!r}")
    report = qc_dataset(a.path, ignore_index=ignore, max_samples=a.max_samples, allow_incomplete=a.allow_incomplete,
                        train_fraction=a.train_fraction, seed=a.seed, steps=a.steps, crop=a.crop,
                        batch_size=a.batch_size, band=a.band, worst=a.worst, device=a.device, progress=not a.quiet)
    report_path = None if a.no_report else Path(a.report or f"qc-{Path(a.path).resolve().name}.html")
    if report_path is not None:
        write_html(report, report_path, title=f"datagen qc: {a.path}")
        report.settings["report"] = str(report_path)
    if a.strip:
        from ..qc import render_strip

        Path(a.strip).parent.mkdir(parents=True, exist_ok=True)
        render_strip(report).save(a.strip)
    print(report.to_json())
    if not a.quiet:
        print(report.summary(), file=sys.stderr)
        if report_path is not None:
            print(f"report: {report_path}", file=sys.stderr)
    failures = report.failures(a.min_miou) if a.min_miou is not None else []
    for f in failures:
        print(f"datagen qc: {f}", file=sys.stderr)
    return 1 if failures else 0


# ---- parser ------------------------------------------------------------------------

def sample_count(text: str) -> int:
    """argparse type of --num: a whole number, also written as 1e6 or 1_000_000."""
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        v = float("nan")
    if v == v and v not in (float("inf"), float("-inf")) and v == int(v):
        return int(v)
    raise argparse.ArgumentTypeError(f"expected a whole number of samples (e.g. 1000 or 1e6), got {text[:40]!r}")


def add_trust_pickles(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-pickles", action="store_true",
                   help="allow a stylegan2: pickle as the model: unpickling runs code from the file, so only use "
                        "pickles you trust (a recipe can also say trust: true)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datagen", description="Annotated segmentation data from activation vectors painted into a GAN.")
    p.add_argument("--version", action="version", version=f"datagen {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="generate image + mask pairs from a recipe")
    g.add_argument("recipe", help="recipe YAML")
    g.add_argument("--out", required=True, help="output directory (created)")
    g.add_argument("--num", type=sample_count, required=True, help="number of samples (e.g. 1000 or 1e6)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--format", choices=("zarr", "tiff"), default="zarr")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    g.add_argument("--batch-size", type=int, default=8, help="samples per forward pass")
    g.add_argument("--block-size", type=int, default=16, help="samples per block (unit of writing, resume and splitting)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (checks the blocks "
                   "already recorded and rewrites damaged ones)")
    g.add_argument("--verify", choices=("files", "full", "none"), default="files",
                   help="with --resume: check recorded blocks' files (size + sha256, default), 'full': also decode "
                        "and hash every sample, 'none': trust the manifest")
    g.add_argument("--shard-index", type=int, default=0, help="this worker's index K (0-based) of --num-shards")
    g.add_argument("--num-shards", type=int, default=1, help="split the blocks over M workers")
    g.add_argument("--engine", choices=("local", "ray"), default="local")
    g.add_argument("--ray-tasks", type=int, default=None, help="Ray: number of tasks (default: one per CPU/GPU)")
    g.add_argument("--ray-address", default=None, help="Ray: cluster address (default: start a local cluster)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_trust_pickles(g)
    g.set_defaults(func=cmd_generate)

    pv = sub.add_parser("preview", help="render a few samples of a recipe to one PNG (image | mask | outlines)")
    pv.add_argument("recipe", help="recipe YAML")
    pv.add_argument("--out", default="preview.png", help="PNG to write (default preview.png)")
    pv.add_argument("--num", type=sample_count, default=8, help="samples 0..NUM-1, as `generate --seed` makes them")
    pv.add_argument("--seed", type=int, default=0)
    pv.add_argument("--columns", type=int, default=2, help="samples per row")
    pv.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    add_trust_pickles(pv)
    pv.set_defaults(func=cmd_preview)

    v = sub.add_parser("validate", help="check a generated dataset end to end")
    v.add_argument("path")
    v.add_argument("--quick", action="store_true", help="check structure and manifest only, not every sample's hash")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=cmd_validate)

    t = sub.add_parser("train", help="train the digipath GAN on unlabeled images")
    t.add_argument("config", nargs="?", help="training YAML (see training/tissue-small/train.yaml)")
    t.add_argument("--data", action="append", help="image file or folder (repeatable) when no CONFIG is given")
    t.add_argument("--out", required=True, help="run directory (checkpoints, samples, logs)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--steps", type=int)
    t.add_argument("--crop", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--device")
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--feature-extractor", choices=("efficientnet-lite0", "none"))
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("models", help="list built-in models and their layers")
    m.add_argument("model", nargs="?", help="a model spec (default: all built-in models)")
    m.add_argument("--json", action="store_true")
    add_trust_pickles(m)
    m.set_defaults(func=cmd_models)

    q = sub.add_parser("qc", help="mask fidelity: train an independent pixel classifier on part of a dataset, score the rest")
    q.add_argument("path", help="dataset folder (zarr or TIFF output)")
    q.add_argument("--report", help="HTML report to write (default ./qc-<dataset folder name>.html)")
    q.add_argument("--no-report", action="store_true", help="write no HTML report")
    q.add_argument("--strip", help="also write the worst-samples strip as this PNG")
    q.add_argument("--min-miou", type=float, help="exit with status 1 when mIoU is below this")
    q.add_argument("--train-fraction", type=float, default=0.5, help="first part (by dataset position) trains, the rest tests (default 0.5)")
    q.add_argument("--max-samples", type=int, default=64, help="use at most N pairs, spread evenly over the dataset (default 64; 0 = all)")
    q.add_argument("--ignore-index", help="mask value left out of training and scores, or 'none' (default: the dataset's own)")
    q.add_argument("--band", type=int, default=8, help="boundary band half-width in px (default 8)")
    q.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    q.add_argument("--crop", type=int, default=64, help="training crop size in px (default 64)")
    q.add_argument("--batch-size", type=int, default=8, help="crops per training step (default 8)")
    q.add_argument("--worst", type=int, default=6, help="worst test samples shown in the strip (default 6)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    q.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; 1 is often fastest on a busy machine)")
    q.add_argument("--allow-incomplete", action="store_true", help="use the completed part of a partial run")
    q.add_argument("--quiet", action="store_true", help="no progress bars or summary on stderr")
    q.set_defaults(func=cmd_qc)

    from .canvas import add_canvas_command
    from .vectors import add_vector_commands

    add_vector_commands(sub)
    add_canvas_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    a = parser.parse_args(argv)
    fmt = warnings.formatwarning  # show Python warnings (e.g. ClassSeparabilityWarning) as one readable line
    warnings.formatwarning = lambda msg, cat, *_a, **_k: f"datagen {a.command}: warning: {msg}\n"
    try:
        return int(a.func(a) or 0)
    except KeyboardInterrupt:
        kept = {"train": "a checkpoint was saved", "generate": "completed blocks are kept"}.get(a.command)
        print("\ninterrupted" + (f": {kept}; rerun the same command with --resume to continue" if kept else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DatagenError, ValueError, KeyError, FileNotFoundError, PermissionError) as e:
        if a.debug:
            raise
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"datagen {a.command}: error: {' '.join(msg.splitlines())}", file=sys.stderr)
        return EXIT_USAGE
    except RecursionError:
        if a.debug:
            raise
        print(f"datagen {a.command}: error: input nested too deeply to process", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        import errno

        if a.debug or e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"datagen {a.command}: error: disk full{where}: {e.strerror or e}; free space and run it again"
              + (" with --resume (completed blocks are kept)" if a.command == "generate" else ""), file=sys.stderr)
        return EXIT_USAGE
    finally:
        warnings.formatwarning = fmt


if __name__ == "__main__":
    sys.exit(main())
