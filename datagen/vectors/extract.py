"""Extract activation vectors: pixels of a hidden layer of generated images (paper sec. 3.1).

A random vector would be out of distribution; a pixel of the layer's own
activations is a valid activation vector by construction. Image ``i`` is drawn
from ``sample_torch_generator(seed, i, "extract")`` and its pixel positions from
``sample_rng(seed, i, "extract-pixels")``, so a library is reproducible and does
not depend on the batch size, and every vector can be traced back to its image.

Near-copies are dropped (``dedupe``): a layer can be (nearly) the same at every pixel
of an image. ``builtin:tissue-small``'s paint layer ``dec.x16`` is: its encoder
averages the input noise away, so each image's ``dec.x16`` is its conditioning
vector repeated (docs/models.md). Taking 6 pixels of 32 images then gave a
"192-vector" library of 28 distinct vectors, whose every labelled class was one or
two vectors: no variety for a segmentation model to learn from, and clusters and
separability counted copies as evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..errors import DatagenError, UsageError, message_of
from ..models.generator import Generator
from ..models.hooks import LayerHook
from ..seeding import sample_rng, sample_torch_generator
from .library import VectorLibrary, VectorRecord

EXTRACT_PURPOSE = "extract"
PIXEL_PURPOSE = "extract-pixels"
DEDUPE_COSINE = 0.999
"""Default ``dedupe``: cosine similarity above which a pixel is a copy of a vector already taken.
Measured on builtin:tissue-small's dec.x16 (64 images at 128 px): pixels of one image are
> 0.999999 alike; an image's nearest other image is a median 0.9995 alike (the model maps many
conditionings to nearly one vector), so this threshold also merges such images."""


def resolve_size(gen: Generator, size: int | Sequence[int] | None) -> tuple[int, int]:
    """``size`` as (H, W): an int means square; None means the generator's native size
    (its fixed size, else its training crop: :attr:`Generator.native_size`)."""
    if size is None:
        return gen.native_size
    if isinstance(size, int):
        out = (size, size)
    else:
        out = tuple(int(s) for s in size)
        if len(out) != 2:
            raise UsageError(f"must be one int or (height, width), got {size!r}", param="size")
    try:
        gen.check_size(out)  # type: ignore[arg-type]
    except ValueError as e:
        raise UsageError(message_of(e), param="size") from None
    return out  # type: ignore[return-value]


def resolve_layer_name(gen: Generator, layer: str | None) -> str:
    """``layer`` or the generator's default; unknown names raise DatagenError listing the layers."""
    name = layer or gen.default_layer
    try:
        gen.layer(name)
    except KeyError as e:
        raise UsageError(message_of(e), param="layer") from None
    return name


def extract_vectors(
    gen: Generator,
    layer: str | None,
    num_images: int,
    *,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    per_image: int | Literal["all"] = 8,
    batch_size: int = 8,
    progress: bool = True,
    model_spec: str | None = None,
    dedupe: float | None = DEDUPE_COSINE,
) -> VectorLibrary:
    """Generate ``num_images`` images and take ``per_image`` random pixels (or ``"all"``) of ``layer``.

    Returns a :class:`VectorLibrary` whose ids run 0..N-1 in (image, position) order and whose
    records say where each vector came from. ``model_spec`` is the spec string recorded as
    the library's model (recipes are checked against it); default: ``gen.name``.
    A pixel whose cosine similarity to a vector already taken exceeds ``dedupe`` is skipped
    (None keeps every pixel); ``extraction["dropped"]`` counts them.
    """
    layer = resolve_layer_name(gen, layer)
    hw = resolve_size(gen, size)
    if num_images < 1:
        raise UsageError(f"must be >= 1, got {num_images}", param="num_images")
    if batch_size < 1:
        raise UsageError(f"must be >= 1, got {batch_size}", param="batch_size")
    if dedupe is not None and not 0.0 < dedupe <= 1.0:
        raise UsageError(f"must be a cosine similarity in (0, 1], got {dedupe!r}", param="dedupe")
    h, w = gen.layer_size(layer, hw)
    if per_image != "all":
        if not isinstance(per_image, int) or isinstance(per_image, bool) or per_image < 1:
            raise UsageError(f"must be a positive integer or 'all', got {per_image!r}", param="per_image")
        if per_image > h * w:
            raise UsageError(
                f"layer {layer} is {h}x{w} at {hw[0]}x{hw[1]} px: at most {h * w} distinct pixels per image, "
                f"asked for {per_image} (use 'all')", param="per_image"
            )

    chunks: list[torch.Tensor] = []
    records: list[VectorRecord] = []
    kept = _Distinct(dedupe)
    bar = tqdm(total=num_images, desc=f"extract {layer}", unit="img", disable=not progress)
    with torch.no_grad():
        for start in range(0, num_images, batch_size):
            idx = list(range(start, min(start + batch_size, num_images)))
            inputs = gen.sample_inputs([sample_torch_generator(seed, i, EXTRACT_PURPOSE) for i in idx], hw)
            with LayerHook(gen.module, layer) as hook:
                gen.forward(inputs)
            act = hook.original
            if act is None:
                raise DatagenError(f"layer {layer} did not run during the forward pass")
            act = act.detach().float().cpu()
            ah, aw = act.shape[-2:]
            for row, i in enumerate(idx):
                if per_image == "all":
                    pos = torch.arange(ah * aw)
                else:
                    if per_image > ah * aw:
                        raise DatagenError(f"layer {layer} is only {ah}x{aw}: cannot take {per_image} pixels")
                    rng = sample_rng(seed, i, PIXEL_PURPOSE)
                    pos = torch.from_numpy(rng.choice(ah * aw, size=per_image, replace=False)).long()
                ys, xs = pos // aw, pos % aw
                vecs = act[row, :, ys, xs].T.contiguous()
                keep = kept.admit(vecs)
                ys, xs = ys[keep], xs[keep]
                chunks.append(vecs[keep])
                for y, x in zip(ys.tolist(), xs.tolist()):
                    records.append(VectorRecord(id=len(records), image=i, y=y, x=x, seed=seed))
            bar.update(len(idx))
    bar.close()
    return VectorLibrary(
        vectors=torch.cat(chunks),
        records=records,
        model=model_spec or gen.name,
        layer=layer,
        image_size=hw,
        extraction={"seed": seed, "num_images": num_images, "per_image": per_image, "purpose": EXTRACT_PURPOSE,
                    "dedupe": dedupe, "dropped": kept.dropped},
    )


def count_distinct(vectors: torch.Tensor, threshold: float = DEDUPE_COSINE) -> int:
    """How many of (V, C) ``vectors`` are left once each near-copy (cosine > ``threshold``) of an
    earlier one is dropped, as ``extract_vectors`` drops them."""
    return int(_Distinct(threshold).admit(vectors).sum())


class _Distinct:
    """Greedy near-copy filter over everything admitted so far, in extraction order (deterministic)."""

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.unit: torch.Tensor | None = None  # (K, C) unit vectors kept so far
        self.dropped = 0

    def admit(self, vectors: torch.Tensor) -> torch.Tensor:
        """Boolean mask over the rows of (P, C) ``vectors``: True where a row is no copy of a kept one."""
        if self.threshold is None:
            return torch.ones(len(vectors), dtype=torch.bool)
        unit = torch.nn.functional.normalize(vectors.double(), dim=1)
        fresh = torch.ones(len(unit), dtype=torch.bool)
        if self.unit is not None:
            fresh &= (unit @ self.unit.T).amax(dim=1) <= self.threshold
        within = unit @ unit.T
        for i in range(len(unit)):  # against rows kept earlier in this chunk
            if fresh[i] and i and bool((within[i, :i][fresh[:i]] > self.threshold).any()):
                fresh[i] = False
        self.unit = unit[fresh] if self.unit is None else torch.cat([self.unit, unit[fresh]])
        self.dropped += int((~fresh).sum())
        return fresh


def regenerate_image(gen: Generator, library: VectorLibrary, vector_id: int) -> torch.Tensor:
    """The generated image (3, H, W) in [-1, 1] a vector was extracted from."""
    rec = library.record(vector_id)
    if rec.image is None or rec.seed is None or library.image_size is None:
        raise DatagenError(f"vector {vector_id} has no recorded origin")
    inputs = gen.sample_inputs([sample_torch_generator(rec.seed, rec.image, EXTRACT_PURPOSE)], library.image_size)
    with torch.no_grad():
        return gen.forward(inputs)[0].cpu()


__all__ = ["extract_vectors", "regenerate_image", "resolve_layer_name", "resolve_size"]
