"""End to end: recipe -> generate -> zarr / TIFF on disk, read back with zarr and tifffile directly."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
from conftest import make_tiny_assets
import pytest
import tifffile
import torch
import zarr

from datagen.cli import main
from datagen.generate import generate, prepare

SIZE = 64


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random generator checkpoint, a vector library extracted from it, and a recipe."""
    d = tmp_path_factory.mktemp("assets")
    return d, make_tiny_assets(d, cells="[3, 8]")


def _run(recipe, out, fmt="zarr", num=32, **kw):
    return generate(recipe, out, num=num, seed=7, format=fmt, batch_size=8, block_size=8, progress=False, **kw)


def _read_zarr(out):
    root = zarr.open_group(str(out), mode="r")
    return np.asarray(root["images"][:]), np.asarray(root["masks"][:]), dict(root.attrs)


def test_end_to_end_zarr_and_tiff(assets, tmp_path):
    d, recipe = assets
    job = prepare(recipe, num=32, seed=7)
    layouts = np.stack([job.renderer.make_layout(i) for i in range(32)])

    rep = _run(recipe, tmp_path / "z", "zarr")
    assert rep.written_samples == 32
    images, masks, attrs = _read_zarr(tmp_path / "z")
    assert images.shape == (32, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert masks.shape == (32, SIZE, SIZE) and masks.dtype == np.uint8
    ids = {c["id"] for c in attrs["classes"]}
    assert ids == {0, 1, 2} and attrs["ignore_index"] == 255
    assert set(np.unique(masks)) <= {1, 2, 255}  # background is keep: true -> written as ignore, never as class 0
    assert all(images[i].std() > 1 for i in range(32))  # not constant
    # mask: rendered (the default) moves boundaries, it does not relabel regions
    painted = (layouts != 0) & (masks != 255)
    assert (masks[painted] == layouts[painted]).mean() > 0.8
    assert (masks[layouts == 0] == 255).mean() > 0.8
    assert attrs["seed"] == 7 and "recipe_sha256" in attrs and attrs["tool_version"]

    _run(recipe, tmp_path / "t", "tiff")
    shards = sorted((tmp_path / "t" / "shards").glob("*.tif"))
    assert len(shards) == 4
    timgs, tmasks = [], []
    for s in shards:
        with tifffile.TiffFile(s) as tf:
            pages = [p.asarray() for p in tf.pages]
            assert tf.pages[0].is_tiled
        timgs += pages[0::2]
        tmasks += pages[1::2]
    np.testing.assert_array_equal(np.stack(timgs), images)  # same recipe+seed -> same data in both formats
    np.testing.assert_array_equal(np.stack(tmasks), masks)


def test_painting_changes_only_with_vectors(assets, tmp_path):
    """Painted classes differ from the plain render; a keep-only layout equals it bit for bit."""
    d, recipe = assets
    from datagen.render import render_plain

    job = prepare(recipe, num=8, seed=7)
    imgs, masks = job.renderer(list(range(8)))
    plain = render_plain(job.generator, list(range(8)), (SIZE, SIZE), 7)
    for i in range(8):
        if (masks[i] == 0).all():
            np.testing.assert_array_equal(imgs[i], plain[i])
        else:
            assert not np.array_equal(imgs[i], plain[i])


def test_same_seed_bit_identical(assets, tmp_path):
    d, recipe = assets
    _run(recipe, tmp_path / "a", num=16)
    _run(recipe, tmp_path / "b", num=16)
    a, b = _read_zarr(tmp_path / "a"), _read_zarr(tmp_path / "b")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    generate(recipe, tmp_path / "c", num=16, seed=8, batch_size=8, block_size=8, progress=False)
    assert not np.array_equal(_read_zarr(tmp_path / "c")[0], a[0])


def test_two_shards_union_equals_full_run(assets, tmp_path):
    d, recipe = assets
    _run(recipe, tmp_path / "full", num=40)
    _run(recipe, tmp_path / "split", num=40, shard_index=0, num_shards=2)
    rep = _run(recipe, tmp_path / "split", num=40, shard_index=1, num_shards=2)
    assert rep.written_samples == 16  # blocks 1 and 3 of five 8-sample blocks
    full, split = _read_zarr(tmp_path / "full"), _read_zarr(tmp_path / "split")
    np.testing.assert_array_equal(full[0], split[0])
    np.testing.assert_array_equal(full[1], split[1])
    from datagen.validate import validate_dataset

    assert validate_dataset(tmp_path / "split").ok


def test_kill_then_resume_equals_uninterrupted(assets, tmp_path):
    d, recipe = assets
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "datagen.cli", "generate", str(recipe), "--out", str(out), "--num", "64",
           "--seed", "7", "--batch-size", "8", "--block-size", "8", "--quiet"]
    # same intra-op thread count as this process: float reductions (and so rounding) depend on it
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    manifest = out / "manifest"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill -9 once some, but not all, blocks are complete
        lines = sum(len(p.read_text().splitlines()) for p in manifest.glob("*.jsonl")) if manifest.exists() else 0
        if lines >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["generate", str(recipe), "--out", str(out), "--num", "64", "--seed", "7", "--batch-size", "8",
                 "--block-size", "8", "--quiet"]) == 2  # refuses to overwrite without --resume
    assert main(cmd[3:] + ["--resume"]) == 0
    _run(recipe, tmp_path / "ref", num=64)
    a, b = _read_zarr(out), _read_zarr(tmp_path / "ref")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert main(["validate", str(out), "--quiet"]) == 0


def test_augmentation_is_joint_and_deterministic(assets, tmp_path):
    d, recipe = assets
    aug = tmp_path / "aug.yaml"
    aug.write_text(recipe.read_text().replace("library: library", f"library: {d / 'library'}")
                   + "augment:\n  - {name: HorizontalFlip, p: 1.0}\n")
    _run(aug, tmp_path / "a", num=8)
    _run(recipe, tmp_path / "p", num=8)
    a, p = _read_zarr(tmp_path / "a"), _read_zarr(tmp_path / "p")
    np.testing.assert_array_equal(a[0], p[0][:, :, ::-1])
    np.testing.assert_array_equal(a[1], p[1][:, :, ::-1])


def test_cells_mask_mode(assets, tmp_path):
    d, recipe = assets
    r = tmp_path / "cells.yaml"
    r.write_text(recipe.read_text().replace("library: library", f"library: {d / 'library'}") + "paint: {mask: cells}\n")
    job = prepare(r, num=4, seed=7)
    _, masks = job.renderer([0, 1, 2, 3])
    # stride 4 at dec.x4: masks are constant over every 4x4 block
    blocks = masks.reshape(4, SIZE // 4, 4, SIZE // 4, 4)
    assert (blocks == blocks[:, :, :1, :, :1]).all()


def test_preview_shows_the_samples_generate_writes(assets, tmp_path):
    from PIL import Image

    from datagen.preview import colorize

    d, recipe = assets
    _run(recipe, tmp_path / "z", num=8)
    images, masks, attrs = _read_zarr(tmp_path / "z")
    assert main(["preview", str(recipe), "--out", str(tmp_path / "p.png"), "--num", "3", "--seed", "7",
                 "--columns", "2", "--device", "cpu"]) == 0
    sheet = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    gap, h, w = 4, SIZE, SIZE
    colors = {c["id"]: tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5)) for c in attrs["classes"]}
    for k in range(3):
        y = gap + (k // 2) * (h + gap)
        x = gap + (k % 2) * (3 * w + 2 * gap + 3 * gap)
        np.testing.assert_array_equal(sheet[y:y + h, x:x + w], images[k])  # the very sample `generate` wrote
        np.testing.assert_array_equal(sheet[y:y + h, x + w + gap:x + 2 * w + gap], colorize(masks[k], colors, attrs.get("ignore_index")))
    assert main(["preview", str(recipe), "--out", str(tmp_path / "q.png"), "--num", "0"]) == 2
