"""`datagen qc` on whole-slide canvases: windows of level 0, read through the shared canvas reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from datagen.canvas import mask_paths, render_canvas
from datagen.canvas_files import CanvasFileError, CanvasReader, is_canvas_path
from datagen.cli import main
from datagen.errors import DatagenError, UsageError
from datagen.qc import qc_canvas

FAST = dict(steps=20, crop=16, batch_size=4, band=2, device="cpu")
SIZE, TILE = (128, 192), 32


@pytest.fixture(scope="module")
def canvas(tmp_path_factory):
    """A 128x192 canvas of the tiny test model as TIFFs and OME-Zarr. Its layout is a drawn id mask
    whose top-left quarter is the keep class (written as the ignore value 255), so some 32-px
    windows there hold nothing but ignored pixels."""
    from conftest import make_tiny_assets

    d = tmp_path_factory.mktemp("qc-canvas")
    recipe = make_tiny_assets(d, size=32, cells="[3, 6]")
    ids = np.random.default_rng(0).integers(1, 3, (8, 12)).astype(np.uint8)  # tumor / stroma blocks
    ids[:4, :6] = 0  # background (keep: true)
    Image.fromarray(ids).save(d / "layout.png")
    image, zarr_path = d / "slide.ome.tif", d / "slide.ome.zarr"
    render_canvas(recipe, size=SIZE, out=image, zarr_path=zarr_path, seed=0, tile=64, tiff_tile=32, device="cpu",
                  progress=False, layout={"kind": "mask", "path": str(d / "layout.png")})
    return image, zarr_path


def _figures(report):
    d = json.loads(report.to_json())
    d.pop("timings_s")
    for k in ("canvas", "canvas_files"):
        d["settings"].pop(k)
    return d


def test_qc_canvas_windows_classes_and_every_path_alike(canvas):
    image, zarr_path = canvas
    mask_tif, sidecar = mask_paths(image)
    mask = tifffile.imread(mask_tif, series=0, level=0)
    rows, cols = SIZE[0] // TILE, SIZE[1] // TILE
    windows = mask.reshape(rows, TILE, cols, TILE).transpose(0, 2, 1, 3).reshape(rows * cols, -1)
    pure_ignore = np.flatnonzero((windows == 255).all(1))
    assert len(pure_ignore) >= 1  # the fixture's layout makes some

    report = qc_canvas(image, tile=TILE, **FAST)
    s = report.settings
    assert s["canvas_size"] == list(SIZE) and s["tile"] == TILE and s["window_grid"] == [rows, cols]
    assert s["windows_total"] == rows * cols
    assert s["windows_labelled"] == s["windows_used"] == rows * cols - len(pure_ignore)
    used = s["train_indices"] + s["test_indices"]
    assert used == sorted(used) and not set(used) & set(pure_ignore.tolist())  # raster order; pure ignore skipped
    assert max(s["train_indices"]) < min(s["test_indices"])  # top trains, bottom tests
    # classes: the canvas's table less the keep class (written as ignore); the ignore value resolved from it
    table = json.loads(sidecar.read_text())["classes"]
    assert [(c["id"], c["name"]) for c in report.classes] == [(c["id"], c["name"]) for c in table if c["id"] != 0]
    assert report.ignore_index == 255 and np.isfinite(report.miou)
    assert report.ignored_pixels == sum(int((windows[k] == 255).sum()) for k in used[len(s["train_indices"]):])

    # the same windows from the mask TIFF, the sidecar and the OME-Zarr: the same report
    base = _figures(report)
    for other in (mask_tif, sidecar, zarr_path):
        assert _figures(qc_canvas(other, tile=TILE, **FAST)) == base, other
    assert qc_canvas(zarr_path, tile=TILE, **FAST).settings["canvas_files"]["kind"] == "zarr"

    # max_samples: windows spread evenly over the labelled ones
    few = qc_canvas(sidecar, tile=TILE, max_samples=4, **FAST).settings
    assert few["windows_used"] == 4 and few["windows_labelled"] == s["windows_labelled"]
    assert few["train_indices"][0] == used[0] and few["test_indices"][-1] == used[-1]


def test_qc_canvas_errors(canvas, tmp_path):
    image, zarr_path = canvas
    with pytest.raises(UsageError, match=r"window of 256 px does not fit in the canvas \(128x192 px\).*at most 128"):
        qc_canvas(image, tile=256, **FAST)
    with pytest.raises(UsageError, match="tile"):
        qc_canvas(image, tile=0, **FAST)
    # everything but the labelled windows ignored: too few windows left
    with pytest.raises(DatagenError, match="1 of the 1 windows of 128 px .* qc needs at least 2"):
        qc_canvas(image, tile=128, **FAST)
    lonely = tmp_path / "lonely.ome.tif"
    lonely.write_bytes(image.read_bytes())
    with pytest.raises(CanvasFileError, match=r"lonely\.mask\.ome\.tif: canvas mask not found"):
        qc_canvas(lonely, tile=TILE, **FAST)
    assert is_canvas_path(zarr_path) and is_canvas_path(image) and not is_canvas_path(tmp_path)
    # a mask without its sidecar: the reader names the missing file
    (tmp_path / "m.mask.ome.tif").write_bytes(mask_paths(image)[0].read_bytes())
    with pytest.raises(CanvasFileError, match=r"m\.canvas\.json: canvas sidecar not found"):
        CanvasReader(tmp_path / "m.mask.ome.tif")


def test_qc_cli_on_a_canvas(canvas, tmp_path, capsys):
    image, _ = canvas
    report, strip = tmp_path / "qc.html", tmp_path / "worst.png"
    assert main(["qc", str(image), "--tile", str(TILE), "--max-samples", "6", "--steps", "10", "--crop", "16",
                 "--batch-size", "4", "--band", "2", "--device", "cpu", "--report", str(report), "--strip", str(strip),
                 "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["tile"] == TILE and out["settings"]["windows_used"] == 6
    assert [c["name"] for c in out["classes"]] == ["tumor", "stroma"]
    assert "windows_total" in report.read_text() and strip.stat().st_size > 0

    # bad inputs: one line naming the file and what was expected
    assert main(["qc", str(tmp_path / "nope.ome.tif"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nope.ome.tif does not exist" in err and "canvas" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "notes.txt").write_text("x")
    assert main(["qc", str(tmp_path / "notes.txt"), "--quiet"]) == 2
    assert "neither a dataset folder nor a canvas" in capsys.readouterr().err
    assert main(["qc", str(image), "--tile", "512", "--no-report", "--quiet"]) == 2
    assert "--tile" in capsys.readouterr().err
