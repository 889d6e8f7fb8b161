"""Units (channels) of a layer that follow a class, and editing them (GAN Dissection, Bau et al.).

Painting writes whole activation vectors; GAN Dissection works with single channels
("units"). Here the segmentation GAN Dissection gets from a segmentation model is the
painted layout itself: a recipe's classes are painted (with the recipe's renderer) into a
few layouts, and each unit u of a layer at or after the paint layer is scored per class c
by the IoU between its thresholded activation map and the class's regions:

    t_u      = the ``quantile`` (default 0.99: top 1 %) of u's activations over all renders
    IoU(u,c) = |{a_u > t_u} & {class c}| / |{a_u > t_u} | {class c}|      (layer cells)

The top units of a class can then be *ablated* (set to 0) or *inserted* (set to a high
value, by default each unit's t_u) inside a region, the two interventions of GAN
Dissection:

    out = edit_units(act, region, units, "ablate")           # tensors in, tensor out
    with unit_hook(gen.module, layer, region, units, "insert", value=ranking.thresholds[units]):
        images = gen.forward(inputs)

``edit_units`` (:func:`datagen.paint.edit_units`) takes what a paint step has at hand
(activations (B, C, h, w), a region (B, h, w) bool, unit indices, mode, value): a recipe
class's ``units:`` runs it right after :func:`datagen.paint.paint`, in the renderer's one
forward pass (:func:`datagen.render.unit_edits`, :func:`datagen.render.painted_forward`), and
the renders here go through that same path (:meth:`datagen.render.Renderer.forward`).

How much a class still *looks like itself* after an edit (:func:`class_response`) is
measured in the tileability feature space (EfficientNet-Lite0 ``blocks.4``): the mean
feature of the class's regions, centred on the mean feature of all painted regions, is
compared (cosine) with the same direction in the unedited renders. It is 1 when the
regions keep their class-specific appearance, ~0 when they look like the average of all
classes, and it ignores changes common to every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import UsageError
from ..features import FeatureExtractor
from ..models.hooks import LayerHook
from ..paint import UNIT_MODES, UnitMode, edit_units, resize_labels, resize_region
from ..seeding import sample_rng
UNITS_PURPOSE = "units"
"""Stream prefix of the layouts, vectors and noise of the dissection renders (never a dataset sample's)."""


# -- the intervention: tensors in, tensor out (datagen.paint.edit_units, re-exported) ----------
def unit_hook(
    module: torch.nn.Module,
    layer: str,
    region: torch.Tensor,
    units: Sequence[int] | torch.Tensor,
    mode: UnitMode = "ablate",
    value: float | torch.Tensor | None = None,
    *,
    output_index: int = 0,
) -> LayerHook:
    """A :class:`LayerHook` applying :func:`edit_units` at ``layer``; ``region`` (B, H, W) or (H, W)
    may be at any resolution (e.g. the image's): it is resized to the layer when it runs."""
    cache: dict[tuple[int, int], torch.Tensor] = {}

    def edit(act: torch.Tensor) -> torch.Tensor:
        size = tuple(act.shape[-2:])
        if size not in cache:
            cache[size] = resize_region(region, size)  # type: ignore[arg-type]
        return edit_units(act, cache[size], units, mode, value)  # type: ignore[index]

    return LayerHook(module, layer, edit=edit, output_index=output_index, record=False)


# -- dissection -------------------------------------------------------------------------------
@dataclass
class UnitRanking:
    """IoU of every unit of ``layer`` with every class's painted regions."""

    layer: str
    quantile: float
    class_ids: list[int]
    class_names: list[str]
    thresholds: torch.Tensor  # (C,) the top-quantile activation of each unit
    iou: torch.Tensor  # (K, C)
    area: torch.Tensor  # (K,) share of layer cells in each class
    contrast: torch.Tensor  # (K, C) (mean inside the class - mean outside) / std, per unit: breaks IoU ties
    settings: dict[str, Any] = field(default_factory=dict)

    def _row(self, name: str) -> int:
        if name not in self.class_names:
            raise UsageError(f"no class {name!r}; classes: {', '.join(self.class_names)}", param="name")
        return self.class_names.index(name)

    def top(self, name: str, k: int = 8) -> torch.Tensor:
        """Indices (k,) of the units with the highest IoU for class ``name``, best first (equal IoUs,
        common at the paint layer where painted regions are constant, by :attr:`contrast`)."""
        row = self._row(name)
        by_contrast = torch.argsort(self.contrast[row], descending=True, stable=True)
        return by_contrast[torch.argsort(self.iou[row][by_contrast], descending=True, stable=True)][:k]

    def to_dict(self, top: int = 8) -> dict[str, Any]:
        classes = {}
        for row, (cid, name) in enumerate(zip(self.class_ids, self.class_names)):
            units = self.top(name, top)
            classes[name] = {
                "id": cid, "area": round(float(self.area[row]), 6),
                "units": [{"unit": int(u), "iou": round(float(self.iou[row, u]), 6),
                           "contrast": round(float(self.contrast[row, u]), 4),
                           "threshold": round(float(self.thresholds[u]), 6)} for u in units],
            }
        return {"layer": self.layer, "quantile": self.quantile, "channels": int(self.thresholds.numel()),
                **self.settings, "classes": classes}


def unit_thresholds(activations: torch.Tensor, quantile: float) -> torch.Tensor:
    """(C,): the ``quantile`` of each channel's values over all samples and positions of (N, C, h, w)."""
    if not 0.0 < quantile < 1.0:
        raise UsageError(f"must be in (0, 1), e.g. 0.99 for the top 1 %, got {quantile!r}", param="quantile")
    x = activations.detach().float().transpose(0, 1).reshape(activations.shape[1], -1)
    k = min(x.shape[1], max(1, int(round(quantile * x.shape[1]))))
    return torch.kthvalue(x.cpu(), k, dim=1).values


def unit_iou(activations: torch.Tensor, class_map: torch.Tensor, class_ids: Sequence[int],
             thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(IoU (K, C), class areas (K,), contrast (K, C)) of thresholded units and class regions.

    ``activations`` (N, C, h, w); ``class_map`` (N, h, w) class id per layer cell. A cell is
    "on" when the unit is at or above its threshold (ties count: a painted region is
    constant, so its cells tie). Contrast: (mean inside the class - mean outside) / the
    unit's standard deviation."""
    a = activations.detach().float().cpu()
    on = a >= thresholds.float()[None, :, None, None]  # (N, C, h, w)
    std = a.transpose(0, 1).reshape(a.shape[1], -1).std(dim=1).clamp_min(1e-8)
    cm = class_map.cpu()
    ious, areas, contrast = [], [], []
    for cid in class_ids:
        s = (cm == cid)[:, None]  # (N, 1, h, w)
        inter = (on & s).sum(dim=(0, 2, 3)).double()
        union = (on | s).sum(dim=(0, 2, 3)).double()
        ious.append(torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter)))
        areas.append(float(s.double().mean()))
        sf = s.float()
        n_in, n_out = sf.sum(), (1 - sf).sum()
        mean_in = (a * sf).sum(dim=(0, 2, 3)) / n_in.clamp_min(1)
        mean_out = (a * (1 - sf)).sum(dim=(0, 2, 3)) / n_out.clamp_min(1)
        contrast.append(torch.where((n_in > 0) & (n_out > 0), (mean_in - mean_out) / std, torch.zeros_like(std)))
    return torch.stack(ious).float(), torch.tensor(areas), torch.stack(contrast).float()


def layer_order(renderer: Any, layer: str) -> int:
    """Position of ``layer`` relative to the paint layer in the generator's layer list (<0: before it)."""
    names = [i.name for i in renderer.generator.layers()]
    if layer not in names:
        raise UsageError(f"{renderer.generator.name} has no layer {layer!r}; layers: {', '.join(names)}", param="layer")
    return names.index(layer) - names.index(renderer.layer)


@dataclass
class PaintedBatch:
    """Renders of a few layouts: what the dissection and the response measure need."""

    indices: list[int]
    layouts: np.ndarray  # (N, H, W) uint8 class ids
    images: torch.Tensor  # (N, 3, H, W) float in [-1, 1], CPU
    activations: torch.Tensor | None  # (N, C, h, w) of the dissected layer (after painting), CPU


def painted_batch(renderer: Any, indices: Sequence[int], layer: str | None = None, *,
                  edit: tuple[torch.Tensor, Sequence[int], UnitMode, Any] | None = None,
                  layouts: np.ndarray | None = None) -> PaintedBatch:
    """Paint ``indices`` with ``renderer`` (streams prefixed ``units:``) and render them (float32).

    ``layer``: also record its activations (after painting and after ``edit``).
    ``edit``: (region (N, H, W) bool at image resolution, units, mode, value) applied with
    :func:`edit_units` at ``layer`` (default the paint layer), after the painting (and after the
    recipe classes' own unit edits): one more edit of :meth:`datagen.render.Renderer.forward`.
    """
    stream = UNITS_PURPOSE + ":"
    if layouts is None:
        layouts = np.stack([renderer.make_layout(i, stream) for i in indices])
    edits = []
    if edit is not None:
        region, units, mode, value = edit
        cache: dict[tuple[int, int], torch.Tensor] = {}

        def unit_edit(act: torch.Tensor) -> torch.Tensor:
            size = tuple(act.shape[-2:])
            if size not in cache:
                cache[size] = resize_region(region, size).to(act.device)  # type: ignore[arg-type]
            return edit_units(act, cache[size], units, mode, value)  # type: ignore[index]

        edits.append((layer or renderer.layer, unit_edit))
    images, feats = renderer.forward(list(indices), layouts, stream=stream, record=[layer] if layer else (),
                                     edits=edits, precision="fp32")
    return PaintedBatch(list(indices), layouts, images.float().cpu(), feats[0].cpu() if layer else None)


def class_map_at(layouts: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) int64 class ids of (N, H, W) layouts at ``size``, centred nearest (as painting samples them)."""
    return resize_labels(torch.from_numpy(np.asarray(layouts, dtype=np.int64)), size)


def rank_units(renderer: Any, layer: str | None = None, *, num: int = 8, quantile: float = 0.99,
               batch_size: int = 4, progress: bool = True) -> UnitRanking:
    """Dissect ``layer`` (default: the paint layer; it must not come before it) on ``num`` painted
    layouts of ``renderer``'s recipe: IoU of every unit with every class (keep classes included)."""
    layer = layer or renderer.layer
    if layer_order(renderer, layer) < 0:
        raise UsageError(f"layer {layer!r} comes before the paint layer {renderer.layer!r}: painted regions exist "
                         "only at and after the paint layer", param="layer")
    if num < 1 or batch_size < 1:
        raise UsageError(f"must be >= 1, got {min(num, batch_size)}", param="num" if num < 1 else "batch_size")
    acts, maps = [], []
    bar = tqdm(total=num, desc=f"units {layer}", unit="img", disable=not progress)
    for start in range(0, num, batch_size):
        idx = list(range(start, min(start + batch_size, num)))
        b = painted_batch(renderer, idx, layer)
        acts.append(b.activations)
        maps.append(class_map_at(b.layouts, tuple(b.activations.shape[-2:])))  # type: ignore[union-attr]
        bar.update(len(idx))
    bar.close()
    a, cm = torch.cat(acts), torch.cat(maps)  # type: ignore[arg-type]
    ids = [c.id for c in renderer.classes]
    names = [c.name for c in renderer.classes]
    thr = unit_thresholds(a, quantile)
    iou, area, contrast = unit_iou(a, cm, ids, thr)
    return UnitRanking(layer, quantile, ids, names, thr, iou, area, contrast,
                       settings={"paint_layer": renderer.layer, "num": num, "seed": renderer.seed,
                                 "size": list(renderer.size)})


# -- how much a class still looks like itself ------------------------------------------------
def region_means(features: torch.Tensor, layouts: np.ndarray, class_ids: Sequence[int]) -> torch.Tensor:
    """(K, D): mean feature over all pixels of each class (layouts resized to the feature map);
    NaN rows for classes absent from every layout."""
    f = features.float()
    cm = class_map_at(layouts, tuple(f.shape[-2:]))
    out = []
    for cid in class_ids:
        m = (cm == cid)[:, None].to(f)
        total = m.sum()
        out.append((f * m).sum(dim=(0, 2, 3)) / total if total > 0 else torch.full((f.shape[1],), float("nan")))
    return torch.stack(out)


def class_response(means: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(K,): cosine between each class's centred mean feature after an edit (``means``) and before
    (``reference``); both (K, D), centred on the reference's mean over the present classes."""
    present = ~torch.isnan(reference).any(dim=1)
    centre = reference[present].mean(dim=0)
    return F.cosine_similarity(means - centre, reference - centre, dim=1, eps=1e-8)


def ablation_effect(
    renderer: Any,
    ranking: UnitRanking,
    name: str,
    k: int = 8,
    *,
    num: int = 4,
    random_draws: int = 4,
    mode: UnitMode = "ablate",
    extractor: FeatureExtractor | None = None,
    extractor_layer: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Response of class ``name`` (:func:`class_response`) when its top-``k`` units are edited inside its
    regions, against ``random_draws`` sets of ``k`` random units (drawn from ``(seed, d, "units-random")``).

    Uses the first ``num`` dissection layouts. ``mode`` insert sets the units to their thresholds."""
    from .invert import default_extractor

    extractor, feat_layer = default_extractor(extractor, extractor_layer)
    extractor = extractor.to(renderer.generator.device).eval()
    row = ranking._row(name)
    cid = ranking.class_ids[row]
    idx = list(range(num))
    base = painted_batch(renderer, idx)
    region = torch.from_numpy(base.layouts == cid)
    if not region.any():
        raise UsageError(f"class {name!r} does not occur in the first {num} layouts; raise num", param="num")

    def means(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = extractor(images.to(renderer.generator.device))[feat_layer].float().cpu()
        return region_means(feats, base.layouts, ranking.class_ids)

    reference = means(base.images)

    def response(units: torch.Tensor) -> float:
        value = ranking.thresholds[units] if mode == "insert" else None
        edited = painted_batch(renderer, idx, None if ranking.layer == renderer.layer else ranking.layer,
                               edit=(region, units, mode, value), layouts=base.layouts)
        return float(class_response(means(edited.images), reference)[row])

    channels = ranking.thresholds.numel()
    top = response(ranking.top(name, k))
    rand = []
    for d in range(random_draws):
        rng = sample_rng(seed, d, UNITS_PURPOSE + "-random")
        rand.append(response(torch.from_numpy(rng.choice(channels, size=min(k, channels), replace=False)).long()))
    return {"class": name, "k": k, "mode": mode, "layer": ranking.layer, "top_units": ranking.top(name, k).tolist(),
            "response_top": round(top, 6), "response_random": [round(r, 6) for r in rand],
            "response_random_mean": round(sum(rand) / len(rand), 6) if rand else None}


__all__ = [
    "PaintedBatch", "UNIT_MODES", "UnitRanking", "ablation_effect", "class_map_at", "class_response", "edit_units",
    "layer_order", "painted_batch", "rank_units", "region_means", "resize_region", "unit_hook", "unit_iou",
    "unit_thresholds",
]
