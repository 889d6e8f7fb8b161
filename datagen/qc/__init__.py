"""Mask fidelity: can an independent model read the masks back from the images?

``datagen qc DATASET`` (or ``datagen qc slide.ome.tif``, a canvas cut into windows:
:mod:`datagen.qc.canvas`) trains a small per-pixel CNN (:mod:`datagen.qc.model`, not the
generator) on one part of a dataset's pairs and scores its predictions on the rest
against the masks (:mod:`datagen.qc.metrics`): per-class IoU, confusion matrix, mIoU,
pixel accuracy and IoU near class boundaries against the interior.  See docs/qc.md.

Library use, on a dataset, a canvas or in-memory arrays::

    from datagen.qc import qc_dataset, qc_canvas, qc_arrays, fit_pixel_classifier, evaluate_fidelity

    report = qc_dataset("demo.zarr")                     # FidelityReport
    report = qc_canvas("slide.ome.tif", tile=256)         # a canvas: 256-px windows, top trains, bottom tests
    report = qc_arrays(images, masks, class_names={0: "bg", 1: "tumor"}, ignore_index=255)
    model = fit_pixel_classifier(train_imgs, train_masks, class_ids=[0, 1], ignore_index=255)
    report = evaluate_fidelity(model, test_imgs, test_masks, ignore_index=255, band=8)
    print(report.miou, report.to_json())
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from datagen.errors import DatagenError, UsageError

from .metrics import (
    band_masks,
    boundary_mask,
    confusion_matrix,
    iou_from_confusion,
    mean_iou,
    pixel_accuracy,
    row_normalize,
)
from .model import PixelClassifier, PixelNet, fit_pixel_classifier, resolve_device
from .report import FidelityReport, evaluate_fidelity, render_html, render_strip, write_html

__all__ = [
    "FidelityReport",
    "PixelClassifier",
    "PixelNet",
    "band_masks",
    "boundary_mask",
    "confusion_matrix",
    "evaluate_fidelity",
    "fit_pixel_classifier",
    "iou_from_confusion",
    "mean_iou",
    "pixel_accuracy",
    "qc_arrays",
    "qc_canvas",
    "resolve_device",
    "qc_dataset",
    "render_html",
    "render_strip",
    "row_normalize",
    "split_positions",
    "write_html",
]

#: Defaults shared by the library and the CLI.
DEFAULT_STEPS = 300
DEFAULT_CROP = 64
DEFAULT_BATCH = 8
DEFAULT_MAX_SAMPLES = 64
DEFAULT_BAND = 8


def split_positions(n: int, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` positions: the first ``round(n * train_fraction)`` train, the rest test (each >= 1)."""
    if not 0 < train_fraction < 1:
        raise UsageError(f"must be between 0 and 1 (exclusive), got {train_fraction}", param="train_fraction")
    if n < 2:
        raise DatagenError(f"need at least 2 samples to train on some and test on others, got {n}")
    k = min(max(1, int(round(n * train_fraction))), n - 1)
    return np.arange(k), np.arange(k, n)


def qc_arrays(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    class_names: dict[int, str] | None = None,
    class_colors: dict[int, str] | None = None,
    ignore_index: int | None = None,
    train_fraction: float = 0.5,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    crop: int = DEFAULT_CROP,
    batch_size: int = DEFAULT_BATCH,
    band: int = DEFAULT_BAND,
    worst: int = 6,
    worst_by: str = "miou",
    indices: Sequence[int] | None = None,
    device: str | torch.device | None = "auto",
    progress: bool = False,
) -> FidelityReport:
    """Train on the first ``train_fraction`` of the pairs, test on the rest, return the report.

    ``images``: ``(N,H,W,3) uint8``; ``masks``: ``(N,H,W)`` class ids.  ``class_names``
    maps every class id to a name (default: the ids found in the masks, except
    ``ignore_index``); every mask value must be one of its ids or ``ignore_index``.
    ``indices``: the sample index of each pair, used in the report (default 0..N-1).
    The other options are those of :func:`fit_pixel_classifier` and
    :func:`evaluate_fidelity`.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise DatagenError(f"need images (N,H,W,3) and masks (N,H,W), got {images.shape} and {masks.shape}")
    if class_names is None:
        vals = [int(v) for v in np.unique(masks) if ignore_index is None or v != ignore_index]
        class_names = {v: f"class {v}" for v in vals}
    ids = sorted(int(c) for c in class_names)
    if ignore_index is not None and ignore_index in ids:
        raise DatagenError(f"ignore value {ignore_index} is also a class id ({class_names[ignore_index]!r})")
    idx = list(range(len(images))) if indices is None else [int(i) for i in indices]
    if len(idx) != len(images):
        raise DatagenError(f"{len(idx)} indices for {len(images)} samples")
    if band < 1:
        raise UsageError(f"must be >= 1 px, got {band}", param="band")
    if steps < 1 or crop < 1 or batch_size < 1 or worst < 0:
        raise DatagenError(f"steps, crop and batch size must be >= 1 and worst >= 0, got {steps}, {crop}, {batch_size}, {worst}")
    tr, te = split_positions(len(images), train_fraction)
    t0 = time.perf_counter()
    model = fit_pixel_classifier(images[tr], masks[tr], class_ids=ids, ignore_index=ignore_index, steps=steps,
                                 crop=crop, batch_size=batch_size, seed=seed, device=device, progress=progress)
    t1 = time.perf_counter()
    report = evaluate_fidelity(model, images[te], masks[te], class_ids=ids, class_names=class_names,
                               class_colors=class_colors, ignore_index=ignore_index, band=band, worst=worst,
                               worst_by=worst_by, indices=[idx[i] for i in te], progress=progress)
    report.settings.update({
        "train_fraction": train_fraction, "train_samples": len(tr), "test_samples": len(te),
        "train_indices": [idx[i] for i in tr], "test_indices": [idx[i] for i in te],
        "seed": seed, "steps": steps, "crop": crop, "batch_size": batch_size, "device": str(model.device),
        "model": f"PixelNet: {len(model.net.features) // 3} dilated 3x3 convs, width {model.net.head.in_channels}, "
                 f"receptive field {model.net.receptive_field} px",
        "final_train_loss": round(model.final_loss, 5),
        "height": int(images.shape[1]), "width": int(images.shape[2]),
    })
    report.timings = {"train": t1 - t0, "evaluate": report.timings.get("evaluate", time.perf_counter() - t1)}
    return report


def even_subsample(n: int, max_samples: int | None) -> np.ndarray:
    """``max_samples`` positions spread evenly over ``0..n-1`` (all when ``max_samples`` is None/0 or >= n)."""
    if not max_samples or max_samples >= n:
        return np.arange(n)
    if max_samples < 2:
        raise UsageError(f"must be >= 2 (or 0 for all), got {max_samples}", param="max_samples")
    return np.unique(np.round(np.linspace(0, n - 1, max_samples)).astype(np.int64))


def dataset_ignore_index(ds: Any) -> int | None:
    """The ignore value a ``SegmentationDataset`` declares (``ds.ignore_index``; older
    datasets: ``info.ignore_index`` or ``info.attrs["ignore_index"]``), or None."""
    for value in (getattr(ds, "ignore_index", None), getattr(ds.info, "ignore_index", None),
                  (ds.info.attrs or {}).get("ignore_index") if isinstance(ds.info.attrs, dict) else None):
        if value is not None:
            return int(value)
    return None


def qc_dataset(
    path: str | os.PathLike,
    *,
    ignore_index: int | None | str = "dataset",
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    allow_incomplete: bool = False,
    progress: bool = False,
    **kwargs: Any,
) -> FidelityReport:
    """:func:`qc_arrays` on a datagen output folder (zarr or TIFF), read via ``SegmentationDataset``.

    ``ignore_index``: ``"dataset"`` (default) uses the dataset's own ignore value
    (``info.json`` ``ignore_index``, none if absent); an int or None overrides it.
    ``max_samples``: read at most this many pairs, spread evenly over the dataset
    (None/0: all); the train/test split is then made over those, in dataset order.
    Other keyword arguments go to :func:`qc_arrays`.
    """
    from datagen.data import SegmentationDataset

    t0 = time.perf_counter()
    ds = SegmentationDataset(path, return_tensors=False, allow_incomplete=allow_incomplete)
    try:
        if ignore_index == "dataset":
            ignore_index = dataset_ignore_index(ds)
        if ignore_index is not None and not isinstance(ignore_index, (int, np.integer)):
            raise UsageError(f"must be an integer 0..255 or None, got {ignore_index!r}", param="ignore_index")
        positions = even_subsample(len(ds), max_samples)
        if len(positions) < 2:
            raise DatagenError(f"dataset {path} has {len(ds)} samples; qc needs at least 2")
        it: Any = positions
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(positions, desc="qc read", unit="img", dynamic_ncols=True, leave=False)
        pairs = [ds.read_raw(int(p)) for p in it]
        images = np.stack([p[0] for p in pairs])
        masks = np.stack([p[1] for p in pairs])
        classes = ds.classes
        indices = [int(ds.sample_indices[p]) for p in positions]
        n_total = len(ds)
    finally:
        ds.close()
    t1 = time.perf_counter()
    report = qc_arrays(images, masks, class_names={int(c["id"]): str(c["name"]) for c in classes},
                       class_colors={int(c["id"]): str(c["color"]) for c in classes},
                       ignore_index=None if ignore_index is None else int(ignore_index),
                       indices=indices, progress=progress, **kwargs)
    report.settings.update({"dataset": str(path), "dataset_samples": n_total, "max_samples": max_samples or None,
                            "used_samples": len(positions)})
    report.timings = {"read": t1 - t0, **report.timings}
    return report


from .canvas import qc_canvas  # noqa: E402 - uses the functions above
