"""Whole-slide output: one large image and its label mask as OME-Zarr and pyramidal TIFFs.

The level-0 tiles go into an OME-Zarr (zarr v3, NGFF 0.5: image ``0..L-1`` as (c, y, x),
label image ``labels/mask/0..L-1``) as they are rendered; the pyramid is built level by
level from it, chunk by chunk (image: mean of 2x2 blocks; mask: nearest neighbour, so class
ids stay exact); the pyramidal OME-TIFFs (image, and the mask in a second file, each with
its reduced levels in SubIFDs, tiled and compressed) are then streamed tile by tile from the
zarr levels with tifffile's tile-iterator interface. Two TIFF layouts (``tiff_layout``):

    ome        OME-TIFF, reduced levels in SubIFDs (tiffslide, QuPath, Bio-Formats, napari, ...)
    generic    OpenSlide's "generic tiled TIFF": every level a tiled page in the main IFD
               chain, reduced levels marked reduced-resolution (NewSubfileType 1), no OME-XML;
               OpenSlide (which reads only level 0 of a SubIFD pyramid) opens all levels,
               and tifffile, tiffslide and QuPath read it too

The default follows the name: ``*.tif``/``*.tiff`` without ``.ome`` is generic, anything else
OME. The resolution (``mpp``, microns per pixel at level 0) goes into XResolution/YResolution
(pixels per centimetre, ResolutionUnit centimetre; OpenSlide reports it as
``openslide.mpp-x``) and, for OME-TIFF, into the OME-XML. Without ``zarr_path`` the OME-Zarr is
a temporary folder beside the TIFF, removed at the end. Memory is bounded by the tile size,
never by the slide size. Every output appears whole or not at all
(:func:`datagen.fsutil.atomic_path`).

    slide.ome.tif          RGB, pyramid in SubIFDs (opens in tiffslide, QuPath, ...)
    slide.mask.ome.tif     class ids (uint8), same pyramid (nearest-neighbour levels)
    slide.canvas.json      class table and the caller's metadata (seed, recipe, canvas parameters)

    slide.tif, slide.mask.tif, slide.canvas.json     the same as generic tiled TIFFs

The writer does not know what it writes: :func:`write_slide` takes tile bounds and a
function that renders one tile (``datagen.canvas`` passes its canvas's).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError, arg
from ..fsutil import atomic_path, atomic_write_text, temp_name
from ..options import COMPRESSIONS, TIFF_LAYOUTS  # tiff layouts: ome (levels in SubIFDs) or generic (OpenSlide: main IFD chain)

TileBounds = tuple[int, int, int, int]
"""(y0, y1, x0, x1) of a tile in level-0 pixels."""
RenderTile = Callable[[TileBounds], tuple[np.ndarray, Callable[[], np.ndarray]]]
"""Renders one tile: its (h, w, 3) uint8 image and a function giving its (h, w) uint8 mask.
The mask function runs on the writer thread, so mask work that needs no render overlaps
the next tile's rendering."""


@dataclass
class SlideReport:
    image: Path | None
    mask: Path | None
    zarr: Path | None
    size: tuple[int, int]
    levels: list[tuple[int, int]]
    tiles: int
    seconds: float
    render_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def pyramid_shapes(size: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """Level sizes: halve (rounding up) until the whole level fits in one tile."""
    shapes = [tuple(size)]
    while max(shapes[-1]) > tile:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes  # type: ignore[return-value]



_OME_SUFFIXES = (".ome.tiff", ".ome.tif")
_PLAIN_SUFFIXES = (".tiff", ".tif")


def _is_plain_tiff_name(out: str | os.PathLike) -> bool:
    name = Path(out).name.lower()
    return name.endswith(_PLAIN_SUFFIXES) and not name.endswith(_OME_SUFFIXES)


def default_tiff_layout(out: str | os.PathLike) -> str:
    """``generic`` for ``*.tif``/``*.tiff`` without ``.ome``, else ``ome``."""
    return "generic" if _is_plain_tiff_name(out) else "ome"


def mask_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """(mask TIFF, sidecar JSON) written beside image TIFF ``out``: ``<stem>.mask.ome.tif`` (``<stem>.mask.tif``
    when ``out`` is a ``.tif``/``.tiff`` without ``.ome``) and ``<stem>.canvas.json``."""
    p = Path(out)
    name = p.name
    for suffix in (*_OME_SUFFIXES, *_PLAIN_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    mask = f"{name}.mask.tif" if _is_plain_tiff_name(p) else f"{name}.mask.ome.tif"
    return p.with_name(mask), p.with_name(f"{name}.canvas.json")


def _downsample_image(x: np.ndarray) -> np.ndarray:
    """(3, h, w) uint8 -> (3, ceil(h/2), ceil(w/2)): mean of 2x2 blocks (edges replicated), rounded."""
    c, h, w = x.shape
    if h % 2 or w % 2:
        x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    s = x.reshape(c, x.shape[1] // 2, 2, x.shape[2] // 2, 2).astype(np.uint16).sum(axis=(2, 4))
    return ((s + 2) // 4).astype(np.uint8)


def _downsample_mask(x: np.ndarray) -> np.ndarray:
    """Nearest neighbour: the top-left pixel of each 2x2 block (keeps class ids exact)."""
    return np.ascontiguousarray(x[::2, ::2])


def _ngff_multiscales(name: str, axes: list[dict[str, Any]], levels: int, mpp: float | None,
                      downsample_type: str) -> dict[str, Any]:
    unit = {"unit": "micrometer"} if mpp else {}
    axes = [dict(a, **unit) if a["type"] == "space" else a for a in axes]
    base = mpp or 1.0
    datasets = []
    for k in range(levels):
        scale = [1.0 if a["type"] != "space" else base * 2**k for a in axes]
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return {"name": name, "axes": axes, "datasets": datasets, "type": downsample_type}


class _ZarrSlide:
    """The OME-Zarr (zarr v3, NGFF 0.5) store of a slide: image levels and the label image."""

    def __init__(self, path: Path, classes: list[dict[str, Any]], chunk: int,
                 levels: list[tuple[int, int]], attrs: dict[str, Any], mpp: float | None) -> None:
        import zarr
        import zarr.storage
        from zarr.codecs import ZstdCodec

        self.path = path
        self.levels = levels
        store = zarr.storage.LocalStore(path)
        comp = [ZstdCodec(level=3)]
        space = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
        colors = [{"label-value": c["id"], "rgba": [*_rgb(c["color"]), 255]} for c in classes]
        props = [{"label-value": c["id"], "name": c["name"]} for c in classes]
        root = zarr.create_group(store, zarr_format=3, attributes={
            "ome": {
                "version": "0.5",
                "multiscales": [_ngff_multiscales("image", [{"name": "c", "type": "channel"}, *space], len(levels),
                                                  mpp, "mean")],
                "omero": {"channels": [{"label": n, "color": col, "active": True,
                                        "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
                                       for n, col in (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"))],
                          "rdefs": {"model": "color"}},
            },
            "datagen": attrs,
        })
        labels = root.create_group("labels", attributes={"ome": {"version": "0.5", "labels": ["mask"]}})
        mask = labels.create_group("mask", attributes={"ome": {
            "version": "0.5",
            "multiscales": [_ngff_multiscales("mask", space, len(levels), mpp, "nearest")],
            "image-label": {"colors": colors, "properties": props, "source": {"image": "../../"}},
        }})
        self.images, self.masks = [], []
        for k, (h, w) in enumerate(levels):
            ch = (min(chunk, h), min(chunk, w))
            self.images.append(root.create_array(str(k), shape=(3, h, w), chunks=(3, *ch), dtype="uint8",
                                                 compressors=comp, fill_value=0, dimension_names=("c", "y", "x")))
            self.masks.append(mask.create_array(str(k), shape=(h, w), chunks=ch, dtype="uint8",
                                                compressors=comp, fill_value=0, dimension_names=("y", "x")))

    def write(self, level: int, y0: int, x0: int, image_chw: np.ndarray, mask: np.ndarray) -> None:
        h, w = mask.shape
        self.images[level][:, y0:y0 + h, x0:x0 + w] = image_chw
        self.masks[level][y0:y0 + h, x0:x0 + w] = mask

    def build_level(self, level: int, chunk: int, bar: Any) -> None:
        """Level ``level`` from ``level - 1``, one output chunk at a time."""
        h, w = self.levels[level]
        ph, pw = self.levels[level - 1]
        for y in range(0, h, chunk):
            for x in range(0, w, chunk):
                y1, x1 = min(y + chunk, h), min(x + chunk, w)
                sy0, sy1, sx0, sx1 = 2 * y, min(2 * y1, ph), 2 * x, min(2 * x1, pw)
                img = np.asarray(self.images[level - 1][:, sy0:sy1, sx0:sx1])
                msk = np.asarray(self.masks[level - 1][sy0:sy1, sx0:sx1])
                self.write(level, y, x, _downsample_image(img)[:, : y1 - y, : x1 - x],
                           _downsample_mask(msk)[: y1 - y, : x1 - x])
                bar.update(1)

    def image_tiles(self, level: int, tile: int, bar: Any) -> Iterator[np.ndarray]:
        h, w = self.levels[level]
        arr = self.images[level]
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                yield np.ascontiguousarray(np.asarray(arr[:, y:y + tile, x:x + tile]).transpose(1, 2, 0))
                bar.update(1)

    def mask_tiles(self, level: int, tile: int, bar: Any) -> Iterator[np.ndarray]:
        h, w = self.levels[level]
        arr = self.masks[level]
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                yield np.ascontiguousarray(np.asarray(arr[y:y + tile, x:x + tile]))
                bar.update(1)


def _rgb(color: str) -> list[int]:
    h = color.lstrip("#")
    return [int(h[i:i + 2], 16) for i in (0, 2, 4)]


def _tiff_compression(name: str, quality: int) -> dict[str, Any]:
    if name == "none":
        return {"compression": None}
    if name == "jpeg":
        return {"compression": "jpeg", "compressionargs": {"level": int(quality)}}
    return {"compression": name}


def _write_tiff(path: Path, store: _ZarrSlide, *, kind: str, tile: int, compression: dict[str, Any],
                mpp: float | None, name: str, bar: Any, layout: str = "ome") -> None:
    import tifffile

    levels = store.levels
    h, w = levels[0]
    raw = h * w * (3 if kind == "image" else 1) * 4 // 3
    workers = min(4, os.cpu_count() or 1)
    # tifffile buffers up to `buffersize` bytes of tiles for its encoder threads (default 256 MiB):
    # a few tiles per worker keep memory bounded by the tile size instead
    opts: dict[str, Any] = {"tile": (tile, tile), "maxworkers": workers, "buffersize": 2 * workers * tile * tile * 3,
                            **compression}
    if kind == "image":
        opts["photometric"] = "rgb"
        shape_of = lambda hw: (*hw, 3)  # noqa: E731
        tiles = store.image_tiles
        axes = "YXS"
    else:
        opts["photometric"] = "minisblack"
        shape_of = lambda hw: tuple(hw)  # noqa: E731
        tiles = store.mask_tiles
        axes = "YX"
    meta: dict[str, Any] = {"axes": axes, "Name": name}
    if mpp:
        meta.update({"PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": mpp, "PhysicalSizeYUnit": "µm"})
    ome = layout == "ome"
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=raw > 2**31, ome=ome) as tif:
        for k, hw in enumerate(levels):
            res = {}
            if mpp:  # level k's own pixel size (levels halve, rounding up: exact to < 1 px over the slide)
                res = {"resolution": (1e4 / (mpp * 2**k), 1e4 / (mpp * 2**k)), "resolutionunit": "CENTIMETER"}
            if ome:  # level 0 in the main chain, reduced levels in its SubIFDs
                extra = {"subifds": len(levels) - 1, "metadata": meta} if k == 0 else {"subfiletype": 1, "metadata": None}
            else:  # OpenSlide generic tiled TIFF: every level in the main chain, reduced ones flagged
                extra = {"metadata": None, **({"description": f"datagen canvas {name}"} if k == 0 else {}),
                         **({"subfiletype": 1} if k else {})}
            tif.write(tiles(k, tile, bar), shape=shape_of(hw), dtype=np.uint8, **opts, **res, **extra)


def _check_outputs(out: str | os.PathLike | None, zarr_path: str | os.PathLike | None, *, compression: str,
                   tiff_tile: int, overwrite: bool, tiff_layout: str = "ome", mpp: float | None = None) -> None:
    """Refuse bad options and existing outputs before anything is rendered."""
    if out is None and zarr_path is None:
        raise UsageError(f"give an output: a TIFF path ({arg('out')}) and/or an OME-Zarr path ({arg('zarr_path')})")
    if tiff_layout not in TIFF_LAYOUTS:
        raise UsageError(f"must be one of {', '.join(TIFF_LAYOUTS)}, got {tiff_layout!r}", param="tiff_layout")
    if out is not None and tiff_layout == "generic" and Path(out).name.lower().endswith(_OME_SUFFIXES):
        raise UsageError(f"{Path(out).name}: a generic tiled TIFF has no OME-XML, so it is not named .ome.tif; "
                         f"name it {mask_paths(out)[1].name.removesuffix('.canvas.json')}.tif", param="out")
    if mpp is not None and not (mpp >= 0 and np.isfinite(mpp)):
        raise UsageError(f"microns per pixel must be a positive number (0: write no resolution), got {mpp}",
                         param="mpp")
    if compression not in COMPRESSIONS:
        raise UsageError(f"must be one of {', '.join(COMPRESSIONS)}, got {compression!r}", param="compression")
    if tiff_tile < 16 or tiff_tile % 16:
        raise UsageError(f"TIFF tile size must be a multiple of 16, got {tiff_tile}", param="tiff_tile")
    outputs = [*((Path(out), *mask_paths(out)) if out is not None else ()),
               *((Path(zarr_path),) if zarr_path is not None else ())]
    for p in outputs:
        if p.exists() and not overwrite:
            raise UsageError(f"{p} exists; choose another output path or pass {arg('overwrite', True)}")
    for p in outputs:
        p.parent.mkdir(parents=True, exist_ok=True)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _write_level0(store: _ZarrSlide, tiles: Sequence[TileBounds], render: RenderTile, bar: Any) -> None:
    """Render every tile on this thread and write it (and its mask) into level 0 on a writer thread."""

    def write(t: TileBounds, img: np.ndarray, mask_of: Callable[[], np.ndarray]) -> None:
        store.write(0, t[0], t[2], img.transpose(2, 0, 1), mask_of())

    with ThreadPoolExecutor(1, thread_name_prefix="slide-writer") as pool:
        pending: deque[Future[None]] = deque()
        try:
            for t in tiles:
                img, mask_of = render(t)
                while len(pending) >= 2:  # bounded memory: at most two tiles wait for the writer
                    pending.popleft().result()
                    bar.update(1)
                pending.append(pool.submit(write, t, img, mask_of))
            while pending:
                pending.popleft().result()
                bar.update(1)
        except BaseException:
            for f in pending:
                f.cancel() or f.exception()
            raise


def write_slide(
    size: tuple[int, int],
    tiles: Sequence[TileBounds],
    render: RenderTile,
    *,
    out: str | os.PathLike | None = None,
    zarr_path: str | os.PathLike | None = None,
    tiff_tile: int,
    compression: str = "zlib",
    jpeg_quality: int = 90,
    mpp: float | None = None,
    tiff_layout: str | None = None,
    classes: list[dict[str, Any]],
    meta: dict[str, Any],
    overwrite: bool = False,
    progress: bool = True,
) -> SlideReport:
    """Render ``tiles`` (covering ``size``) with ``render`` into an OME-Zarr and/or pyramidal TIFFs.

    ``tiff_layout``: ``ome`` or ``generic`` (:data:`TIFF_LAYOUTS`); default from ``out``'s name
    (:func:`default_tiff_layout`). ``mpp``: microns per pixel at level 0; None or 0 writes no resolution.
    ``classes``: ``{id, name, color}`` per class (the label image's colours and names);
    ``meta``: written into the zarr attributes (``datagen``) and the JSON sidecar.
    """
    from tqdm.auto import tqdm

    if tiff_layout is None:
        tiff_layout = default_tiff_layout(out) if out is not None else "ome"
    _check_outputs(out, zarr_path, compression=compression, tiff_tile=tiff_tile, overwrite=overwrite,
                   tiff_layout=tiff_layout, mpp=mpp)
    mpp = mpp or None
    t0 = time.perf_counter()
    levels = pyramid_shapes(size, tiff_tile)
    image_out = mask_out = None
    with ExitStack() as stack:
        if zarr_path is not None:  # kept: written under a temporary name, renamed when everything is done
            zpath = stack.enter_context(atomic_path(zarr_path))
        else:  # scratch: the TIFFs are streamed from it, then it is removed
            zpath = temp_name(Path(out).with_name(Path(out).name + ".zarr"))  # type: ignore[arg-type]
            stack.callback(shutil.rmtree, zpath, ignore_errors=True)
        store = _ZarrSlide(zpath, classes, tiff_tile, levels, meta, mpp)
        with tqdm(total=len(tiles), unit="tile", desc="canvas", disable=not progress, dynamic_ncols=True) as bar:
            _write_level0(store, tiles, render, bar)
        render_s = time.perf_counter() - t0

        chunks = sum(-(-h // tiff_tile) * -(-w // tiff_tile) for h, w in levels[1:])
        tiff_tiles = sum(-(-h // tiff_tile) * -(-w // tiff_tile) for h, w in levels) * 2 if out is not None else 0
        with tqdm(total=chunks + tiff_tiles, unit="tile", desc="pyramid", disable=not progress,
                  dynamic_ncols=True) as bar:
            for k in range(1, len(levels)):
                store.build_level(k, tiff_tile, bar)
            if out is not None:
                image_out = Path(out)
                mask_out, json_out = mask_paths(out)
                comp = _tiff_compression(compression, jpeg_quality)
                lossless = _tiff_compression("zlib" if compression == "jpeg" else compression, jpeg_quality)
                _write_tiff(image_out, store, kind="image", tile=tiff_tile, compression=comp, mpp=mpp,
                            name="image", bar=bar, layout=tiff_layout)
                _write_tiff(mask_out, store, kind="mask", tile=tiff_tile, compression=lossless, mpp=mpp,
                            name="mask", bar=bar, layout=tiff_layout)
                atomic_write_text(json_out, json.dumps({**meta, "image": image_out.name, "mask": mask_out.name,
                                                        "tiff_layout": tiff_layout, "mpp": mpp,
                                                        "levels": [list(s) for s in levels]}, indent=2) + "\n")
        if zarr_path is not None:  # overwrite: nothing can be renamed onto a folder, so the old one goes now
            _remove(Path(zarr_path))
    return SlideReport(image_out, mask_out, Path(zarr_path) if zarr_path is not None else None, tuple(size),
                       levels, len(tiles), time.perf_counter() - t0, render_s,
                       extra={"tiff_layout": tiff_layout if out is not None else None, "mpp": mpp})


__all__ = ["TIFF_LAYOUTS", "RenderTile", "SlideReport", "TileBounds", "default_tiff_layout", "mask_paths",
           "pyramid_shapes", "write_slide"]
