"""Renderer.plan: which layer cell paints which region's vector, and what mask is written for it.

A 16 x 24 px layout over the tiny generator's dec.x4 (stride 4) is a 4 x 6 layer. Layer cell
(i, j) takes the layout pixel at the centre of its 4 x 4 block: rows 2, 6, 10, 14 and columns
2, 6, 10, 14, 18, 22 (centred nearest neighbour, datagen.paint.resize_labels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datagen.paint import KEEP
from datagen.render import PaintClass, Renderer

H, W = 16, 24
IGNORE = 255


def _layout() -> np.ndarray:
    """Classes 0 and 3 keep; class 1 (regions A, B, D, E, G) and class 2 (C, F, H) paint."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[0:8, 0:8] = 1  # A: four cells (rows 0-1, columns 0-1)
    m[:, 8:12] = 2  # C: the whole cell column 2
    m[12:16, 12:16] = 1  # B: exactly cell (3, 3)
    m[0:2, 12:16] = 1  # D: top half of cell (0, 3), above its centre row 2: no cell
    m[10:12, 0:4] = 2  # F: 2 x 4 px, but it holds the centre (10, 2) of cell (2, 0)
    m[4:8, 16:20] = 2  # H: exactly cell (1, 4)
    m[12:16, 16:20] = 3  # a keep class: cell (3, 4)
    m[:, 21] = 1  # G: a 1-px column between the centre columns 18 and 22: no cell
    m[15, 0] = 1  # E: one pixel: no cell
    return m


# the region under each layer cell ('.': keep, nothing painted)
REGIONS = """
    AAC...
    AAC.H.
    F.C...
    ..CB..
"""
CLASS_OF = {"A": 1, "B": 1, "D": 1, "E": 1, "G": 1, "C": 2, "F": 2, "H": 2}
CELL_CLASSES = [  # the class under each layer cell's centre
    [1, 1, 2, 0, 0, 0],
    [1, 1, 2, 0, 2, 0],
    [2, 0, 2, 0, 0, 0],
    [0, 0, 2, 1, 3, 0],
]


@pytest.fixture
def classes(tiny_generator) -> list[PaintClass]:
    c = tiny_generator.layer("dec.x4").channels
    ones = torch.ones(c)
    return [
        PaintClass(0, "background", keep=True),
        PaintClass(1, "tumor", vectors=torch.stack([1 * ones, 2 * ones, 3 * ones]), weights=torch.tensor([1.0, 1.0, 1.0])),
        PaintClass(2, "stroma", vectors=torch.stack([10 * ones, 20 * ones])),
        PaintClass(3, "fat", keep=True),
    ]


def _renderer(gen, classes, **kw) -> Renderer:
    r = Renderer(gen, classes, None, size=(H, W), seed=5, layer="dec.x4", **kw)
    assert r.layer_size == (4, 6) and r.stride == (4, 4)
    return r


def test_cells_sample_the_layout_at_their_centres(tiny_generator, classes):
    plan = _renderer(tiny_generator, classes).plan(0, _layout())
    letters = [list(row) for row in REGIONS.split()]
    assert plan.labels.shape == (4, 6) and plan.labels.dtype == torch.int64
    assert (plan.labels == KEEP).tolist() == [[ch == "." for ch in row] for row in letters]
    # one slot per region: cells of one region share it, cells of two regions never do
    slot_of: dict[str, int] = {}
    for i, row in enumerate(letters):
        for j, ch in enumerate(row):
            if ch != ".":
                assert slot_of.setdefault(ch, int(plan.labels[i, j])) == int(plan.labels[i, j]), (i, j)
    assert sorted(slot_of) == ["A", "B", "C", "F", "H"] and len(set(slot_of.values())) == 5
    # each slot's vector is one of its region's class vectors
    for ch, slot in slot_of.items():
        value = float(plan.vectors[slot, 0])
        assert torch.equal(plan.vectors[slot], torch.full_like(plan.vectors[slot], value))
        assert value in ({1.0, 2.0, 3.0} if CLASS_OF[ch] == 1 else {10.0, 20.0}), ch
    # the class under each cell, repeated over its 4 x 4 output block
    assert plan.cells.shape == (H, W) and plan.cells.dtype == np.uint8
    np.testing.assert_array_equal(plan.cells, np.kron(np.array(CELL_CLASSES), np.ones((4, 4), dtype=np.int64)))
    assert plan.alpha is None  # soft_boundary 0: hard painting


def test_regions_without_a_cell_centre_are_not_painted_and_written_as_ignore(tiny_generator, classes):
    layout = _layout()
    plan = _renderer(tiny_generator, classes, mask_mode="layout", ignore_index=IGNORE).plan(0, layout)
    # mask: layout keeps every region that a cell paints (F too, though smaller than a cell)
    expected = np.full((H, W), IGNORE, dtype=np.uint8)  # keep classes 0 and 3, and regions D, E, G
    expected[0:8, 0:8] = 1  # A
    expected[:, 8:12] = 2  # C
    expected[12:16, 12:16] = 1  # B
    expected[10:12, 0:4] = 2  # F
    expected[4:8, 16:20] = 2  # H
    assert plan.mask.dtype == np.uint8
    np.testing.assert_array_equal(plan.mask, expected)
    # ignore_index null: every pixel keeps its class id, unpainted slivers and keep classes included
    plan = _renderer(tiny_generator, classes, mask_mode="layout", ignore_index=None).plan(0, layout)
    np.testing.assert_array_equal(plan.mask, layout)
    # mask: cells writes what was painted: the cell classes, keep classes as ignore
    plan = _renderer(tiny_generator, classes, mask_mode="cells", ignore_index=IGNORE).plan(0, layout)
    cells = np.array(CELL_CLASSES)
    cells[(cells == 0) | (cells == 3)] = IGNORE
    np.testing.assert_array_equal(plan.mask, np.kron(cells, np.ones((4, 4), dtype=np.int64)))


def test_one_vector_per_region_drawn_per_sample(tiny_generator, classes):
    """Two regions of one class draw their vectors independently; a sample's draw is reproducible."""
    layout = np.zeros((H, W), dtype=np.uint8)
    layout[0:8, 0:8] = 1  # 2 x 2 cells
    layout[8:16, 16:24] = 1  # 2 x 2 cells, not touching the first
    r = _renderer(tiny_generator, classes)
    same = differ = 0
    for index in range(12):
        plan = r.plan(index, layout)
        first, second = plan.labels[:2, :2], plan.labels[2:, 4:]
        assert (first == first[0, 0]).all() and (second == second[0, 0]).all()
        assert int(first[0, 0]) != int(second[0, 0])  # two regions, two slots
        assert (plan.labels[:2, 2:] == KEEP).all() and (plan.labels[2:, :4] == KEEP).all()
        a, b = float(plan.vectors[first[0, 0], 0]), float(plan.vectors[second[0, 0], 0])
        assert {a, b} <= {1.0, 2.0, 3.0}
        same, differ = same + (a == b), differ + (a != b)
        again = r.plan(index, layout)
        assert torch.equal(again.labels, plan.labels) and torch.equal(again.vectors, plan.vectors)
    assert same and differ  # both happen over 12 samples (fixed seed: deterministic)
