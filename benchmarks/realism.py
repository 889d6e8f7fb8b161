"""Realism benchmark: Fréchet distance (FID's formula, EfficientNet-Lite0 features) of a generator.

    python benchmarks/realism.py --model runs/tissue-small/checkpoint \\
        --train-config training/tissue-small/train.yaml --num 512 --size 96 --json

Reports three Fréchet distances, all against the same reference set A of real crops:

* ``fd_generated_vs_real``  the model's plain samples (no painting) vs real set A;
* ``fd_real_vs_real``       real set B vs real set A: the floor. Two disjoint draws of N
  crops from the same images; FD is biased upwards at finite N, so this is what a
  perfect generator would score at this N;
* ``fd_untrained_vs_real``  the same architecture with freshly initialised weights (what
  training starts from), same conditioning library, same noise: the ceiling.

and ``relative`` = (generated - floor) / (ceiling - floor): 0 is as good as real
data, 1 is no better than the untrained network.

Beside the distances, ``glass`` says how much glass real set A and the samples show (mean
glass share, share of images more than 25 % glass; :func:`glass_coverage`): a generator can
lower its FD while it stops drawing one kind of image, and glass is the background class
recipes paint (a CPU continuation of the built-in model did exactly that; see
training/tissue-small/README.md).

``conditioning`` says whether the generator follows its conditioning vector, which is what
the paper's design (and a library of real-image vectors) rests on. Each real crop of set A
gives its own vector (the training loop's EfficientNet-Lite0 pooled features); the model draws
one image from each, with the same noise as above. ``follow`` = L1(features of the image, its
own vector) / L1(features, another crop's vector): 1.0 means the vector is ignored, lower is
better. ``glass_r`` is the correlation of the glass share of each real crop with that of the
image drawn from its vector: a model that follows its vectors draws glass where they ask.
``paint_glass`` is the most glass that any of the vectors of the 8 glassiest crops of set A
draws when *painted* (full replace at the paint layer) into 8 other images, ``paint_tissue``
the same for the 8 least glassy crops (:func:`datagen.train.monitor.paint_glass`): a recipe's
background class can only paint glass if some vector draws mostly glass.
``paint_vectors_distinct`` is the share of those images whose paint-layer vector (the centre
pixel, as ``datagen vectors extract`` samples pixels) is no near-copy (cosine > 0.999) of an
earlier one: 1.0 means every crop gives a vector of its own; lower means the generator folds
unlike crops onto the same paint vector, and a vector library built from it holds fewer kinds.

Real crops come from the training config's data through the training sampler
(:class:`datagen.train.data.CropSampler`: area-weighted random positions, crops
that are mostly glass or scanner border skipped, sources rescaled by their
``scale``). Sets A and B come from independent random streams, so they are
disjoint *draws*, but the training data is a few small images, so crops of A and
B (and the crops the model was trained on) can overlap in pixels. The floor is
therefore slightly optimistic, and the benchmark measures fit to the training
distribution, not generalisation to unseen slides.

Generated images are made at the crop size (the UNet is fully convolutional) with
the per-sample seeding of ``datagen generate`` (sample ``i`` of ``--seed``), each
drawing its conditioning vector from the checkpoint's conditioning library, and
quantised to uint8 like real crops. ``--window-of PX`` instead draws each at PX and scores
one window of it (placed by the sample's seed): a generator trained on 256-px crops draws
better 96-px windows of 256-px images than whole 96-px images (its bottleneck is then 8x8,
as in training, not 3x3), and windows are what random training crops of generated pairs
are. The issue's targets use the default (whole images at the size). Features: the pooled 1280-d ``head`` of
EfficientNet-Lite0, images resized to 224 px (``--feature-size``); see
:mod:`datagen.metrics`. Numbers are comparable only at the same N, size, feature
size and extractor — not with published FID values.

With ``--num 256`` it runs in a few minutes on 2 CPU cores; ``--quick`` is a smoke
run (16 images, features at the crop size).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datagen import __version__  # noqa: E402
from datagen.errors import DatagenError  # noqa: E402
from datagen.metrics import (  # noqa: E402
    FD_EXTRACTOR, FD_INPUT_SIZE, FD_LAYER, extract_features, frechet_distance, nearest_neighbour_distances,
    realism_extractor,
)
from datagen.models import DEFAULT_MODEL, DigipathGenerator, DigipathUNet, load_generator  # noqa: E402
from datagen.models.generator import Generator  # noqa: E402
from datagen.render import render_plain, to_uint8, to_uint8_hwc  # noqa: E402
from datagen.seeding import sample_rng  # noqa: E402
from datagen.train import TrainConfig, load_train_config  # noqa: E402
from datagen.train.data import CropSampler, background_fraction  # noqa: E402
from datagen.train.monitor import paint_glass  # noqa: E402

DEFAULT_TRAIN_CONFIG = REPO / "training" / "tissue-small" / "train.yaml"
QUICK_NUM = 16
GLASS_HEAVY = 0.25  # an image more than a quarter glass counts as glass-heavy
PAINT_K = 8  # crops whose vectors paint_glass paints (the glassiest k, the least glassy k)
_REAL_STREAM = 0x7EA1  # numpy seed [seed, set, this] draws real set A (0) / B (1)
_WINDOW_STREAM = "realism-window"  # purpose of the per-sample stream that places --window-of windows


def real_sets(cfg: TrainConfig, size: int, num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Two disjoint draws (independent random streams) of ``num`` real crops, (N, 3, size, size) in [-1, 1]."""
    sources = [(s.path, s.scale) for s in cfg.data]
    sampler = CropSampler(sources, size, max_background=cfg.max_background, seed=0)
    sets, streams = [], [[seed, k, _REAL_STREAM] for k in (0, 1)]  # set A, set B
    for entropy in streams:
        sampler.rng = np.random.default_rng(entropy)
        sets.append(sampler.sample(num))
    info = {"sources": [{"path": str(p), "scale": s} for p, s in sources], "max_background": cfg.max_background,
            "rng_seeds": streams, "training_crop": cfg.crop}
    return sets[0], sets[1], info


def glass_coverage(images: torch.Tensor, heavy: float = GLASS_HEAVY) -> dict[str, float]:
    """How much glass a set of images shows: the mean share of glass (and scanner-border) pixels,
    by the test the training sampler uses (:func:`datagen.train.data.background_fraction`), and the
    share of images that are more than ``heavy`` glass.

    A Fréchet distance can improve while a kind of image vanishes from the samples (a generator
    that stops drawing glass-heavy images moves its mean and covariance towards the mostly-tissue
    real crops); this says so directly. Glass matters beyond realism: it is the background class
    a recipe paints."""
    fr = _glass_shares(images)
    return {"mean_glass": float(fr.mean()), "glass_heavy_share": float((fr > heavy).mean())}


@torch.no_grad()
def conditioning_fidelity(gen: Generator, real: torch.Tensor, seed: int, batch: int) -> dict[str, float] | None:
    """How closely the generator follows its conditioning vector (see the module docstring);
    None for an unconditional generator."""
    if not isinstance(gen, DigipathGenerator) or gen.conditioning is None:
        return None
    from datagen.features import EfficientNetLite0, resize_for_features
    from datagen.models.hooks import LayerHook
    from datagen.seeding import sample_torch_generator
    from datagen.vectors import count_distinct

    ex = EfficientNetLite0().to(gen.device).eval()
    cond, feats, images, centre = [], [], [], []
    size = tuple(real.shape[-2:])
    for i in range(0, len(real), batch):
        r = real[i:i + batch].to(gen.device)
        c = ex.pooled(resize_for_features(r))
        inputs = gen.sample_inputs([sample_torch_generator(seed, j, "noise") for j in range(i, i + len(r))], size)
        inputs["cond"] = c.cpu()
        with LayerHook(gen.module, gen.default_layer) as hook:
            img = to_uint8(gen.forward(inputs)).float().div(127.5).sub(1.0)  # quantised like the real crops
        act = hook.original  # None for a generator whose forward does not run its module
        if act is not None:
            centre.append(act.float()[:, :, act.shape[-2] // 2, act.shape[-1] // 2].cpu())
        cond.append(c.cpu()); images.append(img.cpu())
        feats.append(ex.pooled(resize_for_features(img)).cpu())
    c, f, img = torch.cat(cond), torch.cat(feats), torch.cat(images)
    own = float((f - c).abs().mean())
    other = float((f - c.roll(1, 0)).abs().mean())
    real_glass = _glass_shares(real)
    gen_glass = _glass_shares(img)
    r = float(np.corrcoef(real_glass, gen_glass)[0, 1]) if real_glass.std() > 0 and gen_glass.std() > 0 else float("nan")
    # paint_glass: the glassiest crops' vectors, and the least glassy ones', painted (full replace at
    # the paint layer) into the first k scenes; glass that follows the noise instead stays unpainted
    k = min(PAINT_K, len(real) // 2)
    order = np.argsort(-real_glass, kind="stable")
    inputs = gen.sample_inputs([sample_torch_generator(seed, j, "noise") for j in range(k)], size)
    painted = paint_glass(gen.module, inputs["noise"].to(gen.device), inputs["cond"].to(gen.device),
                          c[order[:k]].to(gen.device), c[order[-k:]].to(gen.device), gen.default_layer)
    # collapse: unlike crops' vectors that the generator turns into the same paint-layer vector
    # (one pixel per image, as `datagen vectors extract` samples them) give a library no new kind
    distinct = count_distinct(torch.cat(centre)) / len(real) if sum(map(len, centre)) == len(real) else None
    return {"l1_own_vector": own, "l1_other_vector": other, "follow": own / other, "glass_r": r,
            "paint_vectors_distinct": distinct,
            "mean_glass_real": float(real_glass.mean()), "mean_glass_generated": float(gen_glass.mean()),
            **painted, "paint_glass_crops": float(real_glass[order[:k]].mean())}


def _glass_shares(images: torch.Tensor) -> np.ndarray:
    return np.array([background_fraction(im) for im in to_uint8_hwc(images)])


def untrained_copy(gen: Generator, seed: int) -> Generator | None:
    """The same architecture with fresh (training-start) weights and the same conditioning library."""
    if not isinstance(gen, DigipathGenerator):
        return None
    torch.manual_seed(seed)
    module = DigipathUNet(gen.module.config).to(gen.device)
    return DigipathGenerator(module, gen.conditioning, name=f"{gen.name} (untrained)")


def generated(gen: Generator, num: int, size: int, seed: int, batch: int, window_of: int | None = None) -> torch.Tensor:
    """Plain samples 0..num-1 of ``seed`` (as ``datagen generate`` seeds them), uint8-quantised, in [-1, 1].

    ``window_of``: draw each sample at this larger size and keep one ``size`` window of it, at a
    position seeded by the sample index: what a segmentation loop's random crops of generated
    pairs see, rather than a whole image drawn at ``size``.
    """
    out = []
    for i in range(0, num, batch):
        idx = list(range(i, min(num, i + batch)))
        u8 = render_plain(gen, idx, (window_of or size,) * 2, seed)
        if window_of:
            pos = [sample_rng(seed, j, _WINDOW_STREAM).integers(0, window_of - size + 1, 2) for j in idx]
            u8 = np.stack([im[y:y + size, x:x + size] for im, (y, x) in zip(u8, pos)])
        out.append(torch.from_numpy(u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0))
    return torch.cat(out)


def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cfg = load_train_config(args.train_config)
    size = args.size or cfg.crop
    num = args.num if args.num is not None else (QUICK_NUM if args.quick else 512)
    feature_size = args.feature_size
    if feature_size is None:
        feature_size = 0 if args.quick else FD_INPUT_SIZE
    if num < 2:
        raise DatagenError(f"--num must be at least 2 (a covariance needs two samples), got {num}")

    t0 = time.perf_counter()
    gen = load_generator(args.model, args.device)
    try:
        gen.check_size((size, size))
    except ValueError as e:
        raise DatagenError(f"--size: {e}") from None
    if args.window_of is not None:
        if args.window_of <= size:
            raise DatagenError(f"--window-of must be larger than --size {size}, got {args.window_of}")
        try:
            gen.check_size((args.window_of, args.window_of))
        except ValueError as e:
            raise DatagenError(f"--window-of: {e}") from None
    lap("load_model", t0)

    t0 = time.perf_counter()
    real_a, real_b, real_info = real_sets(cfg, size, num, args.seed)
    lap("real_crops", t0)

    t0 = time.perf_counter()
    fake = generated(gen, num, size, args.seed, args.batch, args.window_of)
    lap("generate", t0)
    t0 = time.perf_counter()
    base = untrained_copy(gen, args.seed)
    fake0 = generated(base, num, size, args.seed, args.batch, args.window_of) if base is not None else None
    lap("generate_untrained", t0)

    t0 = time.perf_counter()
    ex = realism_extractor(FD_LAYER, device=gen.device, variant=args.extractor)
    kw = dict(batch_size=args.batch, input_size=feature_size or None)
    f_a = extract_features(real_a, ex, **kw)
    f_b = extract_features(real_b, ex, **kw)
    f_g = extract_features(fake, ex, **kw)
    f_0 = extract_features(fake0, ex, **kw) if fake0 is not None else None
    lap("features", t0)

    t0 = time.perf_counter()
    fd_gen = frechet_distance(f_g, f_a)
    floor = frechet_distance(f_b, f_a)
    ceiling = frechet_distance(f_0, f_a) if f_0 is not None else None
    lap("frechet", t0)
    # memorisation: how close samples come to the reference crops, beside fresh real crops
    nn_gen = float(np.median(nearest_neighbour_distances(f_g, f_a)))
    nn_real = float(np.median(nearest_neighbour_distances(f_b, f_a)))
    glass = {"real_a": glass_coverage(real_a), "generated": glass_coverage(fake), "heavy_above": GLASS_HEAVY}
    t0 = time.perf_counter()
    conditioning = None if args.quick else conditioning_fidelity(gen, real_a, args.seed, args.batch)
    lap("conditioning", t0)
    relative = None
    if ceiling is not None and ceiling > floor:
        relative = (fd_gen - floor) / (ceiling - floor)

    meta = {}
    cfg_json = Path(args.model) / "config.json"
    if cfg_json.is_file():
        meta = {k: v for k, v in json.loads(cfg_json.read_text()).get("meta", {}).items()
                if k in ("name", "step", "kimg", "wall_time_s", "crop")}
    return {
        "benchmark": "realism",
        "model": args.model,
        "model_meta": meta,
        "train_config": str(args.train_config),
        "num": num,
        "size": size,
        "window_of": args.window_of,
        "seed": args.seed,
        "feature_extractor": args.extractor,
        "feature_layer": FD_LAYER,
        "feature_dim": int(f_a.shape[1]),
        "feature_input_size": feature_size or "native",
        "fd_generated_vs_real": fd_gen,
        "fd_real_vs_real": floor,
        "fd_untrained_vs_real": ceiling,
        "relative": relative,
        "nn_generated_to_real": nn_gen,
        "nn_real_to_real": nn_real,
        "glass": glass,
        "conditioning": conditioning,
        "reference_set": "real A; floor = real B vs real A (disjoint draws, pixels may overlap)",
        "real_sets": real_info,
        "quick": bool(args.quick),
        "device": str(gen.device),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "datagen_version": __version__,
        "host": platform.node(),
        "timings_s": timings,
        "wall_time_s": round(time.perf_counter() - t_start, 2),
    }


def format_report(r: dict) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    at = "the crop size" if r["feature_input_size"] == "native" else f"{r['feature_input_size']} px"
    g = r["glass"]

    lines = [
        f"realism of {r['model']}  (N={r['num']}, {r['size']} px, seed {r['seed']}; "
        f"{r['feature_extractor']} {r['feature_layer']} ({r['feature_dim']}-d) at {at})",
        f"  FD generated vs real   {f(r['fd_generated_vs_real'])}",
        f"  FD real vs real        {f(r['fd_real_vs_real'])}   (floor at this N)",
        f"  FD untrained vs real   {f(r['fd_untrained_vs_real'])}   (ceiling)",
        f"  relative               {f(r['relative'])}   (0 = like real data, 1 = like the untrained net)",
        f"  median NN distance     generated -> real {f(r['nn_generated_to_real'])}, real B -> real A "
        f"{f(r['nn_real_to_real'])}   (copies of real crops would come closer than real B)",
        f"  glass                  mean share: generated {f(g['generated']['mean_glass'])}, real "
        f"{f(g['real_a']['mean_glass'])}; images > {g['heavy_above']:.0%} glass: generated "
        f"{f(g['generated']['glass_heavy_share'])}, real {f(g['real_a']['glass_heavy_share'])}",
    ]
    c = r.get("conditioning")
    if c:
        lines.append(f"  conditioning           follow {f(c['follow'])} (L1 to own vector / to another's; 1 = ignored), "
                     f"glass r {f(c['glass_r'])} (real crop's glass vs the image drawn from its vector)")
        if "paint_vectors_distinct" in c:
            lines.append(f"  paint vectors          distinct share {f(c['paint_vectors_distinct'])} (1 = each crop's vector "
                         "gives its own paint-layer vector; lower = conditioning collapse)")
        if "paint_glass" in c:
            lines.append(f"  painted glass          best of the glassiest crops' vectors {f(c['paint_glass'])} (the crops: "
                         f"{f(c['paint_glass_crops'])}), of the least glassy crops' {f(c['paint_tissue'])}")
    lines += [
        f"  wall time {r['wall_time_s']:.1f} s  " + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings_s"].items()),
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="generator spec: builtin:NAME or a checkpoint directory")
    p.add_argument("--train-config", default=str(DEFAULT_TRAIN_CONFIG), help="training YAML whose data gives the real crops")
    p.add_argument("--num", type=int, default=None, help="images per set (default 512; 16 with --quick)")
    p.add_argument("--size", type=int, default=None, help="crop / generation size in px (default: the config's crop)")
    p.add_argument("--window-of", type=int, default=None, metavar="PX",
                   help="draw each sample at PX (> --size, a multiple of the model's stride) and score one --size window "
                        "of it, as random training crops of generated pairs are (default: draw at --size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-size", type=int, default=None,
                   help=f"resize to this before feature extraction (default {FD_INPUT_SIZE}; 0 = at the crop size; "
                        "--quick: 0)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--extractor", default=FD_EXTRACTOR, choices=("efficientnet-lite0", "efficientnet-lite1"),
                   help="feature network (default Lite0; Lite1 is the projected discriminator's backbone, "
                        "so a generator trained against it can score better there without looking more real)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="smoke run: 16 images per set, features at crop size")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def report(name: str, run_fn, format_fn, args: argparse.Namespace) -> int:
    """Run a benchmark and print its result (JSON with ``--json``); a bad input is one line on
    stderr and exit status 2, never a traceback. Shared by realism_painted.py."""
    try:
        result = run_fn(args)
    except (DatagenError, ValueError, FileNotFoundError) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_fn(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    return report("realism", run, format_report, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
