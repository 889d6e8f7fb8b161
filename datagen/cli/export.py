"""``datagen export ...``: masks to other tools' formats (the work is in datagen.export).

Nothing heavy is imported here: the parser is built for every ``datagen`` command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import DatagenError
from .app import add_command, add_quiet, positive_int


def parse_samples(text: str) -> list[int]:
    """argparse type of --samples: ``0-9,15,20-22`` (ranges inclusive) -> sorted unique sample indices."""
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected sample indices and inclusive ranges such as 0-9,15,20-22; "
                                             f"got {part!r}") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"expected sample indices >= 0 such as 0-9,15; got {text!r}")
    return sorted(out)


def _tolerance(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a tolerance in px >= 0 (e.g. 1.5), got {text!r}")
    return v


def cmd_export_geojson(a: argparse.Namespace) -> int:
    from ..export.geojson import export_canvas_geojson, export_dataset_geojson

    src = Path(a.path)
    if src.is_dir():
        if a.out is None:
            raise DatagenError(f"{src} is a dataset: give an output folder with --out (one GeoJSON per sample goes there)")
        files = export_dataset_geojson(src, a.out, samples=a.samples, simplify=a.simplify or None,
                                       per_class=a.per_class, allow_incomplete=a.allow_incomplete, progress=not a.quiet)
        if not a.quiet:
            print(f"wrote {len(files)} GeoJSON file(s) to {a.out}")
        return 0
    if a.samples is not None:
        raise DatagenError(f"{src} is not a dataset folder: --samples only selects samples of a dataset")
    if not src.exists():
        raise DatagenError(f"{src} does not exist: give a dataset folder or a canvas (slide.ome.tif, "
                           "slide.mask.ome.tif or slide.canvas.json)")
    out = export_canvas_geojson(src, a.out, simplify=a.simplify or None, per_class=a.per_class,
                                strip_rows=a.strip_rows, progress=not a.quiet)
    if not a.quiet:
        print(f"wrote {out}")
    return 0


def add_export_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``datagen export`` to the CLI's subparsers (called from datagen.cli.app.build_parser)."""
    e = add_command(subparsers, "export", None, "export masks to other tools' formats (GeoJSON annotations for QuPath)")
    es = e.add_subparsers(dest="export_format", required=True, metavar="FORMAT")
    g = add_command(
        es, "geojson", cmd_export_geojson, "masks as QuPath GeoJSON annotations (polygons with holes, in pixels)",
        description="Write label masks as QuPath GeoJSON: one polygon annotation per connected region of a class "
                    "(properties.classification = {name, color}), coordinates in pixels of the full-resolution "
                    "image. Ignore-value pixels and keep classes produce nothing. Needs rasterio and shapely: "
                    "pip install 'datagen[export]'. See docs/export.md.")
    g.add_argument("path", help="a dataset folder (zarr or TIFF output) or a canvas: slide.ome.tif, "
                                "slide.mask.ome.tif or slide.canvas.json")
    g.add_argument("--out", help="dataset: output folder (sample-000123.geojson per sample, required); "
                                 "canvas: the GeoJSON file (default <stem>.geojson beside the mask)")
    g.add_argument("--samples", type=parse_samples, help="dataset only: sample indices, e.g. 0-99,120 (default: all)")
    g.add_argument("--simplify", type=_tolerance, default=None, metavar="TOL",
                   help="simplify outlines by about TOL px, keeping neighbouring regions edge to edge "
                        "(default: exact pixel edges)")
    g.add_argument("--per-class", action="store_true", help="one (Multi)Polygon feature per class instead of one per region")
    g.add_argument("--strip-rows", type=positive_int("a number of rows"), default=None, help="canvas only: rows read at a time (default: about 64 Mpx)")
    g.add_argument("--allow-incomplete", action="store_true", help="dataset only: export the completed part of a partial run")
    add_quiet(g, help="no progress bar and no summary")
    return e
