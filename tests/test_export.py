"""`datagen export geojson`: masks as QuPath GeoJSON, checked with shapely (a third-party reader)."""

import json
import sys
import uuid

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")
pytest.importorskip("rasterio")
from shapely.geometry import shape  # noqa: E402

from datagen.cli import main  # noqa: E402
from datagen.export.geojson import ExportError, export_classes, mask_to_features  # noqa: E402

CLASSES = [
    {"id": 0, "name": "background", "color": "#f0f0f0", "keep": True},
    {"id": 1, "name": "tumor", "color": "#d62728"},
    {"id": 2, "name": "stroma", "color": "#1f77b4"},
]


def _check_schema(feat):
    """QuPath's GeoJSON (PathObjectTypeAdapters / GsonTools.PathClassTypeAdapter, QuPath >= 0.4)."""
    assert set(feat) == {"type", "id", "geometry", "properties"} and feat["type"] == "Feature"
    uuid.UUID(feat["id"])  # QuPath reads a feature id as the object's UUID
    assert feat["geometry"]["type"] in ("Polygon", "MultiPolygon")
    props = feat["properties"]
    assert props["objectType"] == "annotation"
    cls = props["classification"]
    assert set(cls) == {"name", "color"} and isinstance(cls["name"], str)
    assert len(cls["color"]) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in cls["color"])


def _areas(features):
    out = {}
    for f in features:
        name = f["properties"]["classification"]["name"]
        out[name] = out.get(name, 0) + shape(f["geometry"]).area
    return out


def _check(features, mask, classes=CLASSES, ignore=255):
    """Every feature valid and in QuPath's schema; each class's area is exactly its pixel count."""
    for f in features:
        _check_schema(f)
        g = shape(f["geometry"])
        assert g.is_valid, shapely.validation.explain_validity(g)
        minx, miny, maxx, maxy = g.bounds
        assert 0 <= minx and 0 <= miny and maxx <= mask.shape[1] and maxy <= mask.shape[0]
    table = export_classes(classes, ignore)
    want = {c.name: int((mask == cid).sum()) for cid, c in table.items() if (mask == cid).any()}
    assert _areas(features) == want


def test_square_with_hole_and_two_classes():
    m = np.zeros((16, 16), np.uint8)  # class 0 is keep: no features
    m[2:12, 3:13] = 1
    m[5:8, 6:9] = 2  # stroma inside tumor: a hole in the tumor polygon
    feats = mask_to_features(m, CLASSES, 255)
    _check(feats, m)
    assert [f["properties"]["classification"] for f in feats] == [
        {"name": "tumor", "color": [214, 39, 40]}, {"name": "stroma", "color": [31, 119, 180]}]
    tumor = shape(feats[0]["geometry"])
    assert tumor.geom_type == "Polygon" and len(tumor.interiors) == 1
    assert shape({"type": "Polygon", "coordinates": [feats[0]["geometry"]["coordinates"][1]]}).area == 9
    # pixel (row r, column c) is the square [c, c+1] x [r, r+1]: x first, y down
    assert sorted(map(tuple, feats[1]["geometry"]["coordinates"][0]))[0] == (6, 5)
    assert feats[0]["geometry"]["coordinates"][0][0] == feats[0]["geometry"]["coordinates"][0][-1]  # closed rings
    # GeoJSON right-hand rule (RFC 7946): exterior counter-clockwise, holes clockwise (in x/y axes)
    assert shapely.LinearRing(feats[0]["geometry"]["coordinates"][0]).is_ccw
    assert not shapely.LinearRing(feats[0]["geometry"]["coordinates"][1]).is_ccw
    assert mask_to_features(m, CLASSES, 255) == feats  # deterministic, ids included


def test_ignore_value_and_keep_classes_produce_nothing():
    m = np.full((12, 12), 1, np.uint8)
    m[4:7, 4:7] = 255  # ignored pixels inside tumor: a hole, no feature
    m[0:2, 0:12] = 0  # keep class: no feature
    m[10, 10] = 255
    feats = mask_to_features(m, CLASSES, 255)
    _check(feats, m)
    assert len(feats) == 1 and len(shape(feats[0]["geometry"]).interiors) == 2
    assert _areas(feats) == {"tumor": 144 - 9 - 24 - 1}
    assert mask_to_features(np.full((4, 4), 255, np.uint8), CLASSES, 255) == []


def test_diagonal_touching_regions_are_separate_valid_polygons():
    classes = [{"id": 1, "name": "a", "color": "#ff0000"}, {"id": 2, "name": "b", "color": "#00ff00"}]
    m = np.array([[1, 2, 2], [2, 1, 2], [2, 2, 1]], np.uint8)  # 1s touch only at corners
    feats = mask_to_features(m, classes)
    _check(feats, m, classes, None)
    a = [shape(f["geometry"]) for f in feats if f["properties"]["classification"]["name"] == "a"]
    assert len(a) == 3 and all(g.area == 1 for g in a)  # 4-connected regions
    merged = mask_to_features(m, classes, per_class=True)
    _check(merged, m, classes, None)
    # the diagonal of a's also cuts b into two 4-connected regions, which touch a's at their corners
    assert [f["geometry"]["type"] for f in merged] == ["MultiPolygon", "MultiPolygon"]
    assert [len(shape(f["geometry"]).geoms) for f in merged] == [3, 2]


def test_random_masks_valid_exact_and_simplified_as_one_coverage():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    for trial in range(6):
        h, w = rng.integers(20, 60, size=2)
        m = rng.integers(0, 3, size=(h, w)).astype(np.uint8)
        if trial % 2:  # blobby regions, as painted masks look
            m = ndimage.median_filter(ndimage.zoom(rng.integers(0, 3, (8, 8)), 8, order=0), 5)[:h, :w].astype(np.uint8)
        m[rng.random(m.shape) < 0.05] = 255
        classes = [{"id": i, "name": f"c{i}", "color": "#808080"} for i in range(3)]
        feats = mask_to_features(m, classes, 255)
        _check(feats, m, classes)
        simple = mask_to_features(m, classes, 255, simplify=1.5)
        geoms = [shape(f["geometry"]) for f in simple]
        assert len(simple) == len(feats) and all(g.is_valid and not g.is_empty for g in geoms)
        assert shapely.coverage_is_valid(geoms)  # neighbours still meet edge to edge, nothing overlaps
        for f in simple:
            _check_schema(f)
        total = sum(g.area for g in geoms)
        assert abs(total - (m != 255).sum()) < 0.1 * (m != 255).sum()


def test_simplify_smooths_staircases():
    yy, xx = np.mgrid[:64, :64]
    m = np.where((yy - 32) ** 2 + (xx - 30) ** 2 < 20**2, 1, 2).astype(np.uint8)
    exact = mask_to_features(m, CLASSES)
    smooth = mask_to_features(m, CLASSES, simplify=1.0)
    n = lambda fs: sum(len(r) for f in fs for r in f["geometry"]["coordinates"])  # noqa: E731
    assert n(smooth) < n(exact) / 2
    disc = shape(smooth[0]["geometry"])
    assert disc.is_valid and abs(disc.area - (m == 1).sum()) < 0.03 * (m == 1).sum()
    inner = [tuple(c) for c in smooth[1]["geometry"]["coordinates"][1]]  # stroma's hole is the disc's outline
    assert sorted(inner) == sorted(tuple(c) for c in smooth[0]["geometry"]["coordinates"][0])


def test_errors():
    with pytest.raises(ExportError, match=r"value\(s\) 7 .*expected one of 0, 1, 2, 255"):
        mask_to_features(np.array([[1, 7]], np.uint8), CLASSES, 255)
    with pytest.raises(ExportError, match="2-D"):
        mask_to_features(np.zeros((2, 2, 3), np.uint8), CLASSES, 255)


def test_missing_dependency_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)
    with pytest.raises(ExportError, match=r"pip install 'datagen\[export\]'"):
        mask_to_features(np.ones((2, 2), np.uint8), CLASSES, 255)


def test_canvas_strips_join_into_the_same_regions(tmp_path):
    """A hand-made canvas (tiled mask TIFF + sidecar): regions, rings and diagonals that cross strip seams."""
    import tifffile

    from datagen.export.geojson import export_canvas_geojson

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:80, :72]
    m = np.full((80, 72), 2, np.uint8)
    r2 = (yy - 40) ** 2 + (xx - 36) ** 2
    m[(r2 < 30**2) & (r2 >= 12**2)] = 1  # a ring across many seams: one polygon with a hole
    m[np.abs(yy - xx) == 0] = 1  # a one-pixel diagonal: 4-connected pieces touching at corners
    m[rng.random(m.shape) < 0.03] = 255
    m[70:80, 0:10] = 0  # keep class
    tifffile.imwrite(tmp_path / "c.mask.ome.tif", m, tile=(16, 16), photometric="minisblack")
    (tmp_path / "c.canvas.json").write_text(json.dumps({
        "classes": CLASSES, "ignore_index": 255, "mask": "c.mask.ome.tif",
        "recipe": "classes:\n  - {name: background, id: 0, keep: true}\n"}))
    whole = mask_to_features(m, CLASSES, 255)
    for rows in (None, 1, 5, 16, 33):
        out = export_canvas_geojson(tmp_path / "c.canvas.json", tmp_path / f"{rows}.geojson", strip_rows=rows,
                                    progress=False)
        feats = json.loads(out.read_text())["features"]
        _check(feats, m)
        assert len(feats) == len(whole)
        for a, b in zip(whole, feats):
            assert a["properties"]["classification"] == b["properties"]["classification"]
            assert shape(a["geometry"]).equals(shape(b["geometry"]))
    ring = max((shape(f["geometry"]) for f in whole if f["properties"]["classification"]["name"] == "tumor"),
               key=lambda g: g.area)
    assert len(ring.interiors) >= 1
    # a sidecar without ignore_index and keep flags: keep classes come from the stored recipe, the
    # ignore value is the recipe's default (255)
    plain = [{k: v for k, v in c.items() if k != "keep"} for c in CLASSES]
    (tmp_path / "c.canvas.json").write_text(json.dumps({
        "classes": plain, "mask": "c.mask.ome.tif",
        "recipe": "classes:\n  - {name: background, keep: true}\n  - {name: tumor}\n  - {name: stroma}\n"}))
    out = export_canvas_geojson(tmp_path / "c.mask.ome.tif", tmp_path / "plain.geojson", progress=False)
    strip_ids = lambda fs: [{k: v for k, v in f.items() if k != "id"} for f in fs]  # noqa: E731
    assert strip_ids(json.loads(out.read_text())["features"]) == strip_ids(whole)


# ---- through the CLI: a generated dataset and a canvas ------------------------------------------

@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from conftest import make_tiny_assets

    d = tmp_path_factory.mktemp("export-assets")
    return d, make_tiny_assets(d, size=32, cells="[3, 6]")


def test_dataset_to_geojson_via_cli(assets, tmp_path, capsys):
    import torch

    from datagen.data import SegmentationDataset
    from datagen.generate import generate

    torch.set_num_threads(1)
    _, recipe = assets
    data = tmp_path / "data"
    generate(recipe, data, num=8, seed=3, format="tiff", batch_size=4, block_size=4, progress=False)
    out = tmp_path / "geo"
    assert main(["export", "geojson", str(data), "--out", str(out), "--samples", "0-2,4,6", "--quiet"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"sample-00000{s}.geojson" for s in (0, 1, 2, 4, 6)]
    ds = SegmentationDataset(data, return_tensors=False)
    ignored = 0
    for s in (0, 1, 2, 4, 6):
        doc = json.loads((out / f"sample-{s:06d}.geojson").read_text())
        assert doc["type"] == "FeatureCollection"
        _, mask = ds.read_raw(s)
        _check(doc["features"], mask, ds.classes, ds.ignore_index)
        assert "background" not in _areas(doc["features"])  # keep class
        ignored += int((mask == ds.ignore_index).sum())
    ds.close()
    assert ignored > 0  # samples 4 and 6 show the keep background, written as ignore: left out above

    capsys.readouterr()
    assert main(["export", "geojson", str(data), "--out", str(out), "--samples", "7,8", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no sample 8" in err and "samples 0..7" in err and len(err.strip().splitlines()) == 1
    assert main(["export", "geojson", str(data), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err


def test_canvas_to_geojson_read_in_strips(assets, tmp_path, capsys):
    import tifffile
    import torch

    from datagen.canvas import mask_paths, render_canvas

    torch.set_num_threads(1)
    _, recipe = assets
    image = tmp_path / "slide.ome.tif"
    render_canvas(recipe, size=(96, 160), out=image, seed=2, tile=64, tiff_tile=32, device="cpu", progress=False)
    mask_tif, sidecar = mask_paths(image)
    mask = tifffile.imread(mask_tif, series=0, level=0)
    classes = json.loads(sidecar.read_text())["classes"]

    assert main(["export", "geojson", str(image), "--quiet"]) == 0  # default: slide.geojson beside the mask
    whole = json.loads((tmp_path / "slide.geojson").read_text())["features"]
    _check(whole, mask, classes, 255)
    assert len(whole) >= 2
    # strips of 7 rows cut regions at every seam; they are joined again into the same regions
    assert main(["export", "geojson", str(mask_tif), "--out", str(tmp_path / "s.geojson"), "--strip-rows", "7",
                 "--quiet"]) == 0
    strips = json.loads((tmp_path / "s.geojson").read_text())["features"]
    _check(strips, mask, classes, 255)
    assert len(strips) == len(whole)
    for a, b in zip(whole, strips):
        assert a["properties"] == b["properties"] and shape(a["geometry"]).equals(shape(b["geometry"]))
    assert main(["export", "geojson", str(sidecar), "--out", str(tmp_path / "p.geojson"), "--per-class",
                 "--simplify", "1", "--quiet"]) == 0
    per_class = json.loads((tmp_path / "p.geojson").read_text())["features"]
    assert len(per_class) == len({f["properties"]["classification"]["name"] for f in whole})
    assert all(shape(f["geometry"]).is_valid for f in per_class)

    capsys.readouterr()
    assert main(["export", "geojson", str(tmp_path / "nope.ome.tif"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    sidecar.unlink()
    assert main(["export", "geojson", str(image), "--quiet"]) == 2
    assert "canvas sidecar not found" in capsys.readouterr().err
