"""End to end: recipe -> generate -> zarr / TIFF on disk, read back with zarr and tifffile directly."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from conftest import make_tiny_assets
import pytest
import tifffile
import torch
import zarr

from datagen.cli import main
from datagen.errors import DatagenError, UsageError
from datagen.generate import generate, prepare
from datagen.writers import read_manifest

SIZE = 64


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random generator checkpoint, a vector library extracted from it, and a recipe."""
    d = tmp_path_factory.mktemp("assets")
    return d, make_tiny_assets(d, cells="[3, 8]")


def _run(recipe, out, fmt="zarr", num=32, **kw):
    return generate(recipe, out, num=num, seed=7, format=fmt, batch_size=8, block_size=8, progress=False, **kw)


def _read_zarr(out):
    root = zarr.open_group(str(out / "data.zarr"), mode="r")  # the group sits beside info.json and manifest/
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

    idx = list(range(8))
    job = prepare(recipe, num=8, seed=7)
    plain = render_plain(job.generator, idx, (SIZE, SIZE), 7)
    imgs, _ = job.renderer(idx)
    for i in idx:
        assert (job.renderer.make_layout(i) != 0).any()  # every sample paints a tumor or stroma region
        assert not np.array_equal(imgs[i], plain[i])
    # every class keeps the layer's own activations: nothing is painted, nothing is labelled
    keep = tmp_path / "keep.yaml"
    keep.write_text(textwrap.dedent(f"""\
        model: {d / 'model'}
        layer: dec.x4
        size: [{SIZE}, {SIZE}]
        classes:
          - {{name: background, id: 0, color: "#f0f0f0", keep: true}}
          - {{name: tissue, id: 1, color: "#d62728", keep: true}}
        layout: {{kind: voronoi, classes: {{background: 1, tissue: 1}}, cells: [3, 8]}}
        """))
    job = prepare(keep, num=8, seed=7)
    layouts = np.stack([job.renderer.make_layout(i) for i in idx])
    assert set(np.unique(layouts)) == {0, 1}  # both keep classes are drawn
    imgs, masks = job.renderer(idx)
    np.testing.assert_array_equal(imgs, plain)
    assert (masks == 255).all()


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
    deadline = time.time() + 300
    while not _done_blocks(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # kill -9 as soon as the first of 8 blocks is recorded
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it was killed"
    assert 0 < _done_blocks(out) < 8  # the kill landed mid-run
    assert main(["generate", str(recipe), "--out", str(out), "--num", "64", "--seed", "7", "--batch-size", "8",
                 "--block-size", "8", "--quiet"]) == 2  # refuses to overwrite without --resume
    assert main(cmd[3:] + ["--resume"]) == 0
    assert _done_blocks(out) == 8
    _run(recipe, tmp_path / "ref", num=64)
    a, b = _read_zarr(out), _read_zarr(tmp_path / "ref")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert main(["validate", str(out), "--quiet"]) == 0


def _done_blocks(out) -> int:
    """Blocks the output's manifest records as complete (0 before it exists)."""
    return len(read_manifest(out).completed_blocks())


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



# ---- worker processes (datagen/engines/processes.py) -----------------------------------------------

def _hashes(out) -> dict[int, list[tuple[str, ...]]]:
    """Every block's recorded sample hashes."""
    m = read_manifest(out)
    return {b: m.hashes(b) for b in sorted(m.completed_blocks())}


def _children(pid: int) -> list[int]:
    """Pids of the processes whose parent is ``pid``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _workers_of(pid: int) -> list[int]:
    """The live render workers (datagen.engines.processes) that ``pid`` started."""
    out = []
    for c in _children(pid):
        try:
            with open(f"/proc/{c}/cmdline", "rb") as f:
                if b"datagen.engines.processes" in f.read() and _alive(c):
                    out.append(c)
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids, timeout=60.0) -> list[int]:
    """The pids still alive after ``timeout`` s."""
    deadline = time.time() + timeout
    while [p for p in pids if _alive(p)] and time.time() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def test_workers_equal_single_process(assets, tmp_path, monkeypatch):
    """Two worker processes write the same arrays and manifest hashes as this process (mask: rendered included:
    every worker fits the same classifier); blocks arrive in any order."""
    d, recipe = assets
    monkeypatch.setenv("DATAGEN_SEPARABILITY", "0")
    one = _run(recipe, tmp_path / "one", num=40, workers=1)
    two = _run(recipe, tmp_path / "two", num=40, workers=2)
    assert one.written_samples == two.written_samples == 40
    a, b = _read_zarr(tmp_path / "one"), _read_zarr(tmp_path / "two")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert _hashes(tmp_path / "one") == _hashes(tmp_path / "two") and len(_hashes(tmp_path / "two")) == 5
    from datagen.validate import validate_dataset

    assert validate_dataset(tmp_path / "two").ok


def test_plan_processes_rule():
    from datagen.engines.processes import plan_processes

    def wt(workers, threads=None, **kw):
        plan = plan_processes(workers, threads, **{"device_type": "cpu", "cores": 2, **kw})
        return plan.workers, plan.threads

    mpx = 65536 / 1e6  # one 256-px sample
    assert wt("auto", blocks=8, megapixels=128 * mpx) == (2, 1)  # a single-threaded worker per core
    assert wt("auto", blocks=4, megapixels=64 * mpx) == (1, None)  # under 4 Mpx per worker: this process
    assert wt("auto", blocks=3, megapixels=1e3) == (1, None)  # under 2 blocks per worker: this process
    assert wt("auto", blocks=64, cores=16) == (16, 1)
    assert wt("auto", blocks=10, cores=16) == (5, 3)
    assert wt("auto", blocks=64, cores=16, device_type="cuda") == (1, None)
    assert wt("auto", blocks=64, cores=16, worker_bytes=4 << 30, memory=16 << 30) == (3, 5)  # as many as fit in 80 %
    assert wt(3, 2, blocks=64) == (3, 2)
    assert wt(4, blocks=2) == (2, 1)  # never more workers than blocks
    assert wt(1, blocks=8) == (1, None)  # this process keeps its own threads


def test_workers_option_errors(assets, tmp_path, capsys):
    d, recipe = assets
    from datagen.errors import UsageError

    for bad in (0, -1, "many", 1.5):
        with pytest.raises(UsageError) as e:
            _run(recipe, tmp_path / "o", num=8, workers=bad)
        assert e.value.param == "workers"
    with pytest.raises(UsageError) as e:
        _run(recipe, tmp_path / "o", num=8, threads=0)
    assert e.value.param == "threads"
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["generate", str(recipe), "--out", str(tmp_path / "o"), "--num", "8", "--workers", "0"])
    assert "--workers: expected a number of processes >= 1 or 'auto'" in capsys.readouterr().err


def test_worker_error_is_one_line(assets, tmp_path, monkeypatch, capsys):
    """A worker that fails (here: the library is damaged after this process checked it) stops the run with
    the worker's own error, rendered by the CLI as one line; no worker is left behind."""
    from datagen.engines import processes

    d, recipe = assets
    lib = tmp_path / "lib"
    import shutil

    shutil.copytree(d / "library", lib)
    r = tmp_path / "recipe.yaml"
    r.write_text(recipe.read_text().replace("library: library", f"library: {lib}"))
    start = processes.RenderPool.__init__

    def damage_then_start(self, *a, **k):
        for f in lib.rglob("*"):
            if f.is_file():
                f.write_bytes(b"not a library")
        start(self, *a, **k)

    monkeypatch.setattr(processes.RenderPool, "__init__", damage_then_start)
    rc = main(["generate", str(r), "--out", str(tmp_path / "o"), "--num", "16", "--block-size", "4", "--workers",
               "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.strip().splitlines() if ": warning: " not in line]  # the tiny library's classes
    assert len(lines) == 1 and lines[0].startswith("datagen generate: error: ") and "Traceback" not in err, err
    assert "lib/library.yaml: expected a mapping" in lines[0]
    assert _workers_of(os.getpid()) == []
    assert _done_blocks(tmp_path / "o") == 0


@pytest.fixture(scope="module")
def layout_masks(assets, tmp_path_factory):
    """The test recipe with ``mask: layout`` (no classifier to fit in every worker: faster) and a reference
    dataset of it from this process: 64 samples, seed 7, batches of 8, 16 blocks of 4."""
    d, recipe = assets
    r = d / "layout-masks.yaml"
    r.write_text(recipe.read_text() + "paint: {mask: layout}\n")
    ref = tmp_path_factory.mktemp("ref") / "ref"
    generate(r, ref, num=64, seed=7, batch_size=8, block_size=4, progress=False, workers=1)
    return r, ref


def _equal_datasets(out, ref) -> None:
    a, b = _read_zarr(out), _read_zarr(ref)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert _hashes(out) == _hashes(ref)


def test_worker_killed_keeps_blocks_and_resumes(layout_masks, tmp_path, monkeypatch):
    """A worker killed mid-run (out of memory, kill -9) is a DatagenError naming it; the blocks written so far
    are kept and a resumed run with workers finishes the dataset, equal to a run in this process."""
    from datagen import generate as gen_mod
    from datagen.errors import DatagenError

    recipe, ref = layout_masks
    out = tmp_path / "o"
    put = gen_mod._BlockSink.put

    def kill_a_worker_on_first_block(self, *a, **k):
        put(self, *a, **k)
        workers = _workers_of(os.getpid())
        if workers:
            os.kill(workers[0], signal.SIGKILL)

    monkeypatch.setenv("DATAGEN_SEPARABILITY", "0")
    monkeypatch.setattr(gen_mod._BlockSink, "put", kill_a_worker_on_first_block)
    kw = dict(num=64, seed=7, batch_size=8, block_size=4, progress=False, workers=2)
    with pytest.raises(DatagenError, match=r"render worker datagen-render-\d \(pid \d+\) was killed by signal 9"):
        generate(recipe, out, **kw)
    monkeypatch.setattr(gen_mod._BlockSink, "put", put)
    assert _workers_of(os.getpid()) == []
    kept = _hashes(out)
    assert 1 <= len(kept) < 16
    rep = generate(recipe, out, resume=True, **kw)
    assert rep.skipped_blocks == len(kept) and rep.written_samples == 64 - 4 * len(kept)
    _equal_datasets(out, ref)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_parent_killed_or_interrupted_with_workers(layout_masks, tmp_path, monkeypatch, sig):
    """kill -9 of the parent: its workers exit by themselves. Ctrl-C (SIGINT to the whole process group, as a
    terminal sends it): exit status 130, one message, no traceback from any worker, workers gone. Either way
    --resume finishes the dataset, equal to a run in this process."""
    recipe, ref = layout_masks
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "datagen.cli", "generate", str(recipe), "--out", str(out), "--num", "64",
           "--seed", "7", "--batch-size", "8", "--block-size", "4", "--workers", "2", "--quiet"]
    monkeypatch.setenv("DATAGEN_SEPARABILITY", "0")
    # SIGINT at its default in the child, as under a terminal: a test run started as a background job
    # (`cmd &`, nohup) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not _done_blocks(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    # freeze parent and workers where they are, so a fast machine cannot finish the run between seeing
    # the first block and the signal; the signal stays pending and is delivered when they continue
    os.killpg(proc.pid, signal.SIGSTOP)
    workers = _workers_of(proc.pid)
    if sig == signal.SIGKILL:
        proc.kill()
    else:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        os.killpg(proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    assert 0 < _done_blocks(out) < 16, "the run ended before it was stopped"
    assert len(workers) == 2
    assert _wait_gone(workers) == []
    if sig == signal.SIGINT:
        assert "Traceback" not in err and "completed blocks are kept" in err, err
    assert main(cmd[3:] + ["--resume"]) == 0
    _equal_datasets(out, ref)


def test_bf16_precision_is_recorded_close_and_not_mixed(assets, tmp_path, monkeypatch):
    """--precision bf16 renders under bfloat16 autocast on the CPU: pixels near the float32 ones but not
    all equal, the setting in attrs (so in the fingerprint: a resume with another precision is refused),
    and worker processes render it too (same arrays as this process)."""
    d, recipe = assets
    monkeypatch.setenv("DATAGEN_SEPARABILITY", "0")
    _run(recipe, tmp_path / "fp32", num=16)
    _run(recipe, tmp_path / "bf16", num=16, precision="bf16", workers=1)
    _run(recipe, tmp_path / "bf16w", num=16, precision="bf16", workers=2)
    (i32, m32, a32), (i16, m16, a16), (iw, mw, _) = (_read_zarr(tmp_path / n) for n in ("fp32", "bf16", "bf16w"))
    info16 = json.loads((tmp_path / "bf16" / "info.json").read_text())["info"]
    info32 = json.loads((tmp_path / "fp32" / "info.json").read_text())["info"]
    assert info16["attrs"]["precision"] == "bf16" and "precision" not in info32["attrs"]
    diff = np.abs(i32.astype(int) - i16.astype(int))
    assert diff.max() > 0 and diff.mean() < 4, (diff.max(), diff.mean())
    np.testing.assert_array_equal(i16, iw)  # workers got the precision
    np.testing.assert_array_equal(m16, mw)
    with pytest.raises(DatagenError, match="attrs.precision"):
        _run(recipe, tmp_path / "bf16", num=16, resume=True)  # float32 would mix into a bf16 dataset
    with pytest.raises(UsageError, match="fp32"):
        _run(recipe, tmp_path / "bad", num=16, precision="int8")
