"""Paint operations beyond whole regions: grid painting inside regions (paper sec. 3.1 / 5) and
GAN Dissection unit edits of a class's cells, from a recipe, through datasets and canvases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_assets
from scipy import ndimage

from datagen.assemble import assemble
from datagen.errors import ConfigError
from datagen.generate import build_renderer, load_recipe_model
from datagen.models.hooks import LayerHook
from datagen.paint import KEEP, grid_cells, grid_mask
from datagen.recipe import load_recipe
from datagen.render import PaintClass, Renderer, UnitOp, painted_forward

IGNORE = 255


# ---- grid geometry ------------------------------------------------------------------------------

def _cells(text: str) -> np.ndarray:
    return np.array([[ch == "#" for ch in row.strip()] for row in text.strip().splitlines()])


def test_grid_cells_is_the_papers_grid_for_any_window():
    # g = 2 on a 6 x 10 layer: blocks start at rows 0, 3 (< 6 - 2) and columns 0, 3, 6 (< 10 - 2)
    expected = _cells("""
        ##.##.##..
        ##.##.##..
        ..........
        ##.##.##..
        ##.##.##..
        ..........
    """)
    np.testing.assert_array_equal(grid_mask(6, 10, 2).numpy(), expected)
    np.testing.assert_array_equal(grid_cells(np.arange(6), np.arange(10), 2, 6, 10).numpy(), expected)
    # a window of the layer gets the whole layer's blocks (a canvas tile)
    np.testing.assert_array_equal(grid_cells(np.arange(2, 5), np.arange(4, 9), 2, 6, 10).numpy(), expected[2:5, 4:9])
    assert _cells("""
        #.#.
        ....
    """).tolist() == grid_mask(2, 4, 1).tolist()
    for h, w, g in [(16, 16, 2), (7, 9, 3), (5, 5, 4), (3, 3, 3), (12, 20, 5)]:  # the reference code's loop
        ref = torch.zeros(h, w, dtype=torch.bool)
        for r in range(0, max(h - g, 0), g + 1):
            for c in range(0, max(w - g, 0), g + 1):
                ref[r:r + g, c:c + g] = True
        assert torch.equal(grid_mask(h, w, g), ref), (h, w, g)


# ---- grid classes in a renderer ------------------------------------------------------------------

H, W = 24, 40  # tiny generator, dec.x4: a 6 x 10 layer of 4 x 4 px cells


class Fixed:
    """A layout that always draws the same map (for the renderer's calibration renders)."""

    def __init__(self, m: np.ndarray) -> None:
        self.m = m

    def generate(self, rng, size, class_ids):
        return self.m.copy()


def _layout() -> np.ndarray:
    m = np.ones((H, W), dtype=np.uint8)  # tumor: layer columns 0-6
    m[:, 28:] = 2  # stroma: layer columns 7-9
    return m


# T: a tumor block, S: stroma, '.': a gap of the tumor region (cf. the grid above)
PAINTED = """
    TT.TT.TSSS
    TT.TT.TSSS
    .......SSS
    TT.TT.TSSS
    TT.TT.TSSS
    .......SSS
"""


def _expected(gap: int) -> np.ndarray:
    lut = {"T": 1, "S": 2, ".": gap}
    return np.array([[lut[ch] for ch in row.strip()] for row in PAINTED.strip().splitlines()], dtype=np.uint8)


def _classes(gen, between=None, units=()):
    c = gen.layer("dec.x4").channels
    ones = torch.ones(c)
    return [
        PaintClass(0, "background", keep=True),
        PaintClass(1, "tumor", vectors=torch.stack([3 * ones]), grid=2, between=between),
        PaintClass(2, "stroma", vectors=torch.stack([-2 * ones, -5 * ones]), units=units),
    ]


@pytest.mark.parametrize("mode", ["cells", "layout", "rendered"])
def test_grid_class_paints_blocks_and_its_gaps_claim_nothing(tiny_generator, mode):
    gen, lay = tiny_generator, _layout()
    r = Renderer(gen, _classes(gen), Fixed(lay), size=(H, W), seed=0, layer="dec.x4", mask_mode=mode,
                 ignore_index=IGNORE, calibration_samples=4)
    plan = r.plan(0, lay)
    expected = _expected(gap=IGNORE)
    labels = plan.labels.numpy()
    assert (labels[expected == IGNORE] == KEEP).all()  # gaps keep the generator's own activations
    assert (labels[expected == 1] == 0).all() and (labels[expected == 2] == 1).all()  # one tumor, one stroma region
    expected_px = np.repeat(np.repeat(expected, 4, 0), 4, 1)
    np.testing.assert_array_equal(plan.cells, expected_px)

    images, masks = r.pairs([0], layouts=lay[None])
    gaps = expected_px == IGNORE
    assert (masks[0][gaps] == IGNORE).all()  # never claimed, in every mask mode
    if mode != "rendered":
        np.testing.assert_array_equal(masks[0], expected_px)
    else:  # the decoder's boundaries, but only classes painted nearby and no pixel of a gap
        assert set(np.unique(masks[0][~gaps])) <= {1, 2, IGNORE} and (masks[0][expected_px == 2] == 2).mean() > 0.8

    # the painted layer: the vector in the blocks, the generator's own activations in the gaps
    inputs = r.inputs([0])
    vectors = plan.vectors[None]
    _, (painted,) = painted_forward(gen, "dec.x4", inputs, plan.labels[None], vectors, record=["dec.x4"])
    with torch.no_grad(), LayerHook(gen.module, "dec.x4") as own:
        gen.forward(inputs)
    g = torch.from_numpy(expected == IGNORE)
    assert torch.equal(painted[0][:, g], own.original[0][:, g])
    assert (painted[0][:, torch.from_numpy(expected == 1)] == 3).all()


def test_between_class_fills_the_gaps_and_claims_them(tiny_generator):
    gen, lay = tiny_generator, _layout()
    r = Renderer(gen, _classes(gen, between=2), Fixed(lay), size=(H, W), seed=0, layer="dec.x4", mask_mode="cells")
    plan = r.plan(0, lay)
    expected = _expected(gap=2)
    np.testing.assert_array_equal(plan.cells, np.repeat(np.repeat(expected, 4, 0), 4, 1))
    labels = plan.labels.numpy()
    gap_slots = np.unique(labels[_expected(gap=IGNORE) == IGNORE])
    assert len(gap_slots) == 1 and gap_slots[0] >= 2  # a slot of its own, after the regions' own
    v = plan.vectors[gap_slots[0], 0].item()
    assert v in (-2.0, -5.0)  # one of stroma's vectors
    # the between stream is separate: the regions' own vectors are those of plain painting
    plain = Renderer(gen, _classes(gen), Fixed(lay), size=(H, W), seed=0, layer="dec.x4", mask_mode="cells").plan(0, lay)
    assert torch.equal(plan.vectors[:2], plain.vectors[:2])
    r_layout = Renderer(gen, _classes(gen, between=2), Fixed(lay), size=(H, W), seed=0, layer="dec.x4", mask_mode="layout")
    np.testing.assert_array_equal(r_layout.plan(0, lay).mask, plan.cells)


def test_grid_options_are_checked(tiny_generator):
    gen = tiny_generator
    with pytest.raises(ValueError, match="no class names"):
        Renderer(gen, _classes(gen), Fixed(_layout()), size=(H, W), seed=0, layer="dec.x4", mask_mode="cells",
                 ignore_index=None)
    with pytest.raises(ValueError, match="keep class"):
        Renderer(gen, _classes(gen, between=0), Fixed(_layout()), size=(H, W), seed=0, layer="dec.x4")
    with pytest.raises(ValueError, match="before the paint layer"):
        Renderer(gen, _classes(gen, units=(UnitOp((1,), layer="enc.x4"),)), Fixed(_layout()), size=(H, W), seed=0,
                 layer="dec.x4")
    with pytest.raises(ValueError, match="16 units"):
        Renderer(gen, _classes(gen, units=(UnitOp((16,)),)), Fixed(_layout()), size=(H, W), seed=0, layer="dec.x4")


# ---- unit edits from a recipe ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("paint-ops")
    return d, make_tiny_assets(d)


def _recipe(d, stroma_extra: str = "", tumor_extra: str = "", tail: str = "", name: str = "r.yaml"):
    text = (d / "recipe.yaml").read_text()
    if stroma_extra:
        text = text.replace("vectors: [{id: 5, weight: 2}, 6]}", f"vectors: [{{id: 5, weight: 2}}, 6], {stroma_extra}}}")
    if tumor_extra:
        text = text.replace("vectors: [0, 1, 2]}", f"vectors: [0, 1, 2], {tumor_extra}}}")
    (d / name).write_text(text + tail)
    return load_recipe(d / name)


def _stroma_corner() -> np.ndarray:
    m = np.ones((2, 64, 64), dtype=np.uint8)  # tumor, a stroma square in one corner
    m[0, :16, :16] = 2
    m[1, 40:, 24:48] = 2
    return m


def _render(recipe, layouts, seed=0):
    r = build_renderer(recipe, load_recipe_model(recipe, "cpu"), seed)
    return r, r.render([0, 1], layouts).astype(np.int16)


@pytest.mark.parametrize("layer, reach", [("dec.x1", 0), ("dec.x4", 12)])
def test_units_edit_changes_the_image_only_in_the_class_region(assets, layer, reach):
    """dec.x1 is followed by a pointwise to_rgb: the edit shows exactly inside the stroma cells. At the
    paint layer it spreads by the decoder's receptive field (here <= 12 px: two stages of bilinear
    upsampling and 3x3 convolutions), never further."""
    d, _ = assets
    layouts = _stroma_corner()
    plain = _recipe(d)
    edited = _recipe(d, f"units: {{layer: {layer}, ablate: [0, 1, 2, 3], insert: {{units: [5], value: 4.0}}}}",
                     name="u.yaml")
    _, a = _render(plain, layouts)
    r, b = _render(edited, layouts)
    assert r.classes[2].units == (UnitOp((0, 1, 2, 3), "ablate", None, layer), UnitOp((5,), "insert", 4.0, layer))
    changed = np.abs(a - b).max(-1) > 0
    region = layouts == 2
    for k in range(2):
        near = ndimage.binary_dilation(region[k], np.ones((3, 3)), iterations=reach) if reach else region[k]
        assert changed[k][region[k]].mean() > 0.5  # the edit shows in the region ...
        assert not changed[k][~near].any()  # ... and nowhere beyond its receptive field
        if reach:
            assert (~near).sum() > 1000


def test_units_top_are_ranked_once_on_fixed_streams(assets, monkeypatch):
    import datagen.vectors.units as units_mod

    d, _ = assets
    recipe = _recipe(d, "units: {top: 3, mode: insert, layer: dec.x2, rank_renders: 2}", name="top.yaml")
    calls = []
    real = units_mod.rank_units
    monkeypatch.setattr(units_mod, "rank_units", lambda *a, **k: calls.append(1) or real(*a, **k))
    gen = load_recipe_model(recipe, "cpu")
    a = assemble(recipe, gen, seed=0).classes[2].units
    b = assemble(recipe, gen, seed=7).classes[2].units  # another run seed: the same units, from the cache
    assert a == b and len(calls) == 1
    (op,) = a
    plain = assemble(_recipe(d, name="plain.yaml"), gen, seed=0)
    ranking = real(Renderer.from_setup(plain), "dec.x2", num=2, progress=False)
    assert list(op.units) == ranking.top("stroma", 3).tolist() and op.mode == "insert" and op.layer == "dec.x2"
    assert op.value == pytest.approx(tuple(ranking.thresholds[list(op.units)].tolist()))  # each unit's top 1 %


def test_resolved_top_units_are_recorded_in_the_dataset_info(assets):
    """The units `top: K` picked depend on the model and device: info.json records them (so they are
    fingerprinted and a resume on a device that ranks differently is refused); plain recipes add nothing."""
    from datagen.generate import prepare

    d, _ = assets
    recipe = _recipe(d, "units: {top: 3, mode: insert, layer: dec.x2, rank_renders: 2}", name="top.yaml")
    job = prepare(recipe.file, num=2, device="cpu", check_separability=False)
    (op,) = job.renderer.classes[2].units
    assert job.info.attrs["unit_edits"] == [{"class": job.renderer.classes[2].name, "layer": "dec.x2", "mode": "insert",
                                            "units": list(op.units), "value": list(op.value)}]
    plain = prepare(_recipe(d, name="plain.yaml").file, num=2, device="cpu", check_separability=False)
    assert "unit_edits" not in plain.info.attrs


# ---- recipe validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, field, message", [
    ("units: {ablate: [3], top: 2}", "classes[2].units", "either top"),
    ("units: {layer: dec.x2}", "classes[2].units", "ablate: [units], insert:"),
    ("units: {top: 2, mode: remove}", "classes[2].units.mode", "'ablate' or 'insert'"),
    ("units: {ablate: [1], mode: insert}", "classes[2].units", "mode: goes with top"),
    ("units: {insert: {units: [1, 2], value: [1.0]}}", "classes[2].units.insert", "one value per unit"),
    ("units: {insert: {units: [1]}}", "classes[2].units.insert.value", "required"),
    ("units: {ablate: [-1]}", "classes[2].units.ablate[0]", "greater than or equal to 0"),
    ("grid: 3", "classes[2].grid", "add paint: grid"),
    ("paint: tiles", "classes[2].paint", "'full' or 'grid'"),
    ("paint: grid, between: tumor", "classes[2].between", "painted in a grid itself"),
    ("paint: grid, between: nope", "classes[2].between", "no class has that name"),
    ("paint: grid, between: background", "classes[2].between", "keep class"),
])
def test_recipe_paint_ops_errors_when_loading(assets, extra, field, message):
    d, _ = assets
    tumor = "paint: grid" if "between: tumor" in extra else ""
    with pytest.raises(ConfigError) as e:
        _recipe(d, extra, tumor_extra=tumor, name="bad.yaml")
    assert e.value.field == field and message in e.value.message, (e.value.field, e.value.message)
    assert str(d / "bad.yaml") in str(e.value)


def test_recipe_grid_needs_an_ignore_value_or_a_between_class(assets):
    d, _ = assets
    with pytest.raises(ConfigError, match="set ignore_index or between") as e:
        _recipe(d, tumor_extra="paint: grid", tail="ignore_index: null\n", name="bad.yaml")
    assert e.value.field == "classes[1].between"
    r = _recipe(d, tumor_extra="paint: grid, grid: 3, between: stroma", tail="ignore_index: null\n", name="ok.yaml")
    assert r.classes[1].grid_size == 3 and r.classes[2].grid_size == 0


@pytest.mark.parametrize("extra, field, message", [
    ("units: {layer: dec.x8, ablate: [1]}", "classes[2].units.layer", "has no layer 'dec.x8'; its layers are: enc.x1"),
    ("units: {layer: enc.x2, ablate: [1]}", "classes[2].units.layer", "comes before the paint layer 'dec.x4'"),
    ("units: {layer: dec.x1, ablate: [2, 8]}", "classes[2].units.ablate[1]",
     "unit 8 is out of range: layer 'dec.x1' has 8 units (0..7)"),
    ("units: {insert: {units: [16], value: 1.0}}", "classes[2].units.insert.units[0]", "has 16 units (0..15)"),
    ("units: {top: 17}", "classes[2].units.top", "more than the 16 units"),
    ("paint: grid, grid: 16, between: tumor", "classes[2].grid", "places no block in layer 'dec.x4', which is only 16x16"),
])
def test_recipe_paint_ops_errors_against_the_model(assets, extra, field, message):
    d, _ = assets
    recipe = _recipe(d, extra, name="bad.yaml")
    with pytest.raises(ConfigError) as e:
        assemble(recipe, load_recipe_model(recipe, "cpu"), 0)
    assert e.value.field == field and message in e.value.message, (e.value.field, e.value.message)
    assert e.value.file == str(d / "bad.yaml")


# ---- canvases ----------------------------------------------------------------------------------------

def test_canvas_grid_and_units_tile_without_seams(assets, tmp_path):
    """A canvas anchors the grid to its whole layer: tiles paint the whole canvas's blocks (exact
    masks, seamless images), the gaps are ignore, the unit edit shows."""
    from datagen.canvas import canvas_from_recipe

    d, _ = assets
    text = (d / "recipe.yaml").read_text().replace("cells: [3, 8]", "cells: [12, 20]")
    text = text.replace("vectors: [0, 1, 2]}", "vectors: [0, 1, 2], paint: grid, grid: 2}")
    text = text.replace("library: library", f"library: {d / 'library'}")
    (tmp_path / "g.yaml").write_text(text + "paint: {mask: cells}\n")
    (tmp_path / "gu.yaml").write_text(text.replace("vectors: [{id: 5, weight: 2}, 6]}",
                                                   "vectors: [{id: 5, weight: 2}, 6], units: {ablate: [0, 1, 2, 3]}}")
                                      + "paint: {mask: cells}\n")
    canvas, _ = canvas_from_recipe(tmp_path / "gu.yaml", size=(256, 256), seed=3, device="cpu")
    centres = np.arange(64) * 4 + 2  # the 64 x 64 paint layer's cell centres
    cell_class = np.repeat(np.repeat(canvas.low.ravel()[canvas.source_cells(centres, centres)], 4, 0), 4, 1)
    blocks = np.repeat(np.repeat(grid_mask(64, 64, 2).numpy(), 4, 0), 4, 1)
    mask = canvas.mask_region(0, 256, 0, 256)
    np.testing.assert_array_equal(mask[(cell_class == 1) & ~blocks], IGNORE)
    np.testing.assert_array_equal(mask[(cell_class == 1) & blocks], 1)
    for y0, y1, x0, x1 in canvas.tiles(96):
        np.testing.assert_array_equal(canvas.mask_region(y0, y1, x0, x1), mask[y0:y1, x0:x1])
    full = canvas.render_region(0, 256, 0, 256).astype(np.int16)
    img = np.zeros_like(full)
    for y0, y1, x0, x1 in canvas.tiles(128):
        img[y0:y1, x0:x1] = canvas.render_tile(y0, y1, x0, x1)
    diff = np.abs(img - full)
    assert diff.max() <= 2 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    plain, _ = canvas_from_recipe(tmp_path / "g.yaml", size=(256, 256), seed=3, device="cpu")
    changed = np.abs(plain.render_region(0, 256, 0, 256).astype(np.int16) - full).max(-1) > 0
    stroma = cell_class == 2
    near = ndimage.binary_dilation(stroma, np.ones((3, 3)), iterations=12)
    assert changed[stroma].mean() > 0.5 and not changed[~near].any() and (~near).any()
    plain.mask_mode = "layout"  # pixels of a grid class in a gap cell: ignore
    lm = plain.mask_region(0, 256, 0, 256)
    tumor_px = canvas.low.ravel()[canvas.source_cells(np.arange(256), np.arange(256))] == 1
    assert (lm[tumor_px & ~blocks] == IGNORE).all() and (lm[tumor_px & blocks] == 1).all()
    for y0, y1, x0, x1 in plain.tiles(96):
        np.testing.assert_array_equal(plain.mask_region(y0, y1, x0, x1), lm[y0:y1, x0:x1])
