"""The Ray engine: blocks fanned out to Ray tasks give the same dataset as a local run, bit for bit."""

import sys

import numpy as np
from conftest import make_tiny_assets
import pytest
import torch
import zarr

from datagen.errors import DatagenError
from datagen.generate import generate
from datagen.validate import validate_dataset


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random generator checkpoint, a vector library extracted from it, and a recipe."""
    d = tmp_path_factory.mktemp("ray-assets")
    return d, make_tiny_assets(d, cells="[3, 8]")


def _read(out):
    root = zarr.open_group(str(out / "data.zarr"), mode="r")
    return np.asarray(root["images"][:]), np.asarray(root["masks"][:])


def test_missing_ray_is_a_clear_error(assets, tmp_path, monkeypatch):
    from datagen.engines.ray import generate_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(DatagenError, match=r"pip install 'datagen\[ray\]'"):
        generate_ray(assets[1], tmp_path / "out", num=8, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the local reference and every Ray task compute with one thread
    yield 1
    torch.set_num_threads(n)


def test_ray_equals_local_run(assets, tmp_path, one_thread):
    pytest.importorskip("ray")
    from datagen.engines.ray import generate_ray

    d, recipe = assets
    generate(recipe, tmp_path / "local", num=32, seed=7, batch_size=8, block_size=8, progress=False)
    rep = generate_ray(recipe, tmp_path / "ray", num=32, seed=7, batch_size=8, block_size=8, num_tasks=2,
                       num_cpus=2, threads=one_thread, progress=False)
    assert (rep.written_samples, rep.skipped_blocks, rep.total_blocks) == (32, 0, 4)
    parts = list((tmp_path / "ray" / "manifest").glob("part-*.jsonl"))
    assert {p.name[:10] for p in parts} == {"part-00000", "part-00001"}  # two tasks, each with its own writer
    local, ray_out = _read(tmp_path / "local"), _read(tmp_path / "ray")
    np.testing.assert_array_equal(local[0], ray_out[0])
    np.testing.assert_array_equal(local[1], ray_out[1])
    assert validate_dataset(tmp_path / "ray").ok


def test_ray_resumes_a_partial_run_via_cli(assets, tmp_path, one_thread):
    ray = pytest.importorskip("ray")
    from datagen.cli import main

    d, recipe = assets
    out = tmp_path / "partial"
    generate(recipe, out, num=40, seed=7, batch_size=8, block_size=8, shard_index=0, num_shards=2, progress=False)
    ray.init(num_cpus=2, include_dashboard=False)  # an already running cluster is used as it is
    try:
        assert main(["generate", str(recipe), "--out", str(out), "--num", "40", "--seed", "7", "--batch-size", "8",
                     "--block-size", "8", "--engine", "ray", "--ray-tasks", "2", "--resume", "--quiet"]) == 0
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    generate(recipe, tmp_path / "full", num=40, seed=7, batch_size=8, block_size=8, progress=False)
    np.testing.assert_array_equal(_read(out)[0], _read(tmp_path / "full")[0])
    assert validate_dataset(out).ok
