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

from . import __version__
from .errors import DatagenError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# ---- commands ----------------------------------------------------------------------

def cmd_generate(a: argparse.Namespace) -> int:
    if a.engine == "ray":
        try:
            from .engines.ray import generate_ray
        except ImportError as e:  # the engine module or the ray package itself
            raise DatagenError(f"--engine ray is not available here ({e}); install ray (pip install ray) "
                               "or use --engine local") from None

        report = generate_ray(a.recipe, a.out, num=a.num, seed=a.seed, format=a.format, device=a.device,
                              batch_size=a.batch_size, block_size=a.block_size, resume=a.resume,
                              num_tasks=a.ray_tasks, address=a.ray_address, progress=not a.quiet)
    else:
        from .generate import generate

        report = generate(a.recipe, a.out, num=a.num, seed=a.seed, format=a.format, device=a.device,
                          batch_size=a.batch_size, block_size=a.block_size, resume=a.resume,
                          shard_index=a.shard_index, num_shards=a.num_shards, progress=not a.quiet)
    print(f"wrote {report.written_samples} samples to {report.out} "
          f"({report.skipped_blocks} of {report.total_blocks} blocks were already complete; "
          f"{report.images_per_second:.2f} img/s)")
    return 0


def cmd_preview(a: argparse.Namespace) -> int:
    from .preview import preview

    out = preview(a.recipe, a.out, num=a.num, seed=a.seed, device=a.device, columns=a.columns)
    print(f"{out}: samples 0..{a.num - 1} of seed {a.seed} (image | mask | outlines)")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from .validate import validate_dataset

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
    from .train import TrainConfig, load_train_config, train
    from .train.loop import CONFIG_NAME

    overrides: dict[str, Any] = {k: getattr(a, k) for k in ("steps", "crop", "batch", "device", "seed", "threads", "feature_extractor")}
    if a.resume and a.config is None and (Path(a.out) / CONFIG_NAME).exists():
        cfg = load_train_config(Path(a.out) / CONFIG_NAME, **overrides)
    elif a.config is not None:
        cfg = load_train_config(a.config, **overrides)
    else:
        if not a.data:
            raise DatagenError("give a training config (CONFIG) or at least one --data image/folder")
        from .config import parse_model

        raw = {"data": [{"path": str(Path(p).resolve())} for p in a.data], **{k: v for k, v in overrides.items() if v is not None}}
        cfg = parse_model(TrainConfig, raw, prefix=None)
        cfg.check()
    if a.data and a.config is not None:
        raise DatagenError("--data and a CONFIG file are exclusive: list data sources in the config")
    ckpt = train(cfg, a.out, resume=a.resume, progress=not a.quiet)
    print(f"checkpoint: {ckpt}  (load it with --model {ckpt} or in a recipe's 'model:')")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from .models import builtin_models, load_generator

    specs = [a.model] if a.model else [f"builtin:{n}" for n in builtin_models()]
    out = []
    for spec in specs:
        gen = load_generator(spec, device="cpu")
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
        params = sum(p.numel() for p in load_generator(m["model"], device="cpu").module.parameters())
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


# ---- parser ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datagen", description="Annotated segmentation data from activation vectors painted into a GAN.")
    p.add_argument("--version", action="version", version=f"datagen {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="generate image + mask pairs from a recipe")
    g.add_argument("recipe", help="recipe YAML")
    g.add_argument("--out", required=True, help="output directory (created)")
    g.add_argument("--num", type=int, required=True, help="number of samples")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--format", choices=("zarr", "tiff"), default="zarr")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    g.add_argument("--batch-size", type=int, default=8, help="samples per forward pass")
    g.add_argument("--block-size", type=int, default=16, help="samples per block (unit of writing, resume and splitting)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    g.add_argument("--shard-index", type=int, default=0, help="this worker's index K (0-based) of --num-shards")
    g.add_argument("--num-shards", type=int, default=1, help="split the blocks over M workers")
    g.add_argument("--engine", choices=("local", "ray"), default="local")
    g.add_argument("--ray-tasks", type=int, default=None, help="Ray: number of tasks (default: one per CPU/GPU)")
    g.add_argument("--ray-address", default=None, help="Ray: cluster address (default: start a local cluster)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    pv = sub.add_parser("preview", help="render a few samples of a recipe to one PNG (image | mask | outlines)")
    pv.add_argument("recipe", help="recipe YAML")
    pv.add_argument("--out", default="preview.png", help="PNG to write (default preview.png)")
    pv.add_argument("--num", type=int, default=8, help="samples 0..NUM-1, as `generate --seed` makes them")
    pv.add_argument("--seed", type=int, default=0)
    pv.add_argument("--columns", type=int, default=2, help="samples per row")
    pv.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
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
    m.set_defaults(func=cmd_models)

    from .canvas import add_canvas_command
    from .vectors_cli import add_vector_commands

    add_vector_commands(sub)
    add_canvas_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
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
        print(f"datagen {a.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
