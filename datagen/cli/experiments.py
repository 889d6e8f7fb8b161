"""``datagen vectors invert | grid-study | units``: the paper's experiments and GAN Dissection's units.

* ``invert``: Algorithm 1 (appendix) -- a vector whose render matches real crops' features,
  added to a library with its provenance (:mod:`datagen.vectors.invert`).
* ``grid-study``: full- vs grid-replace similarity per grid size for tileable and
  non-tileable vectors, and the fig. 9 inversion study (:mod:`datagen.vectors.grid_study`).
* ``units``: the units of a layer that follow each class of a recipe, and what ablating
  them does (:mod:`datagen.vectors.units`).

Heavy modules are imported inside the command functions, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UsageError
from .app import add_command, add_device, add_quiet, add_trust_pickles


def _fmt(stats: dict | None) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _write_json(path: str, data: dict) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=1) + "\n")
    return p


# ---- invert ----------------------------------------------------------------------------

def cmd_invert(a: argparse.Namespace) -> int:
    import torch

    from ..features import TILEABILITY_LAYER, EfficientNetLite0, load_feature_extractor
    from ..models import DEFAULT_MODEL, load_generator
    from ..models.caveats import warn_paint_layer
    from ..vectors import VectorLibrary, contact_sheet, resolve_layer_name, to_uint8
    from ..vectors.invert import (
        add_to_library, find_target_images, image_target, invert, read_image, render_result, score_like_library,
    )

    files = find_target_images(a.images)
    lib_path = Path(a.library) if a.library else None
    if lib_path is not None and a.mode == "full":
        raise UsageError("--mode full optimises a whole activation map, not a vector: nothing to add to a library "
                         "(use --mode vector or grid, or leave --library out)", param="library")
    lib = VectorLibrary.load(lib_path) if lib_path is not None and lib_path.exists() else None
    if lib is not None and a.model and a.model != lib.model:
        raise UsageError(f"the library's vectors come from model {lib.model!r}, not {a.model!r}", param="model")
    model = a.model or (lib.model if lib is not None else DEFAULT_MODEL)
    gen = load_generator(model, a.device, trust_pickles=a.trust_pickles)
    if lib is not None and a.layer and a.layer != lib.layer:
        raise UsageError(f"the library holds vectors of layer {lib.layer!r}, not {a.layer!r}", param="layer")
    layer = resolve_layer_name(gen, a.layer or (lib.layer if lib is not None else None))
    warn_paint_layer(gen, layer)
    feat_layer = a.extractor_layer or TILEABILITY_LAYER
    if a.extractor != "efficientnet-lite0" and not a.extractor_layer:
        raise UsageError("name the layer of a module: extractor to compare", param="extractor_layer")
    try:
        extractor = (EfficientNetLite0([feat_layer]) if a.extractor == "efficientnet-lite0"
                     else load_feature_extractor(a.extractor, [feat_layer]))
    except (ValueError, ImportError, AttributeError) as e:
        raise UsageError(str(e), param="extractor_layer" if a.extractor == "efficientnet-lite0" else "extractor") from None
    extractor = extractor.to(gen.device)
    target = image_target(extractor, [read_image(f) for f in files], feat_layer, gen.device)
    init = lib.get([a.init_id])[0] if a.init_id is not None and lib is not None else None
    if a.init_id is not None and lib is None:
        raise UsageError("--init-id picks a vector of --library, which does not exist yet", param="init_id")
    size = a.size or (tuple(lib.image_size) if lib is not None and lib.image_size else None)
    result = invert(gen, target, layer, extractor=extractor, extractor_layer=feat_layer, mode=a.mode, grid=a.grid,
                    steps=a.steps, lr=a.lr, seeds=a.seeds, size=size, init=init, progress=not a.quiet)
    print(f"{len(files)} target image(s), {layer} ({a.mode}{'' if a.mode != 'grid' else f', grid {a.grid}'}): "
          f"loss {result.start_loss:.4f} -> {result.final_loss:.4f}, "
          f"cosine to the target {result.start_cosine:.3f} -> {result.final_cosine:.3f}")
    if lib_path is not None:
        out, new_id = add_to_library(lib, result, model_spec=model, sources=[str(f) for f in files],
                                     extractor_spec=a.extractor, label=a.label)
        if not a.no_score:
            score_like_library(out, gen, [new_id], progress=not a.quiet)
        out.save(lib_path)
        score = out.record(new_id).tileability
        print(f"vector {new_id} added to {lib_path}" + (f" (tileability {score:.3f})" if score is not None else ""))
    if a.render:
        renders = to_uint8(render_result(gen, result, seeds=a.seeds, size=size))
        h, w = renders.shape[-2:]
        targets = []
        for f in files[:4]:
            im = torch.from_numpy(read_image(f)).permute(2, 0, 1)[None].float()
            targets.append(torch.nn.functional.interpolate(im, size=(h, w), mode="bilinear", antialias=True,
                                                           align_corners=False)[0].round().clamp(0, 255).to(torch.uint8))
        row = torch.cat([torch.stack(targets), renders])[None]
        contact_sheet(row, [f"targets ({len(targets)} of {len(files)}) | result, {len(renders)} seed(s)"], a.render,
                      columns=row.shape[1])
        print(a.render)
    return 0


# ---- grid study --------------------------------------------------------------------------

def cmd_grid_study(a: argparse.Namespace) -> int:
    from ..models import load_generator
    from ..vectors import VectorLibrary
    from ..vectors.grid_study import grid_study, plot_study

    lib = VectorLibrary.load(a.library)
    gen = load_generator(a.model or lib.model, a.device, trust_pickles=a.trust_pickles)
    result = grid_study(gen, lib, replace=not a.no_replace, inversion=not a.no_invert, grids=a.grids,
                        per_group=a.per_group or None, threshold=a.threshold, seeds=a.seeds, size=a.size,
                        targets=a.targets, steps=a.steps, lr=a.lr, seed=a.seed, batch_size=a.batch_size,
                        progress=not a.quiet)
    result["library"] = str(a.library)
    rep, inv = result.get("replace"), result.get("invert")
    head = ["grid"]
    if rep:
        groups = rep["groups"]
        head += [f"tileable (n={len(groups['tileable']['ids'])})", f"non-tileable (n={len(groups['non_tileable']['ids'])})"]
    if inv:
        head.append(f"inversion ({inv['targets']} targets)")
    print(f"{a.library}: layer {result['layer']} at {result['size'][0]}x{result['size'][1]} px"
          + (f", tileability threshold {rep['threshold']:.3f} (scores computed at "
             f"{'x'.join(map(str, rep['scores_size'])) or '?'} px)" if rep else ""))
    print("  ".join(f"{h:<22}" for h in head))
    for g in sorted(set(a.grids)):
        cells = [str(g)]
        if rep:
            cells += [_fmt(rep["groups"][k]["by_grid"].get(str(g))) for k in ("tileable", "non_tileable")]
        if inv:
            cells.append(_fmt(inv["by_grid"].get(str(g))))
        print("  ".join(f"{c:<22}" for c in cells))
    if inv:
        print(f"best grid size for the inversion: {inv['best_grid']}")
    print(_write_json(a.json, result))
    print(plot_study(result, a.figure, title=f"{result['model']} {result['layer']}, {result['size'][0]} px"))
    return 0


# ---- units ------------------------------------------------------------------------------

def cmd_units(a: argparse.Namespace) -> int:
    from ..generate import build_renderer, load_recipe_model
    from ..models.caveats import fix_style
    from ..recipe import load_recipe
    from ..vectors.units import ablation_effect, rank_units

    recipe = load_recipe(a.recipe)
    gen = load_recipe_model(recipe, a.device, trust_pickles=a.trust_pickles)
    if recipe.style_seed is not None:
        fix_style(gen, recipe.style_seed, recipe.layer_name or gen.default_layer)
    renderer = build_renderer(recipe, gen, a.seed)
    ranking = rank_units(renderer, a.layer, num=a.num, quantile=a.quantile, batch_size=a.batch_size,
                         progress=not a.quiet)
    out = ranking.to_dict(top=a.top)
    out["recipe"] = str(a.recipe)
    print(f"{a.recipe}: units of {ranking.layer} (paint layer {renderer.layer}), top {a.top} per class by IoU "
          f"with the class's regions ({a.num} layouts, threshold: the {ranking.quantile:g} quantile of each unit)")
    for name, c in out["classes"].items():
        units = ", ".join(f"{u['unit']} ({u['iou']:.3f})" for u in c["units"])
        print(f"  {name} ({100 * c['area']:.0f}% of cells): {units}")
        if a.check:
            e = ablation_effect(renderer, ranking, name, a.check, num=min(a.num, a.check_layouts),
                                random_draws=a.random_draws, seed=a.seed)
            c["ablation"] = e
            print(f"    ablating the top {a.check}: response {e['response_top']:.3f}; {a.check} random units: "
                  f"{e['response_random_mean']:.3f} (mean of {a.random_draws})")
    if a.json:
        print(_write_json(a.json, out))
    return 0


# ---- parser ------------------------------------------------------------------------------

def _grid_list(text: str) -> int:
    try:
        g = int(text)
    except ValueError:
        g = -1
    if not 0 <= g <= 5:
        raise argparse.ArgumentTypeError(f"expected a grid size 0..5, got {text!r}")
    return g


def add_experiment_commands(vs: argparse._SubParsersAction) -> None:
    """Add invert, grid-study and units to the ``datagen vectors`` subcommands ``vs``."""
    inv = add_command(vs, "invert", cmd_invert,
                      "Algorithm 1: find a vector whose render matches real crops' features, add it to a library")
    inv.add_argument("images", nargs="+", help="target image files and/or folders (their crops' mean features are the target)")
    inv.add_argument("--library", help="vector library to add the vector to (created when missing; default: add nothing)")
    inv.add_argument("--model", help="generator spec (default: the library's model, else builtin:tissue-small)")
    inv.add_argument("--layer", help="paint layer (default: the library's layer, else the model's paint layer)")
    inv.add_argument("--mode", choices=("vector", "grid", "full"), default="vector",
                     help="vector: one vector everywhere; grid: a vector in the grid blocks and another between them "
                          "(the block vector is the result); full: every pixel of the layer (no library)")
    inv.add_argument("--grid", type=int, default=2, help="grid size for --mode grid")
    inv.add_argument("--steps", type=int, default=200, help="gradient steps")
    inv.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    inv.add_argument("--seeds", type=int, default=1, help="noise seeds the loss is averaged over")
    inv.add_argument("--size", type=int, default=None, help="render size in px (default: the library's extraction size, "
                     "else the model's native size)")
    inv.add_argument("--init-id", type=int, default=None,
                     help="start from this vector of --library (default: the layer's own centre pixel)")
    inv.add_argument("--extractor", default="efficientnet-lite0",
                     help="feature extractor: efficientnet-lite0 or module:package.module:factory")
    inv.add_argument("--extractor-layer", default=None, help="extractor layer matched (default: blocks.4, the tileability layer)")
    inv.add_argument("--label", default=None, help="label the new vector with this class name (default: no label)")
    inv.add_argument("--no-score", action="store_true", help="do not score the new vector's tileability")
    inv.add_argument("--render", default=None, help="also write a PNG: targets, then the result's renders")
    add_device(inv)
    add_quiet(inv, "no progress bar")
    add_trust_pickles(inv)

    gs = add_command(vs, "grid-study", cmd_grid_study,
                     "cosine of full- vs grid-replace features per grid size, tileable vs non-tileable, "
                     "and the paper's fig. 9 inversion study")
    gs.add_argument("library", help="vector library directory (scored for tileability)")
    gs.add_argument("--model", help="generator spec (default: the library's model)")
    gs.add_argument("--grids", type=_grid_list, nargs="+", default=[0, 1, 2, 3, 4, 5],
                    help="grid sizes (0: one vector everywhere; inversion study only)")
    gs.add_argument("--per-group", type=int, default=16, help="vectors per group, spread over its scores (0: all)")
    gs.add_argument("--threshold", type=float, default=None,
                    help="tileability threshold (default: the library's recorded one)")
    gs.add_argument("--seeds", type=int, default=2, help="noise seeds per vector (replace study)")
    gs.add_argument("--size", type=int, default=None,
                    help="render size in px (default: the size the library's tileability scores were computed at, "
                         "where the tileable/non-tileable split holds)")
    gs.add_argument("--targets", type=int, default=4, help="random feature pixels to invert (inversion study)")
    gs.add_argument("--steps", type=int, default=40, help="gradient steps per inversion")
    gs.add_argument("--lr", type=float, default=0.05, help="Adam learning rate of the inversion")
    gs.add_argument("--seed", type=int, default=0, help="seed of the inversion targets")
    gs.add_argument("--no-replace", action="store_true", help="skip the replace study")
    gs.add_argument("--no-invert", action="store_true", help="skip the inversion study")
    gs.add_argument("--json", default="grid_study.json", help="JSON result to write")
    gs.add_argument("--figure", default="grid_study.png", help="PNG figure to write")
    gs.add_argument("--batch-size", type=int, default=8, help="renders per forward pass")
    add_device(gs)
    add_quiet(gs, "no progress bar")
    add_trust_pickles(gs)

    un = add_command(vs, "units", cmd_units,
                     "GAN Dissection: rank a layer's units by IoU with each class's painted regions")
    un.add_argument("recipe", help="recipe YAML (its classes are painted into a few layouts)")
    un.add_argument("--layer", default=None, help="layer to dissect, the paint layer or a later one (default: the paint layer)")
    un.add_argument("--num", type=int, default=8, help="painted layouts to dissect")
    un.add_argument("--seed", type=int, default=0, help="seed of the layouts, vectors and noise")
    un.add_argument("--quantile", type=float, default=0.99, help="each unit's threshold: this quantile of its activations")
    un.add_argument("--top", type=int, default=8, help="units listed per class")
    un.add_argument("--check", type=int, default=0,
                    help="also ablate each class's top K units and as many random ones, and compare the class's "
                         "response (0: skip)")
    un.add_argument("--check-layouts", type=int, default=4, help="layouts rendered for --check")
    un.add_argument("--random-draws", type=int, default=3, help="random unit sets for --check")
    un.add_argument("--json", default=None, help="also write the ranking as JSON here")
    un.add_argument("--batch-size", type=int, default=4, help="renders per forward pass")
    add_device(un)
    add_quiet(un, "no progress bar")
    add_trust_pickles(un)
