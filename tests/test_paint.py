"""The pure painting operations."""

import torch

from datagen.paint import KEEP, boundary_alpha, paint, resize_labels


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
