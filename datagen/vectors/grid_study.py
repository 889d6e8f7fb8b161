"""Which grid size? The paper's two grid-size experiments, on any generator and library.

*Replace study* (sec. 4.2.4; the tileability measure at every grid size): for each vector,
the cosine similarity between the mask-weighted mean features of its full-replace render
and of its grid-g render, g = 1..5 (g = 0 would be the full replace itself: 1 by
definition), separately for tileable and non-tileable vectors (the library's tileability
scores against its threshold). Tileable vectors should stay near 1 at every g;
non-tileable ones should be lower, most at small g.

*Inversion study* (appendix, fig. 9): for random feature pixels y of generated images,
Algorithm 1 (:func:`datagen.vectors.invert.invert`) finds one vector (g = 0) or a grid
pair (g = 1..5) whose render's mean features match y; the measure is the cosine of the
match. The paper finds g = 0 worst and g = 2 best on three StyleGAN2 models.

Both use the tileability feature extractor (EfficientNet-Lite0 ``blocks.4``) unless
another is given. :func:`plot_study` draws both as one PNG (PIL only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import UsageError
from ..features import FeatureExtractor
from ..models.generator import Generator
from ..paint import grid_mask
from ..seeding import sample_rng, sample_torch_generator
from .extract import resolve_layer_name, resolve_size
from .invert import default_extractor, invert
from .library import VectorLibrary
from .tileability import default_threshold, mask_weights, masked_mean
from .visualize import MAX_GRID, check_grid, iter_renders, resolve_seeds

STUDY_PURPOSE = "grid-study"


def _stats(values: Sequence[float]) -> dict[str, Any]:
    t = torch.tensor(list(values), dtype=torch.float64)
    if len(t) == 0:
        return {"n": 0, "mean": None, "std": None}
    return {"n": len(t), "mean": round(float(t.mean()), 6), "std": round(float(t.std(unbiased=False)), 6)}


def _spread(ids: list[int], n: int | None) -> list[int]:
    """At most ``n`` of ``ids``, evenly spaced (deterministic)."""
    if n is None or len(ids) <= n:
        return ids
    return [ids[round(i * (len(ids) - 1) / max(n - 1, 1))] for i in range(n)]


def split_tileable(library: VectorLibrary, threshold: float | None = None) -> tuple[list[int], list[int], float]:
    """(tileable ids, non-tileable ids, threshold), each list by descending score.

    ``threshold``: default the library's recorded threshold, else Otsu's on its scores.
    Needs tileability scores (``datagen vectors score``)."""
    scored = [r for r in library.records if r.tileability is not None and math.isfinite(r.tileability)]
    if not scored:
        raise UsageError("the library has no tileability scores; run datagen vectors score on it first",
                         param="library")
    if threshold is None:
        threshold = (library.tileability or {}).get("threshold")
    if threshold is None:
        threshold = default_threshold(torch.tensor([r.tileability for r in scored]))
    ranked = sorted(scored, key=lambda r: -r.tileability)  # type: ignore[operator]
    tile = [r.id for r in ranked if r.tileability >= threshold]  # type: ignore[operator]
    non = [r.id for r in ranked if r.tileability < threshold]  # type: ignore[operator]
    return tile, non, float(threshold)


def scoring_size(library: VectorLibrary) -> tuple[int, int] | None:
    """The render size the library's tileability scores were computed at (else its extraction size):
    scores depend on it (the layer's size sets how many grid blocks fit), so the split into
    tileable and non-tileable is only meaningful at that size."""
    size = (library.tileability or {}).get("size") or library.image_size
    return (int(size[0]), int(size[1])) if size else None


def replace_study(
    gen: Generator,
    library: VectorLibrary,
    *,
    grids: Sequence[int] = (1, 2, 3, 4, 5),
    per_group: int | None = 16,
    threshold: float | None = None,
    seeds: int | Sequence[int] = 2,
    size: int | Sequence[int] | None = None,
    extractor: FeatureExtractor | None = None,
    extractor_layer: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Cosine(full replace, grid-g replace) per vector and grid size, summarised per group.

    ``size`` defaults to :func:`scoring_size`, where the split by the library's scores holds.
    ``per_group``: vectors per group (tileable / non-tileable), spread evenly over the
    group's score ranking (None: all). Returns a JSON-ready dict: ``groups`` ->
    {tileable, non_tileable} -> {"ids", "by_grid": {g: {n, mean, std}}}, ``per_vector``."""
    layer = library.layer
    hw = resolve_size(gen, size if size is not None else scoring_size(library))
    grids = sorted({int(g) for g in grids})
    if not grids or grids[0] < 1 or grids[-1] > MAX_GRID:
        raise UsageError(f"replace grid sizes must be in 1..{MAX_GRID}, got {grids}", param="grids")
    for g in grids:
        check_grid(gen, layer, hw, g)
    seed_list = resolve_seeds(seeds)
    tile, non, thr = split_tileable(library, threshold)
    groups = {"tileable": _spread(tile, per_group), "non_tileable": _spread(non, per_group)}
    ids = groups["tileable"] + groups["non_tileable"]
    if not ids:
        raise UsageError("no vectors to study", param="library")
    extractor, feat_layer = default_extractor(extractor, extractor_layer)
    extractor = extractor.to(gen.device).eval()
    modes = [("full", 2)] + [("grid", g) for g in grids]
    sums = torch.zeros(len(ids), len(grids), dtype=torch.float64)
    weights: dict[tuple[Any, ...], torch.Tensor] = {}
    for vi, _si, outs, shapes in iter_renders(gen, library.get(ids), layer, modes=modes, seeds=seed_list, size=hw,
                                              batch_size=batch_size, progress=progress, desc=f"grid study {layer}"):
        with torch.no_grad():
            feats = [extractor(o)[feat_layer].float() for o in outs]
        for j, g in enumerate(grids):
            key = (g, shapes[j + 1], tuple(outs[0].shape[-2:]), tuple(feats[0].shape[-2:]))
            if key not in weights:
                weights[key] = mask_weights(grid_mask(*shapes[j + 1], g), tuple(outs[0].shape[-2:]),
                                            tuple(feats[0].shape[-2:]))
            w = weights[key]
            cos = F.cosine_similarity(masked_mean(feats[0], w), masked_mean(feats[j + 1], w), dim=1, eps=1e-8)
            sums[:, j].index_add_(0, vi, cos.double().cpu())
    cos_all = sums / len(seed_list)
    row = {i: k for k, i in enumerate(ids)}
    out_groups = {}
    for name, members in groups.items():
        out_groups[name] = {
            "ids": members,
            "by_grid": {str(g): _stats([float(cos_all[row[i], j]) for i in members]) for j, g in enumerate(grids)},
        }
    return {
        "what": "cosine similarity of mask-weighted mean features: full replace vs grid-g replace",
        "layer": layer, "size": list(hw), "seeds": seed_list, "extractor_layer": feat_layer,
        "grids": grids, "threshold": round(thr, 6),
        "scores_size": list(scoring_size(library) or ()),
        "groups": out_groups,
        "per_vector": {str(i): {"tileability": library.record(i).tileability,
                                "by_grid": {str(g): round(float(cos_all[row[i], j]), 6) for j, g in enumerate(grids)}}
                       for i in ids},
    }


def feature_targets(gen: Generator, extractor: FeatureExtractor, feat_layer: str, count: int, *, seed: int = 0,
                    size: tuple[int, int]) -> torch.Tensor:
    """(count, D) targets as in the paper: one random feature pixel of each of ``count`` generated images.

    Image t is the generator's own output for inputs drawn from ``(seed, t, "grid-study")``; its
    pixel from ``(seed, t, "grid-study-pixel")``."""
    out = []
    for t in range(count):
        inputs = gen.sample_inputs([sample_torch_generator(seed, t, STUDY_PURPOSE)], size)
        with torch.no_grad():
            f = extractor(gen.forward(inputs).float())[feat_layer].float()[0]  # (D, h, w)
        rng = sample_rng(seed, t, STUDY_PURPOSE + "-pixel")
        y, x = int(rng.integers(f.shape[1])), int(rng.integers(f.shape[2]))
        out.append(f[:, y, x].cpu())
    return torch.stack(out)


def invert_study(
    gen: Generator,
    layer: str | None = None,
    *,
    grids: Sequence[int] = (0, 1, 2, 3, 4, 5),
    targets: int = 4,
    seed: int = 0,
    steps: int = 40,
    lr: float = 0.05,
    size: int | Sequence[int] | None = None,
    extractor: FeatureExtractor | None = None,
    extractor_layer: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The paper's fig. 9: cosine between the target y and the mean features of Algorithm 1's
    render, per grid size (0: one vector everywhere), over ``targets`` random feature pixels."""
    layer = resolve_layer_name(gen, layer)
    hw = resolve_size(gen, size)
    grids = sorted({int(g) for g in grids})
    if not grids or grids[0] < 0 or grids[-1] > MAX_GRID:
        raise UsageError(f"grid sizes must be in 0..{MAX_GRID}, got {grids}", param="grids")
    for g in grids:
        if g > 0:
            check_grid(gen, layer, hw, g)
    if targets < 1:
        raise UsageError(f"must be >= 1, got {targets}", param="targets")
    extractor, feat_layer = default_extractor(extractor, extractor_layer)
    extractor = extractor.to(gen.device).eval()
    ys = feature_targets(gen, extractor, feat_layer, targets, seed=seed, size=hw)
    cos = {g: [] for g in grids}  # type: dict[int, list[float]]
    loss = {g: [] for g in grids}  # type: dict[int, list[float]]
    bar = tqdm(total=targets * len(grids), desc=f"grid study: invert {layer}", unit="run", disable=not progress)
    for t in range(targets):
        for g in grids:
            r = invert(gen, ys[t], layer, extractor=extractor, extractor_layer=feat_layer,
                       mode="vector" if g == 0 else "grid", grid=max(g, 1), steps=steps, lr=lr, seeds=[t],
                       size=hw, progress=False)
            cos[g].append(r.final_cosine)
            loss[g].append(r.final_loss)
            bar.update(1)
    bar.close()
    return {
        "what": "Algorithm 1: cosine between a random feature pixel y and the mean features of the render "
                "of the optimised vector (g = 0) or grid pair (g >= 1)",
        "layer": layer, "size": list(hw), "extractor_layer": feat_layer, "grids": grids, "targets": targets,
        "seed": seed, "steps": steps, "lr": lr,
        "by_grid": {str(g): {**_stats(cos[g]), "loss": _stats(loss[g])} for g in grids},
        "per_target": {str(g): [round(c, 6) for c in cos[g]] for g in grids},
        "best_grid": max(grids, key=lambda g: sum(cos[g]) / len(cos[g])),
    }


# -- the figure ---------------------------------------------------------------------------
_COLOURS = {"tileable": (31, 119, 180), "non_tileable": (214, 39, 40), "inversion": (44, 140, 44)}


def _panel(draw: Any, box: tuple[int, int, int, int], title: str, series: dict[str, dict[str, dict[str, Any]]],
           xs: Sequence[int], font: Any, small: Any) -> None:
    """One line chart with +-std bars: ``series`` name -> {str(x): {mean, std}}."""
    x0, y0, x1, y1 = box
    left, bottom, top, right = x0 + 52, y1 - 60, y0 + 30, x1 - 12
    vals = [s[str(x)][k] for s in series.values() for x in xs if s.get(str(x), {}).get("mean") is not None
            for k in ("mean",)]
    errs = [s[str(x)]["std"] or 0.0 for s in series.values() for x in xs if s.get(str(x), {}).get("mean") is not None]
    lo = min(v - e for v, e in zip(vals, errs)) if vals else 0.0
    hi = max(v + e for v, e in zip(vals, errs)) if vals else 1.0
    pad = max((hi - lo) * 0.08, 0.005)
    lo, hi = lo - pad, min(hi + pad, 1.0 + pad)
    draw.text((x0 + 8, y0 + 4), title, fill=(0, 0, 0), font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=(0, 0, 0), width=1)

    def px(x: float) -> float:
        return left + 20 + (x - xs[0]) * (right - left - 40) / max(xs[-1] - xs[0], 1)

    def py(v: float) -> float:
        return bottom - (v - lo) * (bottom - top) / (hi - lo)

    for k in range(6):
        v = lo + k * (hi - lo) / 5
        draw.line([(left - 4, py(v)), (left, py(v))], fill=(0, 0, 0))
        draw.line([(left + 1, py(v)), (right, py(v))], fill=(230, 230, 230))
        draw.text((x0 + 4, py(v) - 6), f"{v:.3f}", fill=(0, 0, 0), font=small)
    for x in xs:
        draw.line([(px(x), bottom), (px(x), bottom + 4)], fill=(0, 0, 0))
        draw.text((px(x) - 3, bottom + 6), str(x), fill=(0, 0, 0), font=small)
    draw.text(((left + right) // 2 - 30, bottom + 22), "grid size g", fill=(0, 0, 0), font=small)
    for n, (name, s) in enumerate(series.items()):
        colour = _COLOURS.get(name, (80, 80, 80))
        pts = [(px(x), py(s[str(x)]["mean"])) for x in xs if s.get(str(x), {}).get("mean") is not None]
        for x in xs:
            st = s.get(str(x), {})
            if st.get("mean") is None:
                continue
            e = st["std"] or 0.0
            draw.line([(px(x), py(st["mean"] - e)), (px(x), py(st["mean"] + e))], fill=colour, width=1)
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for p in pts:
            draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)
        n_vec = next((st.get("n") for st in s.values() if isinstance(st, dict) and st.get("n")), 0)
        lx, ly = left + 180 * n, bottom + 44  # legend: one row under the axis label
        draw.line([(lx, ly + 6), (lx + 20, ly + 6)], fill=colour, width=2)
        draw.text((lx + 25, ly), f"{name.replace('_', '-')} (n={n_vec})", fill=(0, 0, 0), font=small)


def plot_study(result: dict[str, Any], path: str | Path, *, title: str = "") -> Path:
    """Draw the replace study (left) and the inversion study (right), whichever ``result`` has, as a PNG."""
    from PIL import Image, ImageDraw, ImageFont

    panels = [k for k in ("replace", "invert") if result.get(k)]
    if not panels:
        raise UsageError("nothing to plot: the result has neither a replace nor an invert study", param="result")
    w, h = 460 * len(panels), 360
    img = Image.new("RGB", (w, h + 24), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    try:
        font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1
        font = small = ImageFont.load_default()
    if title:
        draw.text((8, 4), title, fill=(0, 0, 0), font=font)
    for k, name in enumerate(panels):
        box = (460 * k, 24, 460 * (k + 1), h + 24)
        if name == "replace":
            r = result["replace"]
            series = {g: r["groups"][g]["by_grid"] for g in ("tileable", "non_tileable") if r["groups"][g]["ids"]}
            _panel(draw, box, "cos(full, grid-g replace) features", series, r["grids"], font, small)
        else:
            r = result["invert"]
            series = {"inversion": {g: v for g, v in r["by_grid"].items()}}
            _panel(draw, box, f"Algorithm 1: cos(render, target), {r['targets']} targets", series, r["grids"],
                   font, small)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p)
    return p


def grid_study(
    gen: Generator,
    library: VectorLibrary,
    *,
    replace: bool = True,
    inversion: bool = True,
    grids: Sequence[int] = (0, 1, 2, 3, 4, 5),
    per_group: int | None = 16,
    threshold: float | None = None,
    seeds: int | Sequence[int] = 2,
    size: int | Sequence[int] | None = None,
    targets: int = 4,
    steps: int = 40,
    lr: float = 0.05,
    seed: int = 0,
    extractor: FeatureExtractor | None = None,
    extractor_layer: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Both studies on ``library``'s layer (grid 0 only enters the inversion study)."""
    if not (replace or inversion):
        raise UsageError("nothing to do: enable the replace study, the inversion study or both", param="replace")
    extractor, feat_layer = default_extractor(extractor, extractor_layer)
    hw = resolve_size(gen, size if size is not None else scoring_size(library))
    out: dict[str, Any] = {"model": library.model, "layer": library.layer, "size": list(hw), "extractor_layer": feat_layer}
    if replace:
        out["replace"] = replace_study(gen, library, grids=[g for g in grids if g > 0], per_group=per_group,
                                       threshold=threshold, seeds=seeds, size=hw, extractor=extractor,
                                       extractor_layer=feat_layer, batch_size=batch_size, progress=progress)
    if inversion:
        out["invert"] = invert_study(gen, library.layer, grids=grids, targets=targets, seed=seed, steps=steps, lr=lr,
                                     size=hw, extractor=extractor, extractor_layer=feat_layer, progress=progress)
    return out


__all__ = [
    "feature_targets", "grid_study", "invert_study", "plot_study", "replace_study", "scoring_size", "split_tileable",
]
