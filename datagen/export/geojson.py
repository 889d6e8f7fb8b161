"""Label masks as QuPath GeoJSON: one polygon annotation per connected region of a class.

What is written is what QuPath's own GeoJSON export writes and its import reads
(QuPath >= 0.4: ``qupath-core`` ``PathObjectTypeAdapters`` and ``GsonTools.PathClassTypeAdapter``;
docs: "Exporting annotations")::

    {"type": "FeatureCollection", "features": [
      {"type": "Feature", "id": "<uuid>",
       "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...], [[x, y], ...]]},
       "properties": {"objectType": "annotation",
                      "classification": {"name": "tumor", "color": [214, 39, 40]}}},
      ...]}

Coordinates are pixels of the full-resolution image with the origin at the top-left corner
of the top-left pixel, x to the right and y down (QuPath's convention), so pixel (row r,
column c) is the square ``[c, c+1] x [r, r+1]``. Without simplification every edge runs
along pixel edges: a class's polygons cover exactly its pixels (area = pixel count). Holes
are interior rings; with ``per_class`` a class is one (Multi)Polygon feature instead of
one Polygon per region. Rings follow the GeoJSON right-hand rule (RFC 7946). Feature ids
are UUIDs derived from the source and the region, so exporting again gives the same file.

Regions are 4-connected: pixels of a class that touch only at a corner are two regions
(two polygons sharing a vertex). This keeps every polygon valid in the OGC sense, which
8-connected tracing does not (a ring would touch itself).

Polygonisation is ``rasterio.features.shapes`` (GDAL's polygonizer); simplification is
``shapely.coverage_simplify`` (GEOS): the regions of all classes are simplified together
as one coverage, so neighbouring regions keep sharing their boundary (no gaps, no overlaps)
and no polygon becomes invalid. Both are optional dependencies: ``pip install 'datagen[export]'``.

Pixels with the ignore value, and pixels of ``keep`` classes (the generator's own tissue,
which no class claims), produce no features.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..canvas_files import CanvasClasses, CanvasFileError, CanvasReader, canvas_files
from ..errors import DatagenError, UsageError
from ..fsutil import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from shapely import Geometry

INSTALL_HINT = "pip install 'datagen[export]'"
#: Pixels per strip when a canvas mask is read strip by strip (uint8: 64 MiB).
STRIP_PIXELS = 1 << 26
#: Namespace of the feature UUIDs (uuid5 of source, class and region number).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "datagen/export/geojson")


class ExportError(DatagenError):
    """An input that cannot be exported: says which file (or sample) and what was expected."""


@dataclass(frozen=True)
class ExportClass:
    """A class that becomes features: its mask value, QuPath name and RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]


def _deps() -> tuple[Any, Any]:
    """(shapely, rasterio.features), or a one-line error saying how to install them."""
    try:
        import shapely
        from rasterio import features
    except ImportError as exc:
        raise ExportError(f"GeoJSON export needs rasterio and shapely (missing: {exc.name}); "
                          f"install them with: {INSTALL_HINT}") from None
    if not hasattr(shapely, "coverage_simplify"):
        raise ExportError(f"GeoJSON export needs shapely >= 2.1 (found {shapely.__version__}); {INSTALL_HINT}")
    return shapely, features


def rgb(color: Any) -> tuple[int, int, int]:
    """``"#rrggbb"``, ``"#rgb"`` or an [r, g, b(, a)] list -> (r, g, b) ints; grey when unreadable."""
    if isinstance(color, (list, tuple)) and len(color) >= 3:
        return tuple(max(0, min(255, int(c))) for c in color[:3])  # type: ignore[return-value]
    if isinstance(color, str):
        h = color.strip().lstrip("#")
        if len(h) in (3, 4):
            h = "".join(ch * 2 for ch in h)
        if len(h) in (6, 8):
            try:
                return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
            except ValueError:
                pass
    return (128, 128, 128)


def export_classes(classes: Iterable[Mapping[str, Any]], ignore_index: int | None = None,
                   keep_ids: Iterable[int] = ()) -> dict[int, ExportClass]:
    """The classes that become features, by mask value: every class of the table except
    ``keep`` classes (flagged ``"keep": true`` or listed in ``keep_ids``) and the ignore value."""
    keep = {int(k) for k in keep_ids}
    out: dict[int, ExportClass] = {}
    for c in classes:
        cid = int(c["id"])
        if c.get("keep") or cid in keep or cid == ignore_index:
            continue
        out[cid] = ExportClass(cid, str(c.get("name", f"class {cid}")), rgb(c.get("color")))
    return out


def _table(classes: Iterable[Mapping[str, Any]], ignore_index: int | None = None,
           keep_ids: Iterable[int] = ()) -> tuple[dict[int, ExportClass], set[int]]:
    """(exported classes, mask values that produce nothing: keep classes and the ignore value)."""
    classes = list(classes)
    table = export_classes(classes, ignore_index, keep_ids)
    skip = {int(c["id"]) for c in classes} - set(table)
    if ignore_index is not None:
        skip.add(int(ignore_index))
    return table, skip


def _present_values(mask: np.ndarray) -> np.ndarray:
    if mask.dtype.kind == "u" and mask.dtype.itemsize <= 2:
        return np.flatnonzero(np.bincount(mask.ravel()))
    return np.unique(mask)


def _check_values(mask: np.ndarray, table: Mapping[int, ExportClass], skip: set[int]) -> None:
    unknown = [int(v) for v in _present_values(mask) if int(v) not in table and int(v) not in skip]
    if unknown:
        known = ", ".join(str(k) for k in sorted(set(table) | skip))
        raise ExportError(f"mask holds value(s) {', '.join(map(str, unknown[:8]))} that are neither a class "
                          f"nor the ignore value (expected one of {known})")


def _polygonize(mask: np.ndarray, table: Mapping[int, ExportClass], *, row0: int = 0) -> list[tuple[int, Geometry]]:
    """(class id, Polygon) of every 4-connected region of an exported class; ``row0`` shifts y."""
    _, features = _deps()
    from rasterio.transform import Affine
    from shapely.geometry import shape

    if not table:
        return []
    valid = np.isin(mask, np.fromiter(table, dtype=np.int64))
    if not valid.any():
        return []
    src = mask if mask.dtype in (np.uint8, np.uint16, np.int16, np.int32) else mask.astype(np.int32)
    shapes = features.shapes(src, mask=valid, connectivity=4, transform=Affine.translation(0, row0))
    return [(int(v), shape(g)) for g, v in shapes]


def _simplify(geoms: list[Geometry], tolerance: float) -> list[Geometry]:
    """Coverage simplification of all regions together (shared edges stay shared)."""
    shapely, _ = _deps()
    arr = np.asarray(geoms, dtype=object)
    # GEOS needs an edge-matched coverage (identical vertices along shared edges); the polygonizer
    # only keeps corners, so put a vertex on every pixel corner along every edge first
    seg = shapely.transform(shapely.segmentize(arr, 1.0), np.round)
    out = shapely.coverage_simplify(seg, float(tolerance))
    ok = shapely.is_valid(out) & ~shapely.is_empty(out)
    return list(np.where(ok, out, arr))  # never trade a valid region for an invalid one


def regions_to_features(regions: Sequence[tuple[int, Geometry]], table: Mapping[int, ExportClass], *,
                        simplify: float | None = None, per_class: bool = False, source: str = "") -> list[dict[str, Any]]:
    """GeoJSON features of (class id, Polygon) regions, in class then position order (see module doc)."""
    shapely, _ = _deps()
    if simplify is not None and simplify < 0:
        raise UsageError(f"must be a tolerance >= 0 px, got {simplify}", param="simplify")
    regions = sorted(regions, key=lambda r: (r[0], r[1].bounds[1], r[1].bounds[0], r[1].bounds[3], r[1].bounds[2],
                                             r[1].area))
    geoms = [g for _, g in regions]
    if simplify and geoms:
        geoms = _simplify(geoms, simplify)
    pairs: list[tuple[int, Geometry]] = list(zip((c for c, _ in regions), geoms))
    if per_class:
        by_class: dict[int, list[Geometry]] = defaultdict(list)
        for cid, g in pairs:
            by_class[cid].append(g)
        pairs = [(cid, gs[0] if len(gs) == 1 else shapely.multipolygons(gs)) for cid, gs in sorted(by_class.items())]
    feats = []
    for k, (cid, g) in enumerate(pairs):
        c = table[cid]
        fid = uuid.uuid5(_NAMESPACE, f"{source}|{cid}|{k}|{int(per_class)}")
        feats.append({
            "type": "Feature",
            "id": str(fid),
            "geometry": _geometry_json(shapely.orient_polygons(g)),
            "properties": {"objectType": "annotation", "classification": {"name": c.name, "color": list(c.color)}},
        })
    return feats


def _ring_json(coords: np.ndarray) -> list[list[float]] | list[list[int]]:
    if np.all(coords == np.round(coords)):
        return coords.astype(np.int64).tolist()
    return coords.tolist()


def _geometry_json(g: Geometry) -> dict[str, Any]:
    import shapely

    def polygon(p: Any) -> list[Any]:
        return [_ring_json(shapely.get_coordinates(p.exterior))] + [
            _ring_json(shapely.get_coordinates(r)) for r in p.interiors]

    if g.geom_type == "Polygon":
        return {"type": "Polygon", "coordinates": polygon(g)}
    if g.geom_type == "MultiPolygon":
        return {"type": "MultiPolygon", "coordinates": [polygon(p) for p in g.geoms]}
    raise ExportError(f"internal: cannot write a {g.geom_type} as an annotation")  # pragma: no cover


def mask_to_features(
    mask: np.ndarray,
    classes: Sequence[Mapping[str, Any]] | Mapping[int, ExportClass],
    ignore_index: int | None = None,
    simplify: float | None = None,
    *,
    per_class: bool = False,
    source: str = "",
) -> list[dict[str, Any]]:
    """QuPath GeoJSON features (dicts) of a 2-D label mask.

    ``classes``: the class table (``[{"id", "name", "color", "keep"?}, ...]``, as datasets and
    canvases record it) or the result of :func:`export_classes`. Pixels equal to
    ``ignore_index`` and pixels of keep classes produce nothing; any other value that is not
    a class raises :class:`ExportError`. ``simplify``: coverage simplification tolerance in px
    (roughly the square root of the largest triangle area removed; 1-2 px smooths the pixel
    staircase), None or 0 keeps exact pixel edges. ``per_class``: one feature per class
    instead of one per connected region. ``source`` seeds the feature UUIDs.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ExportError(f"expected a 2-D label mask, got shape {mask.shape}")
    if isinstance(classes, Mapping):
        table, skip = dict(classes), ({int(ignore_index)} if ignore_index is not None else set())
    else:
        table, skip = _table(classes, ignore_index)
    _check_values(mask, table, skip)
    return regions_to_features(_polygonize(mask, table), table, simplify=simplify, per_class=per_class, source=source)


def write_feature_collection(path: str | os.PathLike, features: Iterable[Mapping[str, Any]]) -> Path:
    """Write a GeoJSON FeatureCollection atomically, one feature per line."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"type": "FeatureCollection", "features": [')
        for k, feat in enumerate(features):
            f.write(("\n" if k == 0 else ",\n") + json.dumps(feat, separators=(",", ":")))
        f.write("\n]}\n")
    return p


# ---- datasets ----------------------------------------------------------------------------

def export_dataset_geojson(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    samples: Iterable[int] | None = None,
    simplify: float | None = None,
    per_class: bool = False,
    allow_incomplete: bool = False,
    progress: bool = True,
) -> list[Path]:
    """One GeoJSON per sample of a dataset (zarr or TIFF output folder): ``out/sample-000123.geojson``.

    ``samples``: sample indices (default: every sample the dataset holds). Returns the files written.
    """
    _deps()
    from tqdm.auto import tqdm

    from ..data import SegmentationDataset

    ds = SegmentationDataset(path, return_tensors=False, allow_incomplete=allow_incomplete)
    try:
        position = {int(s): k for k, s in enumerate(ds.sample_indices)}
        chosen = sorted(position) if samples is None else [int(s) for s in samples]
        missing = [s for s in chosen if s not in position]
        if missing:
            held = f"samples 0..{ds.info.num_samples - 1}" if len(position) == ds.info.num_samples else \
                f"{len(position)} completed samples"
            raise ExportError(f"{path}: no sample {', '.join(map(str, missing[:8]))}"
                              f"{' ...' if len(missing) > 8 else ''} (the dataset holds {held})")
        table, skip = _table(ds.classes, ds.ignore_index)
        width = max(6, len(str(max(ds.info.num_samples - 1, 0))))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        name = Path(path).resolve().name
        written = []
        for s in tqdm(chosen, unit="sample", desc="geojson", disable=not progress, dynamic_ncols=True):
            _, mask = ds.read_raw(position[s])
            try:
                _check_values(np.asarray(mask), table, skip)
            except ExportError as exc:
                raise ExportError(f"{path}: sample {s}: {exc}") from None
            feats = regions_to_features(_polygonize(np.asarray(mask), table), table, simplify=simplify,
                                        per_class=per_class, source=f"{name}/{s}")
            written.append(write_feature_collection(out / f"sample-{s:0{width}d}.geojson", feats))
        return written
    finally:
        ds.close()


# ---- canvases ----------------------------------------------------------------------------

def _canvas_table(classes: CanvasClasses) -> tuple[dict[int, ExportClass], set[int]]:
    """(exported classes, mask values that produce nothing) of a canvas: its keep classes (those of
    the table or of the stored recipe) and its ignore value produce nothing."""
    return _table(classes.classes, classes.ignore_index, classes.keep_ids)


def export_canvas_geojson(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    simplify: float | None = None,
    per_class: bool = False,
    strip_rows: int | None = None,
    progress: bool = True,
) -> Path:
    """One GeoJSON for the level-0 mask of a canvas written by ``datagen canvas``.

    ``path``: the canvas image (``slide.ome.tif``), its mask (``slide.mask.ome.tif``), its
    sidecar (``slide.canvas.json``, which holds the class table) or its OME-Zarr folder
    (read by :class:`datagen.canvas_files.CanvasReader`). ``out``: default ``slide.geojson``
    beside the mask (or the OME-Zarr folder). The mask is read in strips of ``strip_rows`` rows (default:
    about 64 Mpx each); regions cut by a strip boundary are joined again, so the result does not
    depend on the strip size.
    """
    shapely, _ = _deps()
    from tqdm.auto import tqdm

    if strip_rows is not None and strip_rows < 1:
        raise UsageError(f"must be at least 1, got {strip_rows}", param="strip_rows")
    try:
        reader = CanvasReader(path)  # the mask, its sidecar and class table (datagen.canvas_files)
    except CanvasFileError as exc:
        raise ExportError(str(exc)) from None
    table, skip = _canvas_table(reader.classes)
    mask_path = reader.mask_path
    try:
        arr = reader.mask
        h, w = arr.shape
        rows = int(strip_rows) if strip_rows else max(1, min(h, STRIP_PIXELS // max(w, 1)))
        chunk = getattr(arr, "chunks", (rows,))[0]
        if not strip_rows and rows > chunk:
            rows -= rows % chunk  # whole TIFF tile rows per strip
        final: list[tuple[int, Any]] = []
        cut: dict[int, list[Any]] = defaultdict(list)
        starts = range(0, h, rows)
        for y0 in tqdm(starts, unit="strip", desc="geojson", disable=not progress, dynamic_ncols=True):
            y1 = min(h, y0 + rows)
            strip = np.asarray(arr[y0:y1])
            try:
                _check_values(strip, table, skip)
            except ExportError as exc:
                raise ExportError(f"{mask_path}: rows {y0}-{y1}: {exc}") from None
            for cid, poly in _polygonize(strip, table, row0=y0):
                _, miny, _, maxy = poly.bounds
                if (y0 > 0 and miny == y0) or (y1 < h and maxy == y1):
                    cut[cid].append(poly)  # may continue in the next or previous strip
                else:
                    final.append((cid, poly))
    finally:
        reader.close()
    for cid, polys in cut.items():  # join regions cut by strip boundaries (exact: integer coordinates)
        parts = shapely.get_parts(shapely.union_all(polys))
        final += [(cid, p) for p in shapely.simplify(parts, 0.0)]  # drop the collinear vertices left on the seams
    stem = reader.stem
    feats = regions_to_features(final, table, simplify=simplify, per_class=per_class, source=stem)
    target = Path(out) if out is not None else mask_path.with_name(f"{stem}.geojson")
    return write_feature_collection(target, feats)


__all__ = ["ExportClass", "ExportError", "canvas_files", "export_canvas_geojson", "export_classes",
           "export_dataset_geojson", "mask_to_features", "regions_to_features", "rgb", "write_feature_collection"]
