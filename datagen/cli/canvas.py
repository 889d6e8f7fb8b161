"""``datagen canvas``: argument parsing for whole-slide canvases (the work is in datagen.canvas).

Nothing heavy is imported here: the parser is built for every ``datagen`` command.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..options import COMPRESSIONS, DEFAULT_TIFF_TILE, DEFAULT_TILE, TIFF_LAYOUTS
from .app import add_command, add_device, add_precision, add_quiet, add_trust_pickles


def _parse_size(text: str) -> tuple[int, int]:
    t = text.lower().replace(" ", "")
    try:
        if "x" in t:
            h, w = t.split("x", 1)
            return int(h), int(w)
        return int(t), int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 16384 or 8192x16384), got {text!r}") from None


def _parse_margin(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"margin must be >= 0, got {v}")
    return v


_LAYOUT_NAMES = {"ome": "OME-TIFF", "generic": "generic tiled TIFF"}


def cmd_canvas(a: argparse.Namespace) -> int:
    from ..canvas import render_canvas

    rep = render_canvas(
        a.recipe, size=a.size, out=a.out, zarr_path=a.zarr_path, seed=a.seed, tile=a.tile, margin=a.margin,
        layout=a.layout, layout_scale=a.layout_scale, device=a.device, tiff_tile=a.tiff_tile,
        compression=a.compression, jpeg_quality=a.jpeg_quality, mpp=a.mpp, tiff_layout=a.tiff_layout,
        overwrite=a.overwrite,
        progress=not a.quiet, trust_pickles=a.trust_pickles, precision=a.precision,
    )
    if a.quiet:
        return 0
    h, w = rep.size
    where = ", ".join(str(p) for p in (rep.image, rep.mask, rep.zarr) if p is not None)
    layout = rep.extra.get("tiff_layout")
    mpp = rep.extra.get("mpp")
    print(f"canvas {h}x{w}: {rep.tiles} tiles (margin {rep.margin} px), {len(rep.levels)} pyramid levels"
          f"{f', {_LAYOUT_NAMES[layout]}' if layout else ''}, {f'{mpp:g} µm/px' if mpp else 'no resolution'} "
          f"-> {where} ({rep.seconds:.1f} s, {h * w / 1e6 / max(rep.render_seconds, 1e-9):.2f} Mpx/s rendering)")
    return 0


def add_canvas_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``datagen canvas`` to the CLI's subparsers (called from datagen.cli.app.build_parser)."""
    c = add_command(
        subparsers, "canvas", cmd_canvas, "render one large seamless image + mask (pyramidal TIFF / OME-Zarr)",
        description="Render a whole-slide canvas tile by tile: a seamless image and its label mask, written as "
                    "pyramidal OME-TIFFs (<stem>.ome.tif + <stem>.mask.ome.tif), generic tiled TIFFs that "
                    "OpenSlide opens (<stem>.tif + <stem>.mask.tif) and/or an OME-Zarr.")
    c.add_argument("recipe", help="recipe YAML (model, layer, classes, vectors, paint; its size only sets the "
                   "calibration renders of mask: rendered)")
    c.add_argument("--out", help="image TIFF: slide.ome.tif (mask: slide.mask.ome.tif) or slide.tif "
                   "(mask: slide.mask.tif); the name picks the default --tiff-layout")
    c.add_argument("--zarr", dest="zarr_path", metavar="ZARR", help="also write an OME-Zarr (zarr v3, NGFF 0.5) of image and mask here")
    c.add_argument("--size", type=_parse_size, required=True, help="canvas size: N or HxW, e.g. 16384")
    c.add_argument("--tile", type=int, default=DEFAULT_TILE, help="render tile size in px (memory grows with it)")
    c.add_argument("--margin", type=_parse_margin, default="auto",
                   help="context px rendered around each tile; auto = the model's receptive field (exact tiles)")
    c.add_argument("--seed", type=int, default=0, help="seed of the layout, noise and vectors")
    c.add_argument("--layout", help="layout for the whole canvas (preset name or YAML); default: the recipe's")
    c.add_argument("--layout-scale", type=int, help="draw the layout at 1/F of the canvas size "
                   "(default: the painted layer's stride)")
    c.add_argument("--tiff-tile", type=int, default=DEFAULT_TIFF_TILE, help="TIFF tile and zarr chunk size (256 or 512)")
    c.add_argument("--compression", choices=COMPRESSIONS, default="zlib",
                   help="image compression (the mask is always lossless: zlib when jpeg is chosen)")
    c.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (with --compression jpeg)")
    c.add_argument("--tiff-layout", choices=TIFF_LAYOUTS, default=None,
                   help="pyramid layout of the TIFFs: ome = OME-TIFF, reduced levels in SubIFDs (QuPath, "
                   "tiffslide, Bio-Formats; OpenSlide sees level 0 only); generic = OpenSlide's generic tiled "
                   "TIFF, every level in the main IFD chain (OpenSlide, QuPath, tiffslide). Default: generic "
                   "for a .tif/.tiff name without .ome, else ome")
    c.add_argument("--mpp", type=float, help="microns per pixel at level 0, written as the TIFF resolution and "
                   "OME/NGFF physical size (default: the model's training scale when its checkpoint records it, "
                   "builtin:tissue-small 0.5 = ~20x; 0: write none)")
    add_device(c)
    add_precision(c)
    c.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_quiet(c)
    add_trust_pickles(c)
    return c
