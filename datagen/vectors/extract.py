"""Extract activation vectors: pixels of a hidden layer of generated images (paper sec. 3.1).

A random vector would be out of distribution; a pixel of the layer's own
activations is a valid activation vector by construction. Image ``i`` is drawn
from ``sample_torch_generator(seed, i, "extract")`` and its pixel positions from
``sample_rng(seed, i, "extract-pixels")``, so a library is reproducible and does
not depend on the batch size, and every vector can be traced back to its image.
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
) -> VectorLibrary:
    """Generate ``num_images`` images and take ``per_image`` random pixels (or ``"all"``) of ``layer``.

    Returns a :class:`VectorLibrary` whose ids run 0..N-1 in (image, position) order and whose
    records say where each vector came from. ``model_spec`` is the spec string recorded as
    the library's model (recipes are checked against it); default: ``gen.name``.
    """
    layer = resolve_layer_name(gen, layer)
    hw = resolve_size(gen, size)
    if num_images < 1:
        raise UsageError(f"must be >= 1, got {num_images}", param="num_images")
    if batch_size < 1:
        raise UsageError(f"must be >= 1, got {batch_size}", param="batch_size")
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
                chunks.append(act[row, :, ys, xs].T.contiguous())
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
        extraction={"seed": seed, "num_images": num_images, "per_image": per_image, "purpose": EXTRACT_PURPOSE},
    )


def regenerate_image(gen: Generator, library: VectorLibrary, vector_id: int) -> torch.Tensor:
    """The generated image (3, H, W) in [-1, 1] a vector was extracted from."""
    rec = library.record(vector_id)
    if rec.image is None or rec.seed is None or library.image_size is None:
        raise DatagenError(f"vector {vector_id} has no recorded origin")
    inputs = gen.sample_inputs([sample_torch_generator(rec.seed, rec.image, EXTRACT_PURPOSE)], library.image_size)
    with torch.no_grad():
        return gen.forward(inputs)[0].cpu()


__all__ = ["extract_vectors", "regenerate_image", "resolve_layer_name", "resolve_size"]
