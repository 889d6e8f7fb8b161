"""Joint image + mask augmentation from a recipe, through albumentations.

A recipe lists transforms one-to-one as albumentations classes:

    augment:
      - {name: HorizontalFlip, p: 0.5}
      - {name: RandomBrightnessContrast, brightness_limit: 0.1, p: 0.5}

Each sample is augmented with its own seed drawn from (seed, index), so the
augmented dataset stays deterministic. Geometric transforms move the mask with
the image; pixel-level transforms leave the mask alone (albumentations' rules).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .config import excerpt
from .errors import ConfigError


def build_augment(spec: list[dict[str, Any]] | None, *, file: str | os.PathLike | None = None, field: str = "augment") -> Any:
    """An ``albumentations.Compose`` for the listed transforms, or None for an empty list."""
    if not spec:
        return None
    try:
        import albumentations as A
    except ImportError:
        raise ConfigError("augmentation needs albumentations: pip install 'datagen[augment]'", file=file, field=field) from None
    if not isinstance(spec, list):
        raise ConfigError(f"expected a list of transforms, got {type(spec).__name__}", file=file, field=field)
    transforms = []
    for i, item in enumerate(spec):
        where = f"{field}[{i}]"
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError("expected a mapping with a 'name' (an albumentations transform) and its parameters", file=file, field=where)
        params = {k: v for k, v in item.items() if k != "name"}
        name = item["name"]
        cls = getattr(A, str(name), None)
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
            raise ConfigError(f"unknown albumentations transform {excerpt(name)}", file=file, field=f"{where}.name")
        try:
            transforms.append(cls(**params))
        except Exception as e:  # albumentations validates parameters with pydantic
            msg = str(e).strip().splitlines()
            raise ConfigError(f"invalid parameters for {name}: {' '.join(msg[:3])}", file=file, field=where) from None
    return A.Compose(transforms)


def apply_augment(compose: Any, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (H, W, 3) uint8 image and its (H, W) mask together, deterministically."""
    if compose is None:
        return image, mask
    compose.set_random_seed(seed)
    out = compose(image=image, mask=mask)
    img, m = out["image"], out["mask"]
    if img.shape != image.shape or m.shape != mask.shape:
        raise ConfigError(
            f"augmentation changed the sample size {image.shape[:2]} -> {img.shape[:2]}; "
            "use size-preserving transforms (crop-and-resize transforms must resize back)", field="augment")
    return np.ascontiguousarray(img, dtype=np.uint8), np.ascontiguousarray(m, dtype=np.uint8)


def check_augment(compose: Any, size: tuple[int, int], class_ids: list[int], ignore_index: int | None, *,
                  file: str | os.PathLike | None = None, field: str = "augment", tries: int = 2) -> None:
    """Dry-run the augmentation on a dummy pair of the output size before anything is written.

    Every transform is forced on (``p = 1``), so one that changes the sample size (RandomCrop,
    Resize, ...) or writes mask values other than the class ids and ``ignore_index`` (a fill
    value, interpolated masks) is refused now, with a :class:`ConfigError`, instead of at the
    first block after the output was created.
    """
    if compose is None:
        return
    import copy

    forced = copy.deepcopy(compose)
    for t in getattr(forced, "transforms", []):
        if hasattr(t, "p"):
            t.p = 1.0
    h, w = int(size[0]), int(size[1])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ids = np.asarray(sorted(set(int(c) for c in class_ids)), dtype=np.uint8)
    yy, xx = np.indices((h, w))
    mask = ids[((yy // 7) + (xx // 5)) % len(ids)]  # every class, with many boundaries
    allowed = set(int(c) for c in ids) | ({int(ignore_index)} if ignore_index is not None else set())
    for seed in range(tries):
        try:
            img, m = apply_augment(forced, image, mask, seed)
        except ConfigError as e:
            raise ConfigError(e.message, file=file, field=e.field or field) from None
        except Exception as e:  # albumentations refusing the input (e.g. a crop larger than the sample)
            from .config import excerpt

            raise ConfigError(f"augmentation fails on a {h}x{w} sample: {type(e).__name__}: {excerpt(str(e), 160)}",
                              file=file, field=field) from None
        bad = sorted(set(np.unique(m).tolist()) - allowed)
        if bad:
            listed = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
            ok = ", ".join(map(str, sorted(allowed)))
            raise ConfigError(
                f"augmentation writes mask values {listed} that are not class ids (expected only {ok}); use "
                "nearest-neighbour mask interpolation and set fill_mask to a class id or the ignore_index",
                file=file, field=field)
