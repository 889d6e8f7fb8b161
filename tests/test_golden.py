"""Output pinned to literal digests: refactors must leave every pixel where it was.

The digests were recorded before the architecture work (issue 14) split canvas.py, the
writers and the CLI. A change that moves any pixel of a pair, a canvas tile, or a written and
read-back dataset fails here; a change that means to move pixels updates the digests and says
why in its commit message.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from datagen.canvas import canvas_from_recipe
from datagen.data import SegmentationDataset
from datagen.generate import generate, prepare, render_block

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "tissue-small-demo.yaml"

# re-pinned when the shipped library was rebuilt without near-copy vectors (192 images, one
# vector each; classes are now 4-6 distinct vectors, not one): every image moved, and the
# rendered masks with them; the canvas tiles' `cells` masks, which follow the layout only, did not
PAIRS = ("10fd21259a0e6685", "03372fb173ac6e4e")  # demo recipe, seed 3, samples 0..3, batch 2
TILES = {  # demo recipe with mask: cells, 384x320 canvas, seed 5, 256-px tiles: (image, mask)
    # re-pinned when canvases began keeping the recipe's region sizes in pixels (issue 13):
    # the canvas layout is now drawn at canvas scale, so its regions (and every tile) moved
    (0, 256, 0, 256): ("93b85253e2745149", "403cc19f628540f2"),
    (0, 256, 256, 320): ("e29b986aa1b06258", "4020fd852d70a637"),
    (256, 384, 0, 256): ("333b688f393366c6", "e1b9aa19d5776f91"),
}


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def demo_job():
    return prepare(DEMO, num=4, seed=3, block_size=4, batch_size=2, check_separability=False)


def test_pairs_are_pinned(demo_job):
    idx = range(4)
    layouts = np.stack([demo_job.renderer.make_layout(i) for i in idx])
    images, masks = render_block(demo_job, idx, layouts, 2)
    assert images.shape == (4, 256, 256, 3) and masks.shape == (4, 256, 256)
    assert (digest(images), digest(masks)) == PAIRS


def test_written_dataset_reads_back_pinned(demo_job, tmp_path):
    out = tmp_path / "golden.zarr"
    generate(DEMO, out, num=4, seed=3, block_size=4, batch_size=2, progress=False)
    ds = SegmentationDataset(out)
    raw = [ds.read_raw(i) for i in range(len(ds))]
    images = np.stack([np.asarray(r[0]) for r in raw])
    masks = np.stack([np.asarray(r[1]) for r in raw])
    assert (digest(images), digest(masks)) == PAIRS


def test_canvas_tiles_are_pinned(tmp_path):
    recipe = yaml.safe_load(DEMO.read_text())
    recipe["paint"]["mask"] = "cells"
    recipe["library"] = str((DEMO.parent / recipe["library"]).resolve())
    path = tmp_path / "cells.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.warns(UserWarning, match="only 5 regions"):  # a small canvas: few regions, and it says so
        canvas, _ = canvas_from_recipe(path, size=(384, 320), seed=5)
    tiles = canvas.tiles(256)[:3]
    got = {tuple(t): (digest(canvas.render_tile(*t)), digest(canvas.mask_region(*t))) for t in tiles}
    assert got == TILES
