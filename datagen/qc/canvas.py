"""Mask fidelity of a whole-slide canvas: ``datagen qc slide.ome.tif``.

A canvas is one large image, so qc cuts level 0 into ``tile`` x ``tile`` windows on a regular
grid and treats each window as a pair (see :func:`qc_canvas`). The canvas is read through
:class:`datagen.canvas_files.CanvasReader`, the reader ``datagen export geojson`` uses too.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from datagen.canvas_files import CanvasReader
from datagen.errors import DatagenError, UsageError
from datagen.options import QC_WINDOW

from . import DEFAULT_MAX_SAMPLES, even_subsample, qc_arrays
from .report import FidelityReport

def window_grid(size: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the whole ``tile`` x ``tile`` windows of a canvas of ``size``, in raster
    order; a remainder narrower than ``tile`` at the right and bottom edges is left out."""
    h, w = size
    return [(y, x) for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]


def qc_canvas(
    path: str | os.PathLike,
    *,
    tile: int = QC_WINDOW,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    ignore_index: int | None | str = "canvas",
    progress: bool = False,
    **kwargs: Any,
) -> FidelityReport:
    """:func:`qc_arrays` on a canvas written by ``datagen canvas``, cut into windows.

    ``path``: the canvas image TIFF (``slide.ome.tif`` / ``slide.tif``), its mask TIFF, its
    ``slide.canvas.json`` sidecar or its OME-Zarr folder; all four give the same windows and
    the same report. Level 0 is cut into ``tile`` x ``tile`` windows on a regular grid from the
    top-left corner (a remainder narrower than ``tile`` at the right and bottom is left out);
    windows whose mask is entirely the ignore value are dropped; of the rest at most
    ``max_samples`` (None/0: all), spread evenly in raster order, become the pairs. The slide is
    never read whole: a first pass reads the mask window by window, a second the chosen windows,
    so memory is bounded by the windows used.

    The split is made in raster order (row by row, top to bottom): the first
    ``train_fraction`` of the windows train and the rest test, so the top of the canvas
    trains and the bottom tests (the row where the split falls is shared: its left windows
    train, its right ones test). Windows do not overlap, so no pixel is both trained on and
    scored.

    ``ignore_index``: ``"canvas"`` (default) resolves it as ``datagen export geojson`` does:
    the sidecar's (or zarr attributes') ``ignore_index``, else the stored recipe's (default
    255); an int or None overrides it. Classes and colours come from the canvas's class table;
    ``keep: true`` classes are left out when an ignore value is set (they are written with
    it). The report's sample index of a window is its position in the grid: window ``k`` has
    its top-left corner at ``(k // cols * tile, k % cols * tile)`` with ``cols`` =
    ``settings["window_grid"][1]``. Other keyword arguments go to :func:`qc_arrays`.
    """
    if not isinstance(tile, (int, np.integer)) or tile < 1:
        raise UsageError(f"must be a window size >= 1 px, got {tile!r}", param="tile")
    tile = int(tile)
    t0 = time.perf_counter()
    with CanvasReader(path) as canvas:
        h, w = canvas.size
        if tile > min(h, w):
            raise UsageError(f"{path}: a window of {tile} px does not fit in the canvas ({h}x{w} px); "
                             f"use a tile of at most {min(h, w)} px", param="tile")
        if ignore_index == "canvas":
            ignore_index = canvas.classes.ignore_index
        if ignore_index is not None and not (isinstance(ignore_index, (int, np.integer)) and 0 <= ignore_index <= 255):
            raise UsageError(f"must be an integer 0..255 or None, got {ignore_index!r}", param="ignore_index")
        ignore = None if ignore_index is None else int(ignore_index)
        grid = window_grid((h, w), tile)
        rows, cols = h // tile, w // tile

        def bar(items: Any, desc: str) -> Any:
            if not progress:
                return items
            from tqdm.auto import tqdm

            return tqdm(items, desc=desc, unit="window", dynamic_ncols=True, leave=False)

        labelled = []  # grid positions of the windows with at least one pixel that is not ignored
        for k, (y, x) in enumerate(bar(grid, "qc scan")):
            if ignore is None or (canvas.mask_window(y, y + tile, x, x + tile) != ignore).any():
                labelled.append(k)
        chosen = [labelled[int(p)] for p in even_subsample(len(labelled), max_samples)]
        if len(chosen) < 2:
            raise DatagenError(f"{path}: {len(labelled)} of the {len(grid)} windows of {tile} px hold pixels that are "
                               f"not ignored (value {ignore}); qc needs at least 2 (use a smaller tile)")
        images = np.empty((len(chosen), tile, tile, 3), np.uint8)
        masks = np.empty((len(chosen), tile, tile), np.uint8)
        for i, k in enumerate(bar(chosen, "qc read")):
            y, x = grid[k]
            images[i] = canvas.image_window(y, y + tile, x, x + tile)
            masks[i] = canvas.mask_window(y, y + tile, x, x + tile)
        table = canvas.classes
        source = {"kind": canvas.kind, "image": str(canvas.image_path), "mask": str(canvas.mask_path),
                  **({"sidecar": str(canvas.sidecar)} if canvas.sidecar is not None else {})}
    t1 = time.perf_counter()
    # scored classes: the table less the ignore value, and less keep classes when they are written with it
    classes = [c for c in table.classes
               if int(c["id"]) != ignore and not (ignore is not None and int(c["id"]) in table.keep_ids)]
    report = qc_arrays(images, masks,
                       class_names={int(c["id"]): str(c.get("name", f"class {c['id']}")) for c in classes},
                       class_colors={int(c["id"]): str(c.get("color", "#808080")) for c in classes},
                       ignore_index=ignore, indices=chosen, progress=progress, **kwargs)
    report.settings.update({
        "canvas": str(path), "canvas_files": source, "canvas_size": [h, w], "tile": tile,
        "window_grid": [rows, cols], "windows_total": len(grid), "windows_labelled": len(labelled),
        "windows_used": len(chosen), "max_samples": max_samples or None,
    })
    report.timings = {"read": t1 - t0, **report.timings}
    return report


__all__ = ["qc_canvas", "window_grid"]
