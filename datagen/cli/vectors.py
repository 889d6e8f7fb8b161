"""``datagen vectors ...``: extract, score, show, label and separability of activation-vector libraries.

Nothing heavy is imported here: the parser is built for every ``datagen`` command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DatagenError
from .app import add_command, add_device, add_quiet, add_trust_pickles, positive_int


def _load(lib_dir: str, model: str | None, device: str | None, trust_pickles: bool = False):  # type: ignore[no-untyped-def]
    from ..models import load_generator
    from ..vectors import VectorLibrary

    lib = VectorLibrary.load(lib_dir)
    gen = load_generator(model or lib.model, device, trust_pickles=trust_pickles)
    if gen.layer(lib.layer).channels != lib.channels:
        raise DatagenError(f"{lib_dir}: vectors have {lib.channels} channels, layer {lib.layer!r} of {model or lib.model} has {gen.layer(lib.layer).channels}")
    return lib, gen


def _cosine_or_off(text: str) -> float | str:
    """argparse type of --dedupe: a cosine similarity in (0, 1], or 'off'."""
    if text.strip().lower() == "off":
        return "off"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a cosine similarity in (0, 1] or 'off', got {text!r}")
    return value


def cmd_extract(a: argparse.Namespace) -> int:
    from ..models import load_generator
    from ..vectors import cluster_library, extract_vectors
    from ..vectors.extract import DEDUPE_COSINE

    gen = load_generator(a.model, a.device, trust_pickles=a.trust_pickles)
    dedupe = None if a.dedupe == "off" else DEDUPE_COSINE if a.dedupe is None else a.dedupe
    lib = extract_vectors(gen, a.layer, a.num_images, size=a.size, seed=a.seed, per_image=a.per_image,
                          batch_size=a.batch_size, progress=not a.quiet, model_spec=a.model, dedupe=dedupe)
    if a.clusters:
        cluster_library(lib, a.clusters, seed=a.seed)
    path = lib.save(a.out)
    if not a.quiet:
        print(f"{len(lib)} vectors of layer {lib.layer} ({lib.channels} channels) -> {path}")
        dropped = lib.extraction["dropped"]
        if dropped:
            print(f"{dropped} near-copies dropped (cosine > {dedupe} to a vector already taken)"
                  + ("; the layer repeats itself across an image: sample more images, fewer pixels each"
                     if a.per_image == "all" or a.per_image > 1 else ""))
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from ..vectors import score_library

    lib, gen = _load(a.library, a.model, a.device, a.trust_pickles)
    scores = score_library(lib, gen, extractor_spec=a.extractor, extractor_layer=a.extractor_layer, grid=a.grid,
                           seeds=a.seeds, size=a.size, batch_size=a.batch_size, progress=not a.quiet)
    lib.save(a.library)
    if a.quiet:
        return 0
    thr = (lib.tileability or {}).get("threshold")
    n_tile = int((scores >= thr).sum()) if thr is not None else "?"
    print(f"scored {len(scores)} vectors: min {scores.min():.3f}, median {scores.median():.3f}, max {scores.max():.3f}; "
          f"threshold {thr if thr is None else round(thr, 3)} -> {n_tile} tileable")
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    import torch

    from ..vectors import html_report, visualize
    from ..vectors.report import library_sheet

    lib, gen = _load(a.library, a.model, a.device, a.trust_pickles)
    size = a.size or lib.image_size  # default: the size the vectors were extracted at
    ids = list(a.ids) if a.ids else list(lib.ids)
    if a.top:
        scored = [i for i in ids if lib.record(i).tileability is not None]
        if not scored:
            raise DatagenError(f"{a.library}: --top needs tileability scores; run `datagen vectors score {a.library}` first")
        ids = sorted(scored, key=lambda i: -lib.record(i).tileability)[: a.top]
    vecs = lib.get(ids)
    kw = dict(seeds=a.seeds, size=size, batch_size=a.batch_size, progress=not a.quiet)
    full = visualize(gen, vecs, lib.layer, mode="full", **kw)
    grid = visualize(gen, vecs, lib.layer, mode="grid", grid=a.grid, **kw)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # per vector: full-replace renders, then grid-replace renders
    pairs = torch.cat([full, grid], dim=1)
    if a.thumb and pairs.shape[-1] > a.thumb:  # keep sheets small enough to commit and browse
        v, s_, c, h, w = pairs.shape
        small = torch.nn.functional.interpolate(pairs.reshape(v * s_, c, h, w).float(), size=(a.thumb * h // w, a.thumb),
                                                mode="bilinear", antialias=True, align_corners=False)
        pairs = small.round().clamp(0, 255).to(pairs.dtype).reshape(v, s_, c, *small.shape[-2:])
    library_sheet(lib, pairs, out / "contact_sheet.png", ids=ids, split=full.shape[1], grid=a.grid)
    thr = (lib.tileability or {}).get("threshold")
    sep = None
    if len(lib.labels) >= 2 and not a.no_separability:  # class confusion of the labelled classes in the report
        from ..vectors.separability import library_classes, measure_separability

        vecs, groups = library_classes(lib, "label")
        sep = measure_separability(gen, lib.layer, vecs, ids=groups, size=a.size or 128, progress=False)
    html_report(lib, full, grid, out / "report.html", ids=ids, threshold=thr, thumb=a.thumb, separability=sep)
    if not a.quiet:
        print(f"{out / 'contact_sheet.png'}\n{out / 'report.html'}")
    return 0


def cmd_label(a: argparse.Namespace) -> int:
    from ..vectors import VectorLibrary, label_vectors

    lib = VectorLibrary.load(a.library)
    ids = list(a.ids or [])
    if a.cluster is not None:
        ids += [r.id for r in lib.records if r.cluster == a.cluster]
    if a.top_tileable is not None:
        pool = [r for r in lib.records if r.tileability is not None and (not ids or r.id in ids)]
        ids = [r.id for r in sorted(pool, key=lambda r: -r.tileability)[: a.top_tileable]]
    if not ids:
        raise DatagenError("nothing to label: give --ids and/or --cluster")
    label_vectors(a.library, ids, None if a.name == "-" else a.name)
    if not a.quiet:
        print(f"labelled {len(ids)} vectors {a.name!r}: {ids}")
        if a.name != "-":
            from ..vectors import count_distinct
            from ..vectors.extract import DEDUPE_COSINE

            members = sorted({r.id for r in lib.records if r.label == a.name} | set(ids))  # lib: as loaded above
            distinct = count_distinct(lib.get(members))
            if distinct < len(members):
                print(f"class {a.name!r} holds {len(members)} vectors but {distinct} distinct ones (the rest are "
                      f"near-copies, cosine > {DEDUPE_COSINE}): it paints less variety than its size says")
    return 0


def cmd_separability(a: argparse.Namespace) -> int:
    import json

    from ..vectors.separability import (
        library_classes, measure_painted_separability, measure_separability, recipe_classes, save_result,
    )

    lib, gen = _load(a.library, a.model, a.device, a.trust_pickles)
    if a.recipe:
        from ..recipe import load_recipe

        recipe = load_recipe(a.recipe)
        recipe.validate_against(gen, lib)
        vecs, ids = recipe_classes(recipe, lib)
        section = f"recipe {Path(a.recipe).name}"
    else:
        vecs, ids = library_classes(lib, "cluster" if a.by_cluster else "label")
        section = "clusters" if a.by_cluster else "labels"
    if len(vecs) < 2:
        what = "painted classes in the recipe" if a.recipe else ("clusters" if a.by_cluster else "labels (set label: in library.yaml)")
        raise DatagenError(f"{a.library}: separability needs at least two {what}, found {len(vecs)}")
    if a.method == "painted":
        report = measure_painted_separability(gen, lib.layer, vecs, ids=ids, size=a.size or 256, num=a.num,
                                              threshold=a.threshold, progress=not a.quiet)
        section += " (painted)"
        unit = "% of interior pixels"
    else:
        report = measure_separability(gen, lib.layer, vecs, ids=ids, size=a.size or 128, seeds=a.seeds,
                                      max_vectors=a.max_vectors, threshold=a.threshold, batch_size=a.batch_size,
                                      progress=not a.quiet)
        unit = "% of renders"
    print(report.format(title=f"{a.library}: {section}; rows: true class, columns: predicted ({unit})"))  # the result
    if a.json:
        Path(a.json).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    if not a.no_save:
        print(f"saved as section {section!r} of {save_result(a.library, section, report)}")
    return 1 if a.strict and not report.ok else 0


def add_vector_commands(sub: argparse._SubParsersAction) -> None:
    v = add_command(sub, "vectors", None, "activation-vector libraries: extract, score, show, label, separability")
    vs = v.add_subparsers(dest="vectors_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, size_help: str, model_required: bool = False,
               quiet: str = "no progress bar and no summary") -> None:
        if model_required:
            p.add_argument("--model", required=True, help="generator spec, e.g. builtin:tissue-small")
        else:
            p.add_argument("--model", help="generator spec (default: the library's model)")
        add_device(p)
        p.add_argument("--size", type=int, default=None, help=f"render size in px (default: {size_help})")
        p.add_argument("--batch-size", type=int, default=8, help="renders per forward pass")
        add_quiet(p, quiet)
        add_trust_pickles(p)

    e = add_command(vs, "extract", cmd_extract, "sample images and collect activation vectors at a layer")
    common(e, "the model's native size: its training crop, 256 px when unknown", model_required=True)
    e.add_argument("--layer", default=None, help="layer name (default: the model's paint layer)")
    e.add_argument("--num-images", type=int, default=64, help="images to sample")
    e.add_argument("--per-image", type=positive_int("a number of pixels", keyword="all"), default=8, help="random pixels per image, or 'all'")
    e.add_argument("--seed", type=int, default=0, help="seed of the images and pixel positions")
    e.add_argument("--dedupe", type=_cosine_or_off, default=None,
                   help="skip a pixel whose cosine similarity to a vector already taken is above this "
                        "(default 0.999; 'off' keeps every pixel)")
    e.add_argument("--clusters", type=int, default=0, help="k-means (cosine) clusters to propose prototypes (0: none)")
    e.add_argument("--out", required=True, help="library directory")

    s = add_command(vs, "score", cmd_score, "tileability: full vs grid replace, compared by a feature extractor")
    s.add_argument("library", help="vector library directory")
    common(s, "the size the library was extracted at")
    s.add_argument("--extractor", default="efficientnet-lite0",
                   help="feature extractor: efficientnet-lite0 or module:package.module:factory")
    s.add_argument("--extractor-layer", default=None, help="extractor layer compared (default: the extractor's own)")
    s.add_argument("--grid", type=int, default=2, help="grid-replace spacing in layer pixels")
    s.add_argument("--seeds", type=int, default=4, help="noise seeds per vector")

    w = add_command(vs, "show", cmd_show, "contact sheet (PNG) and self-contained HTML report")
    w.add_argument("library", help="vector library directory")
    common(w, "the size the library was extracted at")
    w.add_argument("--out", required=True, help="folder for contact_sheet.png and report.html")
    w.add_argument("--ids", type=int, nargs="*", help="vector ids (default: all)")
    w.add_argument("--top", type=int, default=None, help="only the N most tileable (default: every vector)")
    w.add_argument("--grid", type=int, default=2, help="grid-replace spacing in layer pixels")
    w.add_argument("--seeds", type=int, default=2, help="noise seeds per vector")
    w.add_argument("--no-separability", action="store_true", help="leave the class confusion matrix of the labels out of the report")
    w.add_argument("--thumb", type=int, default=96, help="thumbnail width in px for the sheet and report (0: full size)")

    sp = add_command(vs, "separability", cmd_separability,
                     "can the labelled classes (or clusters, or a recipe's classes) be told apart?")
    sp.add_argument("library", help="vector library directory")
    common(sp, "128 px with --method features, 256 px with painted",
           quiet="no progress bar (the result, the confusion matrix and where it was saved, is still printed)")
    grp = sp.add_mutually_exclusive_group()
    grp.add_argument("--recipe", help="measure this recipe's painted classes (default: the library's labels)")
    grp.add_argument("--by-cluster", action="store_true", help="measure every cluster as a class")
    sp.add_argument("--method", choices=("features", "painted"), default="features",
                    help="features: full-replace renders, nearest class centroid (seconds; what generate checks); "
                         "painted: datagen qc's pixel model on painted mosaics of the classes (about a minute; "
                         "what a segmentation model sees)")
    sp.add_argument("--num", type=int, default=32, help="painted: mosaics to render")
    sp.add_argument("--seeds", type=int, default=2, help="noise seeds per vector")
    sp.add_argument("--max-vectors", type=int, default=8, help="vectors per class, spread over its ids")
    sp.add_argument("--threshold", type=float, default=0.2, help="flag pairs with confusion a->b + b->a >= this")
    sp.add_argument("--json", help="also write the report as JSON here")
    sp.add_argument("--no-save", action="store_true", help="do not store the result in LIBRARY/separability.json")
    sp.add_argument("--strict", action="store_true", help="exit with status 1 when a pair is inseparable")

    lb = add_command(vs, "label", cmd_label, "name vectors as a tissue class (or '-' to clear)")
    lb.add_argument("library", help="vector library directory")
    lb.add_argument("--name", required=True, help="the class name, or '-' to clear the label")
    lb.add_argument("--ids", type=int, nargs="*", help="vector ids")
    lb.add_argument("--cluster", type=int, default=None, help="all vectors of this cluster")
    lb.add_argument("--top-tileable", type=int, default=None, help="only the N most tileable of the selection")
    add_quiet(lb, "no summary line")

    from .experiments import add_experiment_commands  # invert, grid-study, units (the paper's experiments)
    add_experiment_commands(vs)
