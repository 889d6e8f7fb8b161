import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
TEST_THREADS = int(os.environ.get("DATAGEN_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)  # results are compared bit for bit; 1 thread is also fastest on a shared 2-core machine


@pytest.fixture(autouse=True)
def test_threads():
    """Every test starts with TEST_THREADS torch threads, whatever an earlier test (a CLI call with
    --threads, a benchmark) set: renders compared within one test must not change thread count."""
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture
def tiny_unet():
    """A small random digipath UNet (stride 8) for fast CPU tests."""
    from datagen.models import DigipathUNet, UNetConfig

    torch.manual_seed(0)
    return DigipathUNet(UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, cond_dim=6, cond_channels=4, default_layer="dec.x4"))


@pytest.fixture
def tiny_generator(tiny_unet):
    from datagen.models import DigipathGenerator

    return DigipathGenerator(tiny_unet, torch.randn(20, 6, generator=torch.Generator().manual_seed(1)), name="tiny")


def tiny_recipe_text(d, size=64, cells="[3, 8]"):
    """The standard test recipe over the tiny model and library that ``make_tiny_assets`` writes in ``d``."""
    import textwrap

    return textwrap.dedent(f"""\
        model: {d / 'model'}
        layer: dec.x4
        library: library
        size: [{size}, {size}]
        classes:
          - {{name: background, id: 0, color: "#f0f0f0", keep: true}}
          - {{name: tumor, id: 1, color: "#d62728", vectors: [0, 1, 2]}}
          - {{name: stroma, id: 2, color: "#1f77b4", vectors: [{{id: 5, weight: 2}}, 6]}}
        layout:
          kind: voronoi
          classes: {{background: 1, tumor: 2, stroma: 2}}
          cells: {cells}
        """)


def make_tiny_assets(d, size=64, cells="[3, 8]"):
    """A tiny random generator checkpoint (stride 8, painted at dec.x4), a vector library
    extracted from it and a recipe using both, written into ``d``; returns the recipe path."""
    from datagen.models import DigipathUNet, UNetConfig, load_checkpoint, save_generator
    from datagen.vectors import extract_vectors

    torch.manual_seed(0)
    unet = DigipathUNet(UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, cond_dim=6, cond_channels=4,
                                   default_layer="dec.x4"))
    save_generator(d / "model", unet, torch.randn(10, 6), {"name": "tiny"})
    gen = load_checkpoint(d / "model")
    lib = extract_vectors(gen, "dec.x4", 4, size=size, seed=0, per_image=4, progress=False, model_spec=str(d / "model"))
    lib.save(d / "library")
    recipe = d / "recipe.yaml"
    recipe.write_text(tiny_recipe_text(d, size, cells))
    return recipe
