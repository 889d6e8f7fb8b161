"""``datagen qc``: mask fidelity of a dataset or a canvas (the work is in datagen.qc).

Nothing heavy is imported here: the parser is built for every ``datagen`` command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import DatagenError, UsageError
from ..options import QC_WINDOW
from .app import add_command, add_device, add_quiet, positive_int

CANVAS_FILES = "a canvas (slide.ome.tif, slide.tif, slide.mask.ome.tif, slide.canvas.json or its OME-Zarr folder)"


def qc_target(path: str) -> str:
    """``"canvas"`` or ``"dataset"``: what ``datagen qc PATH`` measures, or an error naming the path."""
    from ..canvas_files import is_canvas_path

    p = Path(path)
    if not p.exists():
        raise DatagenError(f"{p} does not exist: give a dataset folder (zarr or TIFF output) or {CANVAS_FILES}")
    if is_canvas_path(p):
        return "canvas"
    if p.is_dir():
        return "dataset"
    raise DatagenError(f"{p} is neither a dataset folder nor a canvas: expected a dataset folder (zarr or TIFF "
                       f"output) or {CANVAS_FILES}")


def cmd_qc(a: argparse.Namespace) -> int:
    from ..qc import qc_canvas, qc_dataset, write_html

    if a.threads is not None:
        import torch

        torch.set_num_threads(max(1, a.threads))
    options: dict[str, Any] = {}  # ignore_index only when given: each reader defaults to its own store's value
    if a.ignore_index is not None:
        if a.ignore_index.lower() == "none":
            options["ignore_index"] = None
        elif a.ignore_index.isdigit() and 0 <= int(a.ignore_index) <= 255:
            options["ignore_index"] = int(a.ignore_index)
        else:
            raise UsageError(f"must be 0..255 or none, got {a.ignore_index!r}", param="ignore_index")
    target = qc_target(a.path)
    if target == "dataset" and a.tile is not None:
        raise UsageError(f"{a.path} is a dataset: --tile cuts a canvas into windows, a dataset's pairs are used whole",
                         param="tile")
    options.update(max_samples=a.max_samples, train_fraction=a.train_fraction, seed=a.seed, steps=a.steps, crop=a.crop,
                   batch_size=a.batch_size, band=a.band, worst=a.worst, device=a.device, progress=not a.quiet)
    if target == "canvas":
        report = qc_canvas(a.path, tile=a.tile or QC_WINDOW, **options)
    else:
        report = qc_dataset(a.path, allow_incomplete=a.allow_incomplete, **options)
    report_path = None if a.no_report else Path(a.report or f"qc-{Path(a.path).resolve().name}.html")
    if report_path is not None:
        write_html(report, report_path, title=f"datagen qc: {a.path}")
        report.settings["report"] = str(report_path)
    if a.strip:
        from ..qc import render_strip

        Path(a.strip).parent.mkdir(parents=True, exist_ok=True)
        render_strip(report).save(a.strip)
    print(report.to_json())  # the result itself (also with --quiet)
    if not a.quiet:
        print(report.summary(), file=sys.stderr)
        if report_path is not None:
            print(f"report: {report_path}", file=sys.stderr)
    failures = report.failures(a.min_miou) if a.min_miou is not None else []
    for f in failures:
        print(f"datagen qc: failed --min-miou {a.min_miou:g}: {f}", file=sys.stderr)
    return 1 if failures else 0


def add_qc_command(sub: Any) -> None:
    q = add_command(sub, "qc", cmd_qc,
                    "mask fidelity: train an independent pixel classifier on part of a dataset, score the rest",
                    description="Mask fidelity: train an independent pixel classifier on part of a dataset and "
                                "score the rest. A canvas (datagen canvas) is cut into --tile windows: the top "
                                "windows train, the bottom ones test. Prints the result as JSON on stdout (also "
                                "with --quiet).")
    q.add_argument("path", help="dataset folder (zarr or TIFF output), or a canvas: its image or mask TIFF, its "
                                ".canvas.json or its OME-Zarr folder")
    q.add_argument("--report", help="HTML report to write (default: ./qc-<dataset folder or canvas file name>.html)")
    q.add_argument("--no-report", action="store_true", help="write no HTML report")
    q.add_argument("--strip", help="also write the worst-samples strip as this PNG")
    q.add_argument("--min-miou", type=float, help="exit with status 1 when mIoU is below this (default: no threshold)")
    q.add_argument("--train-fraction", type=float, default=0.5,
                   help="first part (by dataset position; canvas windows in raster order) trains, the rest tests")
    q.add_argument("--max-samples", type=int, default=64,
                   help="use at most N pairs (canvas: windows that are not all ignored), spread evenly (0 = all)")
    q.add_argument("--tile", type=positive_int("a window size in px"),
                   help=f"canvas only: window size in px; level 0 is cut into a grid of these "
                        f"(default: {QC_WINDOW})")
    q.add_argument("--ignore-index", help="mask value left out of training and scores, or 'none' (default: the "
                                          "dataset's or canvas's own)")
    q.add_argument("--band", type=int, default=8, help="boundary band half-width in px")
    q.add_argument("--steps", type=int, default=300, help="training steps")
    q.add_argument("--crop", type=int, default=64, help="training crop size in px")
    q.add_argument("--batch-size", type=int, default=8, help="crops per training step")
    q.add_argument("--worst", type=int, default=6, help="worst test samples shown in the strip")
    q.add_argument("--seed", type=int, default=0, help="seed of the pixel classifier's initialisation and training crops")
    add_device(q)
    q.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; 1 is often fastest on a busy machine)")
    q.add_argument("--allow-incomplete", action="store_true", help="use the completed part of a partial run")
    add_quiet(q, "no progress bars or summary on stderr (the JSON result is still printed)")
