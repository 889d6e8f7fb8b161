"""Issue 15: one writer per output (locks), resume that verifies and repairs, readers that never return
zeros for missing data, temporary files cleaned up."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from conftest import make_tiny_assets
from test_writers import make_info, sample_data, write_all

from datagen.data import SegmentationDataset
from datagen.errors import DatagenError
from datagen.generate import RepairWarning, generate
from datagen.validate import validate_dataset
from datagen.writers import open_writer, read_manifest
from datagen.writers.lock import OutputLockedError, lock_holder

FORMATS = ["zarr", "tiff"]
#: Where the zarr group of an output is (beside info.json and manifest/).
ZARR = "data.zarr/"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets")
    return d, make_tiny_assets(d, cells="[3, 8]")


def _gen(recipe, out, fmt="zarr", **kw):
    return generate(recipe, out, num=24, seed=3, format=fmt, batch_size=8, block_size=8, progress=False, **kw)


def _files(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "manifest" not in p.parts and ".datagen-locks" not in p.parts}


# ---- part 1: locks ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_second_writer_is_refused_with_holder(tmp_path, fmt):
    info = make_info(n=8, block_size=4)
    out = tmp_path / "o"
    with open_writer(fmt, out, info):
        for resume in (False, True):
            with pytest.raises(OutputLockedError) as e:
                open_writer(fmt, out, info, resume=resume)
            msg = str(e.value)
            assert f"pid {os.getpid()}" in msg and "being written by" in msg and "started" in msg
        assert lock_holder(out) is not None
    assert lock_holder(out) is None
    with open_writer(fmt, out, info, resume=True) as w:  # released on close
        w.write_block(0, *sample_data(info, 0))


def test_shards_write_side_by_side_but_not_twice(tmp_path):
    info = make_info(n=16, block_size=4)
    out = tmp_path / "o"
    w0 = open_writer("zarr", out, info, shard_index=0, num_shards=2)
    w1 = open_writer("zarr", out, info, shard_index=1, num_shards=2)
    try:
        with pytest.raises(OutputLockedError, match="shard 0 of this output"):
            open_writer("zarr", out, info, resume=True, shard_index=0, num_shards=2)
        with pytest.raises(OutputLockedError, match="splits the output into 2 shard"):
            open_writer("zarr", out, info, resume=True, shard_index=2, num_shards=3)
        for w in (w0, w1):
            for b in w.pending_blocks():
                w.write_block(b, *sample_data(info, b))
    finally:
        w0.close()
        w1.close()
    assert validate_dataset(out).ok


def test_lock_released_when_holder_is_killed(tmp_path):
    info = make_info(n=8, block_size=4)
    out = tmp_path / "o"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_writers import make_info
        from datagen.writers import open_writer
        w = open_writer("tiff", {str(out)!r}, make_info(n=8, block_size=4))
        print("ready", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        with pytest.raises(OutputLockedError, match=f"pid {p.pid} on host"):
            open_writer("tiff", out, info, resume=True)
    finally:
        p.send_signal(signal.SIGKILL)
        rc = p.wait()
    assert rc == -signal.SIGKILL  # killed while it held the lock, not exited on its own
    with open_writer("tiff", out, info, resume=True) as w:  # the kernel dropped the dead process's lock
        assert w.pending_blocks() == [0, 1]


def test_two_cli_runs_into_one_output(assets, tmp_path):
    """A second `datagen generate` into an output being written fails at once with a clear message."""
    _, recipe = assets
    out = tmp_path / "o"
    info_args = ["--num", "8000", "--block-size", "8", "--quiet"]  # long enough to outlive the second runs
    first = subprocess.Popen([sys.executable, "-m", "datagen.cli", "generate", str(recipe), "--out", str(out), *info_args],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while lock_holder(out) is None and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert lock_holder(out) is not None, "first run never took the lock"
        for extra in ([], ["--resume"]):
            second = subprocess.run([sys.executable, "-m", "datagen.cli", "generate", str(recipe), "--out", str(out),
                                     *info_args, *extra], capture_output=True, text=True, timeout=300)
            assert second.returncode == 2, second.stderr
            assert "is being written by pid" in second.stderr and "Traceback" not in second.stderr
        deadline = time.time() + 120
        while not read_manifest(out).completed_blocks() and first.poll() is None and time.time() < deadline:
            time.sleep(0.02)  # kill -9 once the first run has recorded a block
    finally:
        first.send_signal(signal.SIGKILL)
        rc = first.wait()
    assert rc == -signal.SIGKILL, "the first run ended before it was killed"
    assert 0 < len(read_manifest(out).completed_blocks()) < 1000  # the kill landed mid-run (8000 samples, 8 a block)
    # every block the killed run recorded is intact
    report = validate_dataset(out, check_data=True)
    assert not [e for e in report.errors if "incomplete" not in e]


@pytest.mark.parametrize("fmt", FORMATS)
def test_recorded_block_is_never_overwritten(tmp_path, fmt):
    info = make_info(n=8, block_size=4)
    out = tmp_path / "o"
    with open_writer(fmt, out, info) as w:
        w.write_block(0, *sample_data(info, 0))
    before = _files(out)
    with open_writer(fmt, out, info, resume=True) as w:
        with pytest.raises(DatagenError, match="block 0 is already complete"):
            w.write_block(0, *sample_data(info, 0, salt=5))
    assert _files(out) == before


# ---- part 2: verify on resume, verify on read, temporary files -----------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_repairs_damaged_blocks(assets, tmp_path, fmt):
    _, recipe = assets
    out = tmp_path / "o"
    _gen(recipe, out, fmt)
    good = _files(out)
    data = [f for f in good if "/c/" in f or f.startswith("shards/")]
    flipped = sorted(f for f in data if "1" in f.split("/")[3 if fmt == "zarr" else 1])[0]  # a block-1 file
    b = bytearray((out / flipped).read_bytes())
    b[len(b) // 2] ^= 0x01
    (out / flipped).write_bytes(bytes(b))
    deleted = ZARR + "masks/c/2/0/0" if fmt == "zarr" else "shards/block-000002.tif"
    (out / deleted).unlink()
    assert not validate_dataset(out).ok

    with pytest.warns(RepairWarning) as rec:
        rep = _gen(recipe, out, fmt, resume=True)
    assert sorted(rep.repaired_blocks) == [1, 2]
    assert "missing" in rep.repaired_blocks[2] and deleted in rep.repaired_blocks[2]
    assert "checksum" in rep.repaired_blocks[1] or "bytes" in rep.repaired_blocks[1]
    assert any("block 2 failed verification" in str(r.message) for r in rec)
    assert rep.written_samples == 16
    assert validate_dataset(out).ok
    assert _files(out) == good  # byte-identical to the undamaged output
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepairWarning)
        assert _gen(recipe, out, fmt, resume=True).written_samples == 0  # nothing left to repair


def test_resume_verify_full_catches_what_files_check_cannot(assets, tmp_path):
    """A block whose files match but whose manifest sample hashes do not is caught only by --verify full."""
    _, recipe = assets
    out = tmp_path / "o"
    _gen(recipe, out, "zarr")
    part = next((out / "manifest").glob("*.jsonl"))
    lines = part.read_text().splitlines()
    doc = json.loads(lines[0])
    doc["sha256"][0] = "0" * 64
    part.write_text("\n".join([json.dumps(doc, separators=(",", ":"))] + lines[1:]) + "\n")
    assert _gen(recipe, out, "zarr", resume=True).repaired_blocks == {}
    with pytest.warns(RepairWarning, match="block 0 failed verification"):
        rep = _gen(recipe, out, "zarr", resume=True, verify="full")
    assert list(rep.repaired_blocks) == [0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_raises_on_deleted_or_corrupted_data(tmp_path, fmt):
    info = make_info(n=12, block_size=4)
    out = tmp_path / "o"
    write_all(fmt, out, info)
    ds = SegmentationDataset(out, return_tensors=False)
    img, _ = ds[5]
    np.testing.assert_array_equal(img, sample_data(info, 1)[0][1])

    deleted = ZARR + "masks/c/2/0/0" if fmt == "zarr" else "shards/block-000002.tif"
    (out / deleted).unlink()
    ds = SegmentationDataset(out, return_tensors=False)
    with pytest.raises(DatagenError) as e:
        ds[9]
    msg = str(e.value)
    assert f"dataset {out}" in msg and "sample 9 (block 2)" in msg and deleted in msg and "resume=True" in msg

    # flip one byte inside block 1's data without changing its size
    f = out / (ZARR + "images/c/1/0/0/0" if fmt == "zarr" else "shards/block-000001.tif")
    b = bytearray(f.read_bytes())
    b[len(b) // 3] ^= 0x10
    f.write_bytes(bytes(b))
    ds = SegmentationDataset(out, return_tensors=False)
    bad = 0
    for i in range(4, 8):
        try:
            ds[i]
        except DatagenError as exc:
            assert "(block 1)" in str(exc) and f"sample {i}" in str(exc)
            bad += 1
    assert bad >= 1
    ds[0]  # undamaged blocks still read


@pytest.mark.parametrize("fmt", FORMATS)
def test_temporary_files_cleaned_on_resume_and_success(tmp_path, fmt):
    info = make_info(n=8, block_size=4)
    out = tmp_path / "o"
    with open_writer(fmt, out, info) as w:
        w.write_block(0, *sample_data(info, 0))
    # leftovers of a killed writer: its own temp files, an old-style one and a zarr partial
    (out / ".datagen-tmp-w0-store-dead").mkdir()
    (out / ".datagen-tmp-w0-store-dead" / "junk").write_bytes(b"x")
    (out / ".datagen-tmp-info.json.123").write_bytes(b"x")
    if fmt == "zarr":
        (out / ZARR / "images" / "c" / "1" / "0" / "0").mkdir(parents=True)
        (out / ZARR / "images" / "c" / "1" / "0" / "0" / "0.abc.partial").write_bytes(b"x")
        (out / ZARR / ".datagen-tmp-w0-zarr.json.abc").write_bytes(b"x")  # an interrupted metadata write
    else:
        (out / "shards" / ".datagen-tmp-block-000001.tif.abc").write_bytes(b"x")
    assert validate_dataset(out, check_data=False).warnings
    with open_writer(fmt, out, info, resume=True) as w:
        assert w.cleaned
        w.write_block(1, *sample_data(info, 1))
    report = validate_dataset(out)
    assert report.ok and not report.warnings, report.format()
    left = [p for p in out.rglob("*") if p.name.startswith(".datagen-tmp") or p.name.endswith(".partial")]
    assert left == []


# ---- part 7: determinism -------------------------------------------------------------------------


def test_repeat_runs_are_byte_identical(assets, tmp_path):
    """The same command five times (the CLI's own thread count, not the tests' 1; some runs on a machine
    kept busy by another process, as in issue 15) -> identical bytes."""
    _, recipe = assets
    env = {**os.environ, "DATAGEN_SEPARABILITY": "0"}
    outs = []
    for k in range(5):
        out = tmp_path / f"r{k}"
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if k % 2 == 0 else None
        try:
            p = subprocess.run([sys.executable, "-m", "datagen.cli", "generate", str(recipe), "--out", str(out),
                                "--num", "16", "--block-size", "8", "--quiet"], capture_output=True, text=True,
                               env=env, timeout=600)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        assert p.returncode == 0, p.stderr
        outs.append(_files(out))
    for other in outs[1:]:
        assert other == outs[0]


def test_render_does_not_depend_on_thread_count(assets):
    """Images and masks (mask: rendered, classifier fit included) are the same with 1, 2 or 3 threads."""
    import torch

    from datagen.generate import prepare

    _, recipe = assets
    before = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            r = prepare(recipe, num=8, seed=11, check_separability=False).renderer
            idx = list(range(8))
            results.append(r.render_pairs(idx, np.stack([r.make_layout(i) for i in idx])))
    finally:
        torch.set_num_threads(before)
    for images, masks in results[1:]:
        np.testing.assert_array_equal(images, results[0][0])
        np.testing.assert_array_equal(masks, results[0][1])


# ---- part 6: resume across folders; batch size ---------------------------------------------------


def test_resume_with_recipe_copy_elsewhere_and_relative_path(assets, tmp_path, monkeypatch):
    d, recipe = assets
    out = tmp_path / "o"
    generate(recipe, out, num=24, seed=3, batch_size=8, block_size=8, progress=False)
    # an identical copy of the recipe next to the same library, named by a relative path
    (out / "manifest" / next((out / "manifest").glob("*.jsonl")).name).write_text(
        next((out / "manifest").glob("*.jsonl")).read_text().splitlines()[0] + "\n")  # only block 0 recorded
    monkeypatch.chdir(d)
    copy = d / "sub"
    copy.mkdir(exist_ok=True)
    (copy / "library").symlink_to(d / "library") if not (copy / "library").exists() else None
    (copy / "recipe.yaml").write_text(recipe.read_text())
    rep = generate("sub/recipe.yaml", out, num=24, seed=3, batch_size=8, block_size=8, progress=False, resume=True)
    assert rep.skipped_blocks == 1 and rep.written_samples == 16
    assert validate_dataset(out).ok


def test_other_batch_size_is_part_of_the_fingerprint(assets, tmp_path):
    _, recipe = assets
    out = tmp_path / "o"
    generate(recipe, out, num=16, seed=3, batch_size=8, block_size=8, progress=False)
    with pytest.raises(DatagenError, match=r"attrs\.batch_size: existing 8, new 4"):
        generate(recipe, out, num=16, seed=3, batch_size=4, block_size=8, progress=False, resume=True)
