"""Algorithm 1 (Herdt & Maass, appendix): activation vectors that draw a target's features.

The generator from the paint layer X to the image, ``G_X``, and a feature extractor up
to layer Y, ``F_Y``, stay frozen. The target is a feature vector ``y`` of layer Y: the
spatial mean of ``F_Y`` over real crops (:func:`image_target`), or any (D,) vector. Only
what is painted into X is optimised, by gradient descent on

    loss = mean_c | mean_{h,w} F_Y(G_X(a)) - y |          (L1, averaged over noise seeds)

where the layer ``a`` is built from the optimised tensors:

* ``mode="vector"`` (the paper's grid size 0): one vector v at every pixel (full replace);
* ``mode="grid"``, ``grid=g``: v1 in the g x g grid blocks (:func:`datagen.paint.grid_mask`),
  v2 everywhere else (the paper's blue and white pixels); v1 is the result;
* ``mode="full"``: every pixel of the layer (a whole activation map, no vector).

The feature extractor is the one tileability uses (EfficientNet-Lite0 ``blocks.4``, the
analogue of the paper's ResNet layer2) unless another is passed. The vector found can be
added to a vector library (:func:`add_to_library`), with its provenance under
``extraction.inversions`` in ``library.yaml``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import DatagenError, UsageError
from ..features import TILEABILITY_LAYER, EfficientNetLite0, FeatureExtractor
from ..models.generator import Generator
from ..models.hooks import LayerHook
from ..paint import grid_mask
from .extract import resolve_layer_name, resolve_size
from .library import VectorLibrary, VectorRecord
from .visualize import cat_inputs, check_grid, resolve_seeds, seed_inputs

Mode = Literal["vector", "grid", "full"]
MODES = ("vector", "grid", "full")
MAX_TARGET_SIDE = 1024
"""Target images larger than this (per side) are centre-cropped to it: the target is a spatial
mean, so a crop keeps the structures' scale where a resize would change it."""


@dataclass
class InversionResult:
    """What Algorithm 1 found, and how well it matches the target."""

    mode: str
    grid: int
    layer: str
    vector: torch.Tensor | None
    """(C,): v (mode vector), v1 of the grid blocks (mode grid); None for mode full."""
    background: torch.Tensor | None
    """(C,): v2 between the grid blocks (mode grid), else None."""
    activations: torch.Tensor | None
    """(C, h, w): the optimised layer (mode full), else None."""
    losses: list[float]
    """Loss before each update step (losses[0]: the starting point)."""
    final_loss: float
    """Loss of the returned result (the best of all evaluated iterates)."""
    start_cosine: float
    final_cosine: float
    """Cosine similarity of the rendered mean features and the target (the paper's fig. 9 measure)."""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def start_loss(self) -> float:
        return self.losses[0]

    def edit(self, act: torch.Tensor) -> torch.Tensor:
        """The layer edit that paints this result into activations (N, C, h, w)."""
        n, c, h, w = act.shape
        if self.mode == "full":
            a = self.activations.to(act)  # type: ignore[union-attr]
            if a.shape[-2:] != (h, w):
                raise DatagenError(f"the optimised activations are {tuple(a.shape[-2:])}, the layer is {(h, w)}")
            return a[None].expand(n, c, h, w).clone()
        v = self.vector.to(act)[:, None, None]  # type: ignore[union-attr]
        if self.mode == "vector":
            return v[None].expand(n, c, h, w).clone()
        inside = grid_mask(h, w, self.grid).to(act.device)
        return torch.where(inside, v, self.background.to(act)[:, None, None])[None].expand(n, c, h, w).clone()  # type: ignore[union-attr]


# -- targets -------------------------------------------------------------------------
def read_image(path: str | Path) -> np.ndarray:
    """An RGB image file as (H, W, 3) uint8 (PNG, JPEG, TIFF, ...), centre-cropped to at most
    :data:`MAX_TARGET_SIDE` per side."""
    p = Path(path)
    try:
        if p.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = np.asarray(tifffile.imread(p))
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=-1)
            if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
                raise ValueError(f"expected an 8-bit RGB image, got shape {arr.shape} {arr.dtype}")
            arr = arr[..., :3]
        else:
            from PIL import Image

            with Image.open(p) as im:
                arr = np.array(im.convert("RGB"))
    except Exception as e:  # PIL and tifffile raise many types for unreadable files
        raise DatagenError(f"{p}: cannot read as an image ({type(e).__name__}: {e})") from None
    h, w = arr.shape[:2]
    if min(h, w) < 32:
        raise DatagenError(f"{p}: the image is {h}x{w} px; a target crop needs at least 32 px per side")
    ch, cw = min(h, MAX_TARGET_SIDE), min(w, MAX_TARGET_SIDE)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(arr[y0:y0 + ch, x0:x0 + cw])


def find_target_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively) in folders, in a stable order."""
    from ..train.data import find_images

    if not paths:
        raise UsageError("give at least one image file or folder", param="images")
    out: list[Path] = []
    for p in paths:
        out += find_images(p)
    return out


def image_target(extractor: FeatureExtractor, images: Sequence[np.ndarray | torch.Tensor], layer: str,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The target y (D,): the spatial mean of ``layer`` of the extractor, averaged over ``images``.

    Images are (H, W, 3) uint8 arrays or (3, H, W) float tensors in [-1, 1]; sizes may differ."""
    if len(images) == 0:
        raise UsageError("no target images", param="images")
    pooled = []
    with torch.no_grad():
        for im in images:
            if isinstance(im, np.ndarray):
                x = torch.from_numpy(im).permute(2, 0, 1).float() / 127.5 - 1.0
            else:
                x = im.float()
            pooled.append(extractor(x[None].to(device))[layer].float().mean(dim=(2, 3))[0])
    return torch.stack(pooled).mean(dim=0)


# -- the optimisation -----------------------------------------------------------------
@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters of ``module`` without gradients for the duration (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def default_extractor(extractor: FeatureExtractor | None, extractor_layer: str | None) -> tuple[FeatureExtractor, str]:
    """``extractor`` (default: EfficientNet-Lite0 at the tileability layer) and the layer read."""
    if extractor is None:
        extractor = EfficientNetLite0([extractor_layer or TILEABILITY_LAYER])
    feat_layer = extractor_layer or extractor.layers[0]
    if feat_layer not in extractor.layers:
        raise UsageError(f"the feature extractor reads layers {', '.join(extractor.layers)}, not {feat_layer!r}",
                         param="extractor_layer")
    return extractor, feat_layer


def invert(
    gen: Generator,
    target: torch.Tensor,
    layer: str | None = None,
    *,
    extractor: FeatureExtractor | None = None,
    extractor_layer: str | None = None,
    mode: Mode = "vector",
    grid: int = 2,
    steps: int = 200,
    lr: float = 0.05,
    seeds: int | Sequence[int] = 1,
    size: int | Sequence[int] | None = None,
    init: torch.Tensor | None = None,
    progress: bool = True,
) -> InversionResult:
    """Algorithm 1: optimise what is painted into ``layer`` so the render's mean features match ``target``.

    ``target``: (D,) features of ``extractor_layer``. ``seeds``: noise seeds (the
    ``visualize`` inputs) the loss is averaged over. ``init``: the starting vector (C,)
    (every optimised vector starts there; mode full starts from the layer's own
    activations); default: the layer's own activation at its centre pixel for the first
    seed, a real activation vector. Returns the best iterate (lowest loss).
    """
    layer = resolve_layer_name(gen, layer)
    hw = resolve_size(gen, size)
    seed_list = resolve_seeds(seeds)
    if mode not in MODES:
        raise UsageError(f"must be one of {', '.join(MODES)}, got {mode!r}", param="mode")
    if mode == "grid":
        check_grid(gen, layer, hw, grid)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise UsageError(f"must be a positive integer, got {steps!r}", param="steps")
    if not lr > 0:
        raise UsageError(f"must be > 0, got {lr!r}", param="lr")
    extractor, feat_layer = default_extractor(extractor, extractor_layer)
    dev = gen.device
    extractor = extractor.to(dev).eval()
    y = target.detach().float().to(dev).flatten()

    inputs = cat_inputs(seed_inputs(gen, seed_list, hw))
    with torch.no_grad(), LayerHook(gen.module, layer) as hook:
        gen.forward(inputs)
    own = hook.original.detach().float()  # type: ignore[union-attr]
    n, c, h, w = own.shape
    if init is None:
        start = own[0, :, h // 2, w // 2].clone()
    else:
        start = init.detach().float().to(dev).flatten()
        if start.shape != (c,):
            raise UsageError(f"must be a ({c},) vector for layer {layer}, got {tuple(init.shape)}", param="init")
    inside = grid_mask(h, w, grid).to(dev) if mode == "grid" else None
    if mode == "full":
        params = [own[0].clone().requires_grad_(True)]
    elif mode == "grid":
        params = [start.clone().requires_grad_(True), start.clone().requires_grad_(True)]
    else:
        params = [start.clone().requires_grad_(True)]

    def build(ps: Sequence[torch.Tensor]) -> torch.Tensor:
        if mode == "full":
            a = ps[0]
        elif mode == "grid":
            a = torch.where(inside, ps[0][:, None, None], ps[1][:, None, None])  # type: ignore[arg-type]
        else:
            a = ps[0][:, None, None].expand(c, h, w)
        return a[None].expand(n, c, h, w)

    def evaluate(ps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        painted = build(ps)
        with LayerHook(gen.module, layer, edit=lambda act: painted.to(act.dtype), record=False):
            images = gen.forward(inputs)
        feats = extractor(images)[feat_layer].float().mean(dim=(2, 3))  # (n, D)
        if feats.shape[1] != y.shape[0]:
            raise UsageError(f"the target has {y.shape[0]} features but {feat_layer} has {feats.shape[1]}",
                             param="target")
        loss = (feats - y).abs().mean()
        cos = F.cosine_similarity(feats, y[None], dim=1, eps=1e-8).mean()
        return loss, cos

    opt = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    best = (float("inf"), [p.detach().clone() for p in params], 0.0)
    start_cos = 0.0
    bar = tqdm(total=steps, desc=f"invert {layer} ({mode}{'-' + str(grid) if mode == 'grid' else ''})",
               unit="step", disable=not progress)
    with frozen(gen.module), frozen(extractor):
        for step in range(steps + 1):  # the last pass only evaluates the final update
            opt.zero_grad(set_to_none=True)
            with torch.set_grad_enabled(step < steps):
                loss, cos = evaluate(params)
            value, cos_value = float(loss.detach()), float(cos.detach())
            if step == 0:
                start_cos = cos_value
            if value < best[0]:
                best = (value, [p.detach().clone() for p in params], cos_value)
            if step == steps:
                break
            losses.append(value)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{value:.4f}", cos=f"{cos_value:.3f}")
            bar.update(1)
    bar.close()
    final_loss, ps, final_cos = best
    return InversionResult(
        mode=mode, grid=grid if mode == "grid" else 0, layer=layer,
        vector=ps[0].cpu() if mode != "full" else None,
        background=ps[1].cpu() if mode == "grid" else None,
        activations=ps[0].cpu() if mode == "full" else None,
        losses=losses, final_loss=final_loss, start_cosine=start_cos, final_cosine=final_cos,
        settings={"steps": steps, "lr": lr, "seeds": seed_list, "size": list(hw), "extractor_layer": feat_layer,
                  "init": "given" if init is not None else "centre pixel of the layer (first seed)"},
    )


def render_result(gen: Generator, result: InversionResult, *, seeds: int | Sequence[int] = 1,
                  size: int | Sequence[int] | None = None) -> torch.Tensor:
    """Images (S, 3, H, W) in [-1, 1] of ``result`` painted into its layer, one per seed."""
    hw = resolve_size(gen, size)
    inputs = cat_inputs(seed_inputs(gen, resolve_seeds(seeds), hw))
    with torch.no_grad(), LayerHook(gen.module, result.layer, edit=result.edit, record=False):
        return gen.forward(inputs).float().cpu()


# -- the library -----------------------------------------------------------------------
def add_to_library(
    library: VectorLibrary | None,
    result: InversionResult,
    *,
    model_spec: str,
    sources: Sequence[str],
    extractor_spec: str = "efficientnet-lite0",
    label: str | None = None,
) -> tuple[VectorLibrary, int]:
    """A library holding ``result.vector`` as a new record (a new library when ``library`` is None).

    The record has no origin image (``image``/``y``/``x`` are null); its provenance (source
    images, mode, grid, steps, lr, seeds, size, extractor, losses, cosines) is appended to
    ``extraction.inversions`` with the record's id. Returns (library, new id).
    """
    if result.vector is None:
        raise UsageError("mode full optimises a whole activation map, not a vector: nothing to add to a library; "
                         "use mode vector or grid", param="mode")
    vec = result.vector.detach().float().cpu()[None]
    entry = {
        "sources": [str(s) for s in sources],
        "mode": result.mode,
        "grid": result.grid,
        **{k: v for k, v in result.settings.items()},
        "extractor": extractor_spec,
        "start_loss": round(result.start_loss, 6),
        "final_loss": round(result.final_loss, 6),
        "start_cosine": round(result.start_cosine, 6),
        "final_cosine": round(result.final_cosine, 6),
        "model": model_spec,
        "layer": result.layer,
    }
    if library is None:
        new_id = 0
        extraction: dict[str, Any] = {"purpose": "invert", "inversions": [{"id": new_id, **entry}]}
        lib = VectorLibrary(vectors=vec, records=[VectorRecord(id=new_id)], model=model_spec, layer=result.layer,
                            image_size=tuple(result.settings.get("size", ())) or None, extraction=extraction)
    else:
        if library.layer != result.layer:
            raise DatagenError(f"the library holds vectors of layer {library.layer!r}, the inversion painted "
                               f"{result.layer!r}")
        if library.channels != vec.shape[1]:
            raise DatagenError(f"the library's vectors have {library.channels} channels, the inverted one {vec.shape[1]}")
        new_id = max(library.ids, default=-1) + 1
        extraction = dict(library.extraction)
        extraction["inversions"] = list(extraction.get("inversions") or []) + [{"id": new_id, **entry}]
        lib = VectorLibrary(
            vectors=torch.cat([library.vectors, vec]), records=list(library.records) + [VectorRecord(id=new_id)],
            model=library.model, layer=library.layer, image_size=library.image_size, extraction=extraction,
            tileability=library.tileability, clustering=library.clustering, tool_version=library.tool_version,
            created=library.created, notes=library.notes,
        )
    if label is not None:
        lib.set_label([new_id], label)
    return lib, new_id


def score_like_library(library: VectorLibrary, gen: Generator, ids: Sequence[int], *, progress: bool = False) -> None:
    """Tileability scores of ``ids``, computed the way the library's other scores were (its recorded
    extractor, layer, grid, seeds and size), stored in their records. Nothing when the library is unscored."""
    info = library.tileability
    if not info:
        return
    from ..features import load_feature_extractor
    from .tileability import tileability_scores

    spec, layer = str(info.get("extractor", "efficientnet-lite0")), info.get("layer") or TILEABILITY_LAYER
    extractor = EfficientNetLite0([layer]) if spec == "efficientnet-lite0" else load_feature_extractor(spec, [layer])
    scores = tileability_scores(gen, library.get(ids), library.layer, extractor=extractor, extractor_layer=layer,
                                grid=int(info.get("grid", 2)), seeds=info.get("seeds", 4),
                                size=info.get("size") or library.image_size, progress=progress)
    for i, sc in zip(ids, scores.tolist()):
        library.record(i).tileability = round(float(sc), 6)


__all__ = [
    "InversionResult", "MODES", "add_to_library", "default_extractor", "find_target_images", "image_target",
    "invert", "read_image", "render_result", "score_like_library",
]
