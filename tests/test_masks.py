"""What the written mask claims: keep -> ignore, unpainted slivers, mask: rendered (datagen.masks)."""

import numpy as np
import pytest
import torch
from conftest import make_tiny_assets, tiny_recipe_text

from datagen.data import SegmentationDataset
from datagen.errors import ConfigError
from datagen.generate import generate, prepare
from datagen.masks import cell_boundary_distance, ignore_keep, near_boundary
from datagen.recipe import load_recipe

SIZE = 64


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("mask-assets")
    return d, make_tiny_assets(d, cells="[3, 8]")


def _recipe(d, name, paint="", extra=""):
    text = tiny_recipe_text(d) + (f"paint: {{{paint}}}\n" if paint else "") + extra
    p = d / name
    p.write_text(text)
    return p


def test_ignore_keep_and_boundary_distance():
    m = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(ignore_keep(m.copy(), [0], 255), [[255, 1], [2, 255]])
    np.testing.assert_array_equal(ignore_keep(m.copy(), [0], None), m)  # no ignore value: class ids stay
    cells = np.zeros((8, 8), dtype=np.uint8)
    cells[:, 4:] = 1
    d = cell_boundary_distance(cells)
    assert d[0, 3] == 0 and d[0, 4] == 0 and d[0, 0] == 3 and d[0, 7] == 3
    assert np.isinf(cell_boundary_distance(np.zeros((4, 4), np.uint8))).all()
    near = near_boundary(torch.from_numpy(cells)[None], 2)[0].numpy()
    np.testing.assert_array_equal(near[0], [False, True, True, True, True, True, True, False])


@pytest.mark.parametrize("fmt", ["zarr", "tiff"])
def test_keep_regions_written_as_ignore_and_read_back(assets, tmp_path, fmt):
    d, _ = assets
    recipe = _recipe(d, f"cells-{fmt}.yaml", "mask: cells")
    generate(recipe, tmp_path / "out", num=8, seed=3, format=fmt, block_size=4, progress=False)
    ds = SegmentationDataset(tmp_path / "out")
    assert ds.ignore_index == 255 and ds.num_classes == 3
    assert next(c for c in ds.classes if c["id"] == 0).get("keep") is True
    job = prepare(recipe, num=8, seed=3)
    for i in range(len(ds)):
        _, mask = ds[i]
        layout = job.renderer.make_layout(i)
        cells = job.renderer.cells_mask(layout)
        np.testing.assert_array_equal(mask.numpy() == 255, cells == 0)  # exactly the keep cells
        assert 0 not in mask.unique().tolist()  # class 0 (keep) is never claimed


def test_ignore_index_null_writes_keep_class_ids(assets, tmp_path):
    d, _ = assets
    recipe = _recipe(d, "noignore.yaml", "mask: layout", "ignore_index: null\n")
    job = prepare(recipe, num=4, seed=1)
    assert job.info.ignore_index is None
    _, masks = job.renderer(list(range(4)))
    layouts = np.stack([job.renderer.make_layout(i) for i in range(4)])
    np.testing.assert_array_equal(masks, layouts)  # the old behaviour: the layout itself


def test_ignore_index_must_not_be_a_class_id(assets):
    d, _ = assets
    p = _recipe(d, "clash.yaml", extra="ignore_index: 2\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(p)
    assert e.value.field == "ignore_index" and "stroma" in str(e.value)


def test_thin_region_is_ignored_in_layout_mode_and_absent_in_cells_mode(assets):
    """A region thinner than half a paint cell holds no cell centre: nothing is painted there.

    mask: layout writes it as ignore (it was labelled, not painted); mask: cells and
    mask: rendered do not label it at all (the neighbouring painted class covers it).
    """
    d, _ = assets
    job = prepare(_recipe(d, "thin.yaml", "mask: layout"), num=1, seed=0)
    r = job.renderer
    s = r.stride[1]  # paint-cell width in output pixels; cell k samples column k * s + s // 2
    assert s >= 4
    thin = slice(2 * s, 2 * s + s // 2)  # a tumor stripe narrower than half a cell, beside a centre
    layout = np.full((SIZE, SIZE), 2, dtype=np.uint8)  # stroma everywhere ...
    layout[:, thin] = 1
    plan = r.plan(0, layout)
    assert not (plan.cells == 1).any()  # never painted
    assert (plan.mask[:, thin] == 255).all()  # labelled -> written as ignore
    assert (plan.mask[:, : 2 * s] == 2).all()
    r.mask_mode = "cells"
    plan = r.plan(0, layout)
    assert set(np.unique(plan.mask)) == {2}


def test_rendered_masks_are_deterministic_and_follow_the_cells(assets):
    d, _ = assets
    recipe = _recipe(d, "rendered.yaml", "mask: rendered")
    a = prepare(recipe, num=8, seed=5).renderer
    b = prepare(recipe, num=8, seed=5).renderer
    ia, ma = a([4, 5, 6, 7])
    ib, mb = b([7, 4])  # other order, other batch: same samples
    np.testing.assert_array_equal(ma[[3, 0]], mb)
    np.testing.assert_array_equal(ia[[3, 0]], ib)
    assert a.mask_model().calibration["samples"] == a.calibration_samples
    # away from painted-cell boundaries the rendered mask is the painted cell
    for k, i in enumerate([4, 5, 6, 7]):
        cells = a.cells_mask(a.make_layout(i))
        far = ~near_boundary(torch.from_numpy(cells)[None], max(a.stride))[0].numpy()
        want = np.where(cells == 0, 255, cells)
        np.testing.assert_array_equal(ma[k][far], want[far])
        assert set(np.unique(ma[k])) <= {1, 2, 255}


def test_rendered_mode_moves_boundaries_only_near_them(assets):
    d, _ = assets
    job = prepare(_recipe(d, "rendered2.yaml", "mask: rendered"), num=16, seed=2)
    r = job.renderer
    _, masks = r(list(range(16)))
    cells = np.stack([np.where(c == 0, 255, c) for c in (r.cells_mask(r.make_layout(i)) for i in range(16))])
    diff = masks != cells
    near = near_boundary(torch.from_numpy(np.stack([r.cells_mask(r.make_layout(i)) for i in range(16)])), max(r.stride))
    assert not diff[~near.numpy()].any()
    assert diff.mean() < 0.25


def test_canvas_writes_an_explicit_rendered_mask(assets, tmp_path):
    from datagen.canvas import canvas_from_recipe

    d, _ = assets
    canvas, _ = canvas_from_recipe(_recipe(d, "canvas-rendered.yaml", "mask: rendered"), size=(128, 128), device="cpu")
    assert canvas.mask_mode == "rendered"
    mask = canvas.mask_region(0, 128, 0, 128)
    assert 0 not in np.unique(mask)  # the keep class is written as the ignore value, never as a class
    assert set(np.unique(mask)) - {255}  # and painted classes are claimed somewhere
