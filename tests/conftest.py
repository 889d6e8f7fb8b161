import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(int(os.environ.get("DATAGEN_TEST_THREADS", "1")))  # results are compared bit for bit; 1 thread is also fastest on a shared 2-core machine


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
