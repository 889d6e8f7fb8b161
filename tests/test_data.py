"""SegmentationDataset over both formats, DataLoader workers, and the training example."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datagen.data import SegmentationDataset
from datagen.errors import DatagenError
from datagen.writers import DatasetInfo, instance_map, open_writer

REPO = Path(__file__).resolve().parents[1]
FORMATS = ["zarr", "tiff"]
CLASSES = [
    {"id": 0, "name": "background", "color": "#000000"},
    {"id": 1, "name": "road", "color": "#808080"},
    {"id": 2, "name": "car", "color": "#ff0000"},
]


def make_dataset(path: Path, fmt: str, n: int = 10, h: int = 16, w: int = 20, blocks=None, instances: bool = False):
    info = DatasetInfo(num_samples=n, height=h, width=w, classes=CLASSES, block_size=4, attrs={"seed": 1},
                       ignore_index=255 if instances else None, instances=instances)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (n, h, w), dtype=np.uint8)
    if instances:
        masks[:, :4, :4] = 255  # ignore pixels: instance id 0
    with open_writer(fmt, path, info) as wr:
        for b in range(info.num_blocks) if blocks is None else blocks:
            r = info.block_range(b)
            wr.write_block(b, images[r.start : r.stop], masks[r.start : r.stop])
    return images, masks


@pytest.fixture(params=FORMATS)
def dataset(request, tmp_path):
    out = tmp_path / request.param
    images, masks = make_dataset(out, request.param)
    return out, images, masks


def test_items_dtypes_and_values(dataset):
    out, images, masks = dataset
    ds = SegmentationDataset(out)
    assert len(ds) == 10
    assert ds.classes == CLASSES and ds.num_classes == 3
    img, mask = ds[3]
    assert img.dtype == torch.float32 and img.shape == (3, 16, 20)
    assert mask.dtype == torch.int64 and mask.shape == (16, 20)
    assert 0.0 <= img.min() and img.max() <= 1.0
    np.testing.assert_allclose(img.numpy(), images[3].transpose(2, 0, 1) / 255.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(mask.numpy(), masks[3])
    np.testing.assert_array_equal(ds[-1][1].numpy(), masks[9])
    with pytest.raises(IndexError):
        ds[10]
    raw_img, raw_mask = SegmentationDataset(out, return_tensors=False)[3]
    assert raw_img.dtype == np.uint8 and raw_img.shape == (16, 20, 3)
    np.testing.assert_array_equal(raw_img, images[3])
    np.testing.assert_array_equal(raw_mask, masks[3])


def test_joint_albumentations_transform(dataset):
    A = pytest.importorskip("albumentations")
    out, images, masks = dataset
    ds = SegmentationDataset(out, transform=A.Compose([A.HorizontalFlip(p=1.0)]))
    img, mask = ds[2]
    np.testing.assert_allclose(img.numpy(), images[2][:, ::-1].transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_array_equal(mask.numpy(), masks[2][:, ::-1])
    # a float-producing transform is not rescaled again
    ds = SegmentationDataset(out, transform=A.Compose([A.Normalize(mean=0, std=1, max_pixel_value=255.0)]))
    img, _ = ds[2]
    np.testing.assert_allclose(img.numpy(), images[2].transpose(2, 0, 1) / 255.0, atol=1e-5)


def test_dataloader_with_workers(dataset):
    out, images, masks = dataset
    ds = SegmentationDataset(out)
    ds[0]  # open handles in the parent first: workers must not inherit/pickle them
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1][1].numpy(), masks[1])
    loader = DataLoader(ds, batch_size=3, shuffle=False, num_workers=2)
    got_i, got_m = zip(*loader, strict=True)
    all_i = torch.cat(got_i)
    all_m = torch.cat(got_m)
    assert all_i.shape == (10, 3, 16, 20) and all_m.shape == (10, 16, 20)
    np.testing.assert_array_equal(all_m.numpy(), masks)
    np.testing.assert_allclose(all_i.numpy(), images.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_incomplete_dataset(tmp_path, fmt):
    out = tmp_path / "o"
    images, masks = make_dataset(out, fmt, n=10, blocks=[0, 2])  # block 1 (samples 4..7) missing
    with pytest.raises(DatagenError, match=r"incomplete: 2 of 3 blocks written \(6 of 10 samples\)"):
        SegmentationDataset(out)
    ds = SegmentationDataset(out, allow_incomplete=True)
    assert len(ds) == 6 and ds.sample_indices.tolist() == [0, 1, 2, 3, 8, 9]
    np.testing.assert_array_equal(ds[4][1].numpy(), masks[8])


@pytest.mark.parametrize("fmt", FORMATS)
def test_instances_third_item(tmp_path, fmt):
    A = pytest.importorskip("albumentations")
    out = tmp_path / "o"
    _, masks = make_dataset(out, fmt, instances=True)
    expected = np.stack([instance_map(m, 255) for m in masks])
    img, mask, inst = SegmentationDataset(out, instances=True)[7]
    assert inst.dtype == torch.int64 and inst.shape == (16, 20)
    np.testing.assert_array_equal(inst.numpy(), expected[7])
    np.testing.assert_array_equal(mask.numpy(), masks[7])
    assert (inst.numpy() == 0).sum() == 16  # exactly the ignore pixels
    _, _, raw = SegmentationDataset(out, instances=True, return_tensors=False)[2]
    assert raw.dtype == np.uint32
    np.testing.assert_array_equal(raw, expected[2])
    # a spatial transform moves the instance map with the mask
    flip = SegmentationDataset(out, instances=True, return_tensors=False,
                               transform=A.Compose([A.HorizontalFlip(p=1.0)]))
    _, fmask, finst = flip[2]
    np.testing.assert_array_equal(finst, expected[2][:, ::-1])
    assert finst.dtype == np.uint32
    # rotations too (OpenCV warps no uint32: the map goes through the transform as int32)
    rot = SegmentationDataset(out, instances=True, return_tensors=False,
                              transform=A.Compose([A.Rotate(limit=(30, 30), p=1.0)]))
    _, rmask, rinst = rot[2]
    assert rinst.dtype == np.uint32 and set(np.unique(rinst)) <= set(np.unique(expected[2]))
    assert all(len(np.unique(rmask[rinst == i])) == 1 for i in np.unique(rinst[rinst > 0]))
    # through DataLoader workers
    loader = DataLoader(SegmentationDataset(out, instances=True), batch_size=5, num_workers=2)
    np.testing.assert_array_equal(torch.cat([b[2] for b in loader]).numpy(), expected)
    # plain datasets have none; instances are only returned when asked for
    assert len(SegmentationDataset(out)[0]) == 2
    make_dataset(tmp_path / "plain", fmt)
    with pytest.raises(DatagenError, match="has no instance maps.*instances=True"):
        SegmentationDataset(tmp_path / "plain", instances=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_generate_instances_flag_end_to_end(tmp_path, fmt):
    """``datagen generate --instances``: the pipeline's masks come back with their instance maps."""
    from conftest import make_tiny_assets

    from datagen.cli import main
    from datagen.validate import validate_dataset

    recipe = make_tiny_assets(tmp_path)
    out = tmp_path / "out"
    assert main(["generate", str(recipe), "--out", str(out), "--num", "6", "--block-size", "4", "--format", fmt,
                 "--device", "cpu", "--instances", "--quiet"]) == 0
    assert validate_dataset(out).ok
    ds = SegmentationDataset(out, instances=True, return_tensors=False)
    assert ds.info.instances
    for i in range(len(ds)):
        _, mask, inst = ds[i]
        np.testing.assert_array_equal(inst, instance_map(mask, ds.ignore_index))
        assert inst.max() >= 1


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatagenError, match="does not exist"):
        SegmentationDataset(tmp_path / "missing")
    with pytest.raises(DatagenError, match="no info.json"):
        SegmentationDataset(tmp_path)


def test_example_training_script(tmp_path):
    out = tmp_path / "ds"
    make_dataset(out, "tiff", n=8, h=32, w=32)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_segmentation.py"), str(out), "--steps", "3", "--batch-size", "2"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stdout.splitlines() if line.startswith("step")]
    assert len(steps) == 3
    losses = [float(line.split("loss")[1].split()[0]) for line in steps]
    assert all(np.isfinite(losses))
    # a helpful error for a non-dataset folder
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_segmentation.py"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
