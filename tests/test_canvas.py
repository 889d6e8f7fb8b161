"""Whole-slide canvases: pyramidal OME-TIFF / OME-Zarr output, seamless tiles, bounded memory."""

import argparse
import json
import tracemalloc

import numpy as np
from conftest import make_tiny_assets
import pytest
import tifffile
import tiffslide
import torch
import zarr

from datagen.canvas import canvas_from_recipe, mask_paths, pyramid_shapes, render_canvas
from datagen.cli.canvas import add_canvas_command
from datagen.masks import cell_boundary_distance
from datagen.models import DigipathUNet, UNetConfig, load_checkpoint, save_generator
from datagen.vectors import extract_vectors


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random generator checkpoint, a vector library extracted from it, and a recipe
    writing mask: cells (exact and cheap; mask: rendered has a test of its own)."""
    d = tmp_path_factory.mktemp("canvas-assets")
    recipe = make_tiny_assets(d, cells="[12, 20]")
    recipe.write_text(recipe.read_text() + "paint: {mask: cells}\n")
    return d, recipe


def test_pyramidal_ome_tiff_and_zarr(assets, tmp_path):
    d, recipe = assets
    out, zpath = tmp_path / "slide.ome.tif", tmp_path / "slide.ome.zarr"
    parser = argparse.ArgumentParser()
    add_canvas_command(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["canvas", str(recipe), "--out", str(out), "--zarr", str(zpath), "--size", "1024",
                           "--tile", "256", "--tiff-tile", "256", "--seed", "5", "--device", "cpu", "--quiet"])
    assert a.func(a) == 0
    mask_out, json_out = mask_paths(out)
    levels = [(1024, 1024), (512, 512), (256, 256)]
    assert pyramid_shapes((1024, 1024), 256) == levels

    with tiffslide.TiffSlide(out) as s:
        assert s.level_count == 3
        assert [tuple(x) for x in s.level_dimensions] == levels
        assert list(s.level_downsamples) == [1.0, 2.0, 4.0]
        region = s.read_region((100, 300), 1, (200, 120), as_array=True)
        assert region.shape == (120, 200, 3) and region.dtype == np.uint8
        image0 = s.read_region((0, 0), 0, (1024, 1024), as_array=True)
    assert image0.std() > 1
    with tiffslide.TiffSlide(mask_out) as m:
        assert [tuple(x) for x in m.level_dimensions] == levels
        mask0 = m.read_region((0, 0), 0, (1024, 1024), as_array=True)[..., 0]
        mask2 = m.read_region((0, 0), 2, (256, 256), as_array=True)[..., 0]
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome and tf.pages[0].is_tiled and tf.pages[0].tilewidth == 256
        assert len(tf.series[0].levels) == 3 and tf.pages[0].compression != 1  # compressed

    # the mask (mask: cells, the painted cells) evaluated for the whole canvas at once
    canvas, _ = canvas_from_recipe(recipe, size=(1024, 1024), seed=5, device="cpu")
    np.testing.assert_array_equal(mask0, canvas.mask_region(0, 1024, 0, 1024))
    np.testing.assert_array_equal(mask2, mask0[::4, ::4])  # nearest-neighbour levels keep ids exact
    assert set(np.unique(mask0)) <= {1, 2, 255} and len(np.unique(mask0)) >= 2  # keep background -> ignore (255)

    # OME-Zarr: same data, NGFF 0.5 multiscales for the image and the label image
    root = zarr.open_group(str(zpath), mode="r")
    ome = root.attrs["ome"]
    assert ome["version"] == "0.5" and [ds["path"] for ds in ome["multiscales"][0]["datasets"]] == ["0", "1", "2"]
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["c", "y", "x"]
    np.testing.assert_array_equal(np.asarray(root["0"][:]).transpose(1, 2, 0), image0)
    np.testing.assert_array_equal(np.asarray(root["labels/mask/0"][:]), mask0)
    assert root["labels"].attrs["ome"]["labels"] == ["mask"]
    props = root["labels/mask"].attrs["ome"]["image-label"]["properties"]
    assert {p["name"] for p in props} == {"background", "tumor", "stroma"}
    meta = json.loads(json_out.read_text())
    assert meta["canvas"]["seed"] == 5 and [c["id"] for c in meta["classes"]] == [0, 1, 2]


def test_generic_tiled_tiff_opens_in_openslide(assets, tmp_path):
    """--tiff-layout generic (the default for a .tif name): every level in the main IFD chain, so
    OpenSlide opens all of them; pixels, label values and the resolution (mpp) read back exactly."""
    import openslide  # the test extra installs openslide-python + openslide-bin

    d, recipe = assets
    out, zpath = tmp_path / "slide.tif", tmp_path / "slide.ome.zarr"
    parser = argparse.ArgumentParser()
    add_canvas_command(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["canvas", str(recipe), "--out", str(out), "--zarr", str(zpath), "--size", "384x512",
                           "--tile", "128", "--tiff-tile", "128", "--seed", "2", "--mpp", "0.25", "--device", "cpu",
                           "--quiet"])
    assert a.tiff_layout is None and a.func(a) == 0  # the .tif name picks generic
    mask_out, json_out = mask_paths(out)
    assert mask_out.name == "slide.mask.tif" and json_out.name == "slide.canvas.json"
    levels = pyramid_shapes((384, 512), 128)
    assert levels == [(384, 512), (192, 256), (96, 128)]
    root = zarr.open_group(str(zpath), mode="r")  # the pixels written, level by level
    images = [np.asarray(root[str(k)][:]).transpose(1, 2, 0) for k in range(3)]
    masks = [np.asarray(root[f"labels/mask/{k}"][:]) for k in range(3)]

    for path, expected in ((out, images), (mask_out, masks)):
        with openslide.OpenSlide(str(path)) as s:
            assert s.properties["openslide.vendor"] == "generic-tiff"
            assert s.level_count == 3
            assert s.level_dimensions == tuple((w, h) for h, w in levels)
            assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
            assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.25)
            for k, (h, w) in enumerate(levels):
                rgba = np.asarray(s.read_region((0, 0), k, (w, h)))
                assert (rgba[..., 3] == 255).all()
                if path == out:
                    np.testing.assert_array_equal(rgba[..., :3], expected[k])
                else:  # grey: the label value in R, G and B
                    for c in range(3):
                        np.testing.assert_array_equal(rgba[..., c], expected[k])
            # a region off the origin at a reduced level (level-0 coordinates)
            region = np.asarray(s.read_region((64, 32), 1, (100, 60)))
            np.testing.assert_array_equal(region[..., :3] if path == out else region[..., 0],
                                          expected[1][16:76, 32:132])
    assert set(np.unique(masks[0])) <= {1, 2, 255} and len(np.unique(masks[0])) >= 2

    with tifffile.TiffFile(out) as tf:
        assert not tf.is_ome and len(tf.pages) == 3 and len(tf.series) == 1
        assert [int(p.subfiletype) for p in tf.pages] == [0, 1, 1] and all(p.is_tiled for p in tf.pages)
        assert [p.shape[:2] for p in tf.series[0].levels] == levels
        assert tf.pages[0].tags["ResolutionUnit"].value == 3  # centimetre
        np.testing.assert_array_equal(tf.series[0].levels[2].asarray(), images[2])
    np.testing.assert_array_equal(tifffile.imread(mask_out), masks[0])
    with tiffslide.TiffSlide(out) as t:
        assert [tuple(x) for x in t.level_dimensions] == [(w, h) for h, w in levels]
        assert t.properties["tiffslide.mpp-x"] == pytest.approx(0.25)
        np.testing.assert_array_equal(t.read_region((0, 0), 1, (256, 192), as_array=True), images[1])
    meta = json.loads(json_out.read_text())
    assert meta["tiff_layout"] == "generic" and meta["mpp"] == 0.25 and meta["mask"] == "slide.mask.tif"


def test_resolution_defaults_to_the_models(assets, tmp_path):
    """Without --mpp the model's training scale (checkpoint meta.mpp) is written; 0 writes none;
    a generic TIFF named .ome.tif is refused; --tiff-layout ome on a .tif name writes OME-TIFF."""
    from datagen.canvas import write_canvas
    from datagen.models import load_checkpoint
    from datagen.models.registry import builtin_models

    d, recipe = assets
    builtin = json.loads((builtin_models()["tissue-small"] / "config.json").read_text())
    assert builtin["meta"]["mpp"] == 0.5  # ~20x, its training magnification
    assert load_checkpoint(d / "model").mpp is None  # the tiny model records none
    canvas, _ = canvas_from_recipe(recipe, size=(128, 128), seed=0, device="cpu")
    canvas.generator.mpp = 0.5
    rep = write_canvas(canvas, out=tmp_path / "a.ome.tif", tile=128, tiff_tile=64, progress=False)
    assert rep.extra == {"tiff_layout": "ome", "mpp": 0.5}
    with tifffile.TiffFile(tmp_path / "a.ome.tif") as tf:
        assert tf.is_ome and 'PhysicalSizeX="0.5"' in tf.ome_metadata and len(tf.pages) == 1
        assert tf.pages[0].get_resolution("CENTIMETER") == pytest.approx((2e4, 2e4))
    with tiffslide.TiffSlide(tmp_path / "a.ome.tif") as t:
        assert t.properties["tiffslide.mpp-x"] == pytest.approx(0.5) and t.level_count == 2
    write_canvas(canvas, out=tmp_path / "b.tif", tile=128, tiff_tile=64, mpp=0, tiff_layout="ome", progress=False)
    with tifffile.TiffFile(tmp_path / "b.tif") as tf:
        assert tf.is_ome and "PhysicalSizeX" not in tf.ome_metadata
        assert tf.pages[0].tags["ResolutionUnit"].value == 1  # none
    assert (tmp_path / "b.mask.tif").is_file()
    with pytest.raises(Exception, match="OME-XML"):
        write_canvas(canvas, out=tmp_path / "c.ome.tif", tiff_layout="generic", progress=False)
    with pytest.raises(Exception, match="tiff_layout|tiff-layout"):
        write_canvas(canvas, out=tmp_path / "d.tif", tiff_layout="svs", progress=False)


def test_tiles_match_one_pass_render(assets):
    """No seams: tile by tile (with the auto margin) equals one forward pass over the whole canvas."""
    d, recipe = assets
    canvas, _ = canvas_from_recipe(recipe, size=(512, 512), seed=3, device="cpu")
    assert canvas.margin >= canvas.receptive_radius
    full = canvas.render_region(0, 512, 0, 512)

    def tiled(c, tile):
        img = np.zeros_like(full)
        for y0, y1, x0, x1 in c.tiles(tile):
            img[y0:y1, x0:x1] = c.render_tile(y0, y1, x0, x1)
        return img.astype(np.int16)

    for tile in (128, 192):  # 192: tiles that do not divide the canvas (short last row/column)
        diff = np.abs(tiled(canvas, tile) - full)
        assert diff.max() <= 2 and (diff > 0).mean() < 1e-3, (tile, diff.max(), (diff > 0).mean())

    # the criterion is sensitive: without context the tile borders show
    no_margin, _ = canvas_from_recipe(recipe, size=(512, 512), seed=3, device="cpu", margin=0)
    seam = np.abs(tiled(no_margin, 128) - full)
    assert seam.max() > 10

    # masks are exact across tiles
    mask = canvas.mask_region(0, 512, 0, 512)
    for y0, y1, x0, x1 in canvas.tiles(192):
        np.testing.assert_array_equal(canvas.mask_region(y0, y1, x0, x1), mask[y0:y1, x0:x1])


def test_tiles_match_one_pass_with_noise_injection(assets, tmp_path):
    """The training default architecture (no shallow skips, injected noise) tiles without seams too."""
    d, recipe = assets
    torch.manual_seed(1)
    unet = DigipathUNet(UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, cond_dim=6, cond_channels=4,
                                   skip_min_stride=4, noise_injection=True, default_layer="dec.x4"))
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim == 2 and p.shape[0] == 2:  # injected-noise strengths start at 0: make them matter
                p.fill_(0.5)
    save_generator(tmp_path / "model", unet, torch.randn(10, 6), {"name": "tiny-noise"})
    gen = load_checkpoint(tmp_path / "model")
    lib = extract_vectors(gen, "dec.x4", 2, size=64, seed=0, per_image=8, progress=False,
                          model_spec=str(tmp_path / "model"))
    lib.save(tmp_path / "library")
    text = recipe.read_text().replace(str(d / "model"), str(tmp_path / "model"))
    (tmp_path / "recipe.yaml").write_text(text)
    canvas, _ = canvas_from_recipe(tmp_path / "recipe.yaml", size=(256, 384), seed=2, device="cpu")
    full = canvas.render_region(0, 256, 0, 384).astype(np.int16)
    img = np.zeros_like(full)
    for y0, y1, x0, x1 in canvas.tiles(128):
        img[y0:y1, x0:x1] = canvas.render_tile(y0, y1, x0, x1)
    diff = np.abs(img - full)
    assert diff.max() <= 2 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_canvas_is_a_function_of_seed_and_position(assets):
    d, recipe = assets
    a, _ = canvas_from_recipe(recipe, size=(256, 512), seed=3, device="cpu")
    b, _ = canvas_from_recipe(recipe, size=(256, 512), seed=3, device="cpu")
    c, _ = canvas_from_recipe(recipe, size=(256, 512), seed=4, device="cpu")
    np.testing.assert_array_equal(a.render_tile(0, 128, 128, 256), b.render_tile(0, 128, 128, 256))
    assert not np.array_equal(a.render_tile(0, 128, 128, 256), c.render_tile(0, 128, 128, 256))
    # noise depends on the global position only
    torch.testing.assert_close(a.noise_region(8, 72, 300, 400), a.noise_region(0, 256, 0, 512)[..., 8:72, 300:400])


def test_memory_does_not_grow_with_canvas_size(assets, tmp_path):
    """Peak numpy/python allocation of a 4x larger canvas grows by far less than the canvas itself."""
    d, recipe = assets
    peaks = {}
    for size in (256, 512, 1024):  # 256: warm-up, so one-time allocations (imports, caches) are not counted
        tracemalloc.start()
        render_canvas(recipe, size=size, out=tmp_path / f"s{size}.ome.tif", seed=1, tile=128, tiff_tile=128,
                      layout_scale=8, device="cpu", progress=False)
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    canvas_bytes = 1024 * 1024 * 4  # the large canvas' image + mask, had it been held whole
    assert peaks[1024] - peaks[512] < canvas_bytes / 4, peaks


def test_layout_override_and_cells_mask(assets, tmp_path):
    """--layout replaces the recipe's layout for the whole canvas; mask: cells repeats the painted cells."""
    d, recipe = assets
    slide_layout = {"kind": "voronoi", "cells": [60, 80], "classes": {"tumor": 1, "stroma": 1}}
    canvas, _ = canvas_from_recipe(recipe, size=(512, 512), seed=1, device="cpu", layout=slide_layout)
    mask = canvas.mask_region(0, 512, 0, 512)
    assert set(np.unique(mask)) == {1, 2}
    assert canvas.describe()["regions"] > 10  # many small cells instead of the recipe's 12-20 over the canvas
    canvas.mask_mode = "cells"
    cells = canvas.mask_region(0, 512, 0, 512)
    s = canvas.stride
    np.testing.assert_array_equal(cells, np.repeat(np.repeat(cells[::s, ::s], s, 0), s, 1))
    np.testing.assert_array_equal(cells[:, :256], canvas.mask_region(0, 512, 0, 256))  # tile-independent too
    assert (cells == mask).mean() > 0.9


def test_bf16_precision_is_close_and_described(assets):
    """canvas --precision bf16: the same canvas within bfloat16 rounding, said in its description
    (the sidecar's canvas settings); float32 stays the default and is not mentioned."""
    d, recipe = assets
    a, _ = canvas_from_recipe(recipe, size=(256, 256), seed=3, device="cpu")
    b, _ = canvas_from_recipe(recipe, size=(256, 256), seed=3, device="cpu", precision="bf16")
    ia, ib = a.render_tile(0, 128, 0, 128).astype(int), b.render_tile(0, 128, 0, 128).astype(int)
    assert 0 < np.abs(ia - ib).max() and np.abs(ia - ib).mean() < 4
    assert b.describe()["precision"] == "bf16" and "precision" not in a.describe()
    with pytest.raises(Exception, match="bf16"):
        canvas_from_recipe(recipe, size=(256, 256), seed=3, device="cpu", precision="half")


def test_errors(assets, tmp_path):
    d, recipe = assets
    with pytest.raises(Exception, match="multiple"):
        canvas_from_recipe(recipe, size=(500, 512), seed=0, device="cpu")
    out = tmp_path / "x.ome.tif"
    out.write_bytes(b"")
    with pytest.raises(Exception, match="exists"):
        render_canvas(recipe, size=256, out=out, device="cpu", progress=False)


def test_rendered_mask_follows_drawn_boundaries_and_tiles_agree(assets, tmp_path):
    """mask: rendered on a canvas: the classifier a dataset fits reads each tile's window; the
    tiles agree with one pass over the canvas, away from boundaries the mask is the painted cell,
    keep regions and boundary strips are the ignore value, and the written TIFF is the tiles."""
    d, recipe = assets
    rendered = d / "rendered.yaml"  # beside the library it names
    rendered.write_text(recipe.read_text().replace("paint: {mask: cells}",
                                                   "paint: {mask: rendered, boundary_ignore: 1}"))
    canvas, _ = canvas_from_recipe(rendered, size=(256, 256), seed=3, device="cpu")
    assert canvas.mask_mode == "rendered" and canvas.describe()["boundary_ignore"] == 1
    _, full = canvas.render_tile_pair(0, 256, 0, 256)  # one pass: the window is the whole canvas
    tiled = np.zeros_like(full)
    for y0, y1, x0, x1 in canvas.tiles(128):
        img, tiled[y0:y1, x0:x1] = canvas.render_tile_pair(y0, y1, x0, x1)
        np.testing.assert_array_equal(img, canvas.render_tile(y0, y1, x0, x1))  # same image as without masks
    assert (tiled != full).mean() < 2e-3

    cells = canvas.cells_region(0, 256, 0, 256)
    far = cell_boundary_distance(cells) > 2 * canvas.stride  # beyond the classifier's band and the strip
    np.testing.assert_array_equal(full[far], np.where(cells[far] == 0, 255, cells[far]))  # keep class 0 -> ignore
    assert 0 not in np.unique(full) and {1, 2} <= set(np.unique(full))
    # a 1-px ignore strip on each side of every boundary between painted classes
    painted = (full == 1) | (full == 2)
    assert not (painted[:, 1:] & painted[:, :-1] & (full[:, 1:] != full[:, :-1])).any()

    out = tmp_path / "rendered.ome.tif"
    render_canvas(rendered, size=256, out=out, seed=3, tile=128, tiff_tile=128, device="cpu", progress=False)
    np.testing.assert_array_equal(tifffile.imread(mask_paths(out)[0]), tiled)


def test_streams_are_keyed_as_before():
    """The general stream (seed, *parts, purpose) is the key per-sample and canvas streams always used:
    SeedSequence([seed, *parts, blake2b-32 of the purpose]), torch generators seeded from two words."""
    import hashlib

    from datagen.seeding import sample_rng, sample_torch_generator, stream_rng, stream_torch_generator

    def key(purpose):
        return int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=4).digest(), "little")

    ss = np.random.SeedSequence([5, 3, 7, key("canvas-noise")])
    assert stream_rng(5, 3, 7, purpose="canvas-noise").integers(2**62) == np.random.default_rng(ss).integers(2**62)
    state = ss.generate_state(2, dtype=np.uint32)
    g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    assert stream_torch_generator(5, 3, 7, purpose="canvas-noise").initial_seed() == g.initial_seed()
    assert sample_rng(2, 9, "layout").integers(2**62) == stream_rng(2, 9, purpose="layout").integers(2**62)
    assert (sample_torch_generator(2, 9, "noise").initial_seed()
            == stream_torch_generator(2, 9, purpose="noise").initial_seed())
    with pytest.raises(ValueError, match="non-negative"):
        stream_rng(1, -1, purpose="x")
