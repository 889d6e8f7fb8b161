"""The pure painting operations."""

import pytest
import torch

from datagen.paint import KEEP, boundary_alpha, grid_mask, paint, resize_labels


def test_paint_replaces_labelled_cells_and_keeps_the_rest():
    act = torch.randn(2, 3, 4, 4)
    labels = torch.full((2, 4, 4), KEEP)
    labels[0, :2] = 0
    labels[1, :, 3] = 1
    vectors = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    out = paint(act, labels, vectors)
    assert torch.equal(out[0, :, :2], vectors[0][:, None, None].expand(3, 2, 4))
    assert torch.equal(out[0, :, 2:], act[0, :, 2:])
    assert torch.equal(out[1, :, :, 3], vectors[1][:, None].expand(3, 4))
    assert torch.equal(out[1, :, :, :3], act[1, :, :, :3])


def test_soft_boundaries_blend_only_edge_cells():
    labels = torch.zeros(4, 4, dtype=torch.long)
    labels[:, 2:] = 1
    alpha = boundary_alpha(labels, 0.25)
    assert torch.equal(alpha[:, [1, 2]], torch.full((4, 2), 0.75))  # the two columns along the border
    assert torch.equal(alpha[:, [0, 3]], torch.ones(4, 2))
    act = torch.zeros(1, 1, 4, 4)
    out = paint(act, labels, torch.tensor([[2.0], [4.0]]), alpha)
    assert torch.allclose(out[0, 0, 0], torch.tensor([2.0, 1.5, 3.0, 4.0]))


def test_resize_labels_samples_cell_centres():
    big = torch.zeros(8, 8, dtype=torch.long)
    big[:, 4:] = 1
    big[:, 2] = 2  # a 1-px stripe off-centre in cell column 1: not sampled
    small = resize_labels(big, (4, 4))
    assert small.tolist() == [[0, 0, 1, 1]] * 4


def _cells(picture: str) -> list[list[bool]]:
    """A mask drawn as text: one line per row, '#' painted, '.' kept."""
    return [[ch == "#" for ch in row] for row in picture.split()]


# Grid replace (paper sec. 3.1): g x g blocks from (0, 0), one kept row/column between blocks, and
# at least one kept row/column after the last block (a block starts only below size - g; docs/vectors.md).
@pytest.mark.parametrize(("h", "w", "g", "picture"), [
    (6, 6, 2, """
        ##.##.
        ##.##.
        ......
        ##.##.
        ##.##.
        ......
    """),
    (8, 8, 2, """
        ##.##...
        ##.##...
        ........
        ##.##...
        ##.##...
        ........
        ........
        ........
    """),  # a block at row/column 6 would touch the edge: not placed
    (7, 9, 3, """
        ###.###..
        ###.###..
        ###.###..
        .........
        .........
        .........
        .........
    """),
    (5, 4, 1, """
        #.#.
        ....
        #.#.
        ....
        ....
    """),
    (3, 3, 2, """
        ##.
        ##.
        ...
    """),
    (2, 2, 2, """
        ..
        ..
    """),  # too small for one block and its separator
])
def test_grid_mask_geometry(h: int, w: int, g: int, picture: str) -> None:
    m = grid_mask(h, w, g)
    assert m.dtype == torch.bool and m.shape == (h, w)
    assert m.tolist() == _cells(picture)


def test_assign_region_slots_gives_each_region_one_vector():
    """Datasets and canvases assign vectors with this one function: one slot per connected region
    of a painted class (classes in id order), keep classes stay KEEP, draws follow the weights."""
    import numpy as np

    from datagen.render import PaintClass, assign_region_slots

    class_map = np.array([[0, 1, 1, 0, 2],
                          [0, 0, 0, 0, 2],
                          [1, 0, 2, 2, 0]], dtype=np.uint8)
    classes = {
        0: PaintClass(0, "background", keep=True),
        1: PaintClass(1, "tumor", vectors=torch.tensor([[1.0, 0.0], [2.0, 0.0]]), weights=torch.tensor([0.0, 1.0])),
        2: PaintClass(2, "stroma", vectors=torch.tensor([[0.0, 5.0]])),
    }
    region, vectors = assign_region_slots(class_map, classes, np.random.default_rng(0), channels=2)
    assert region.dtype == np.int32 and region.shape == class_map.shape
    assert (region[class_map == 0] == KEEP).all()
    # tumor has two regions (slots 0, 1), stroma two (slots 2, 3): one vector each
    assert region[0, 1] == region[0, 2] == 0 and region[2, 0] == 1
    assert region[0, 4] == region[1, 4] == 2 and region[2, 2] == region[2, 3] == 3
    assert torch.equal(vectors, torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 5.0], [0.0, 5.0]]))  # weight 0 never drawn
    empty, none = assign_region_slots(np.zeros((2, 2), np.uint8), classes, np.random.default_rng(0), channels=2)
    assert (empty == KEEP).all() and none.shape == (0, 2)
    with pytest.raises(ValueError, match="class id 7"):
        assign_region_slots(np.full((2, 2), 7, np.uint8), classes, np.random.default_rng(0), channels=2)
