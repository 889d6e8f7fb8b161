"""Writers (zarr, TIFF), manifest, resume, concurrency and validation."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tiffslide
import zarr

from datagen.errors import ConfigError, DatagenError
from datagen.validate import validate_dataset
from datagen.writers import (
    WRITERS,
    DatasetInfo,
    blocks_for_worker,
    blocks_left,
    instance_map,
    open_reader,
    open_writer,
    read_manifest,
    sample_sha256,
)

FORMATS = ["zarr", "tiff"]
CLASSES = [
    {"id": 0, "name": "background", "color": "#000000"},
    {"id": 1, "name": "tree", "color": "#00ff00"},
    {"id": 5, "name": "sky", "color": "#0000FF"},
]


def make_info(n: int = 10, h: int = 20, w: int = 24, block_size: int = 4, instances: bool = False,
              **attrs) -> DatasetInfo:
    return DatasetInfo(
        num_samples=n,
        height=h,
        width=w,
        classes=CLASSES,
        block_size=block_size,
        attrs={"seed": 7, "recipe": "layers: [x]", "model": "toy", "layer": 3, **attrs},
        instances=instances,
    )


def sample_data(info: DatasetInfo, block: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic data for a block (so independent runs write identical content)."""
    r = info.block_range(block)
    rng = np.random.default_rng([block, salt])
    images = rng.integers(0, 256, (len(r), info.height, info.width, 3), dtype=np.uint8)
    masks = rng.choice(np.array(info.class_ids, dtype=np.uint8), size=(len(r), info.height, info.width))
    return images, masks


def write_all(fmt: str, path: Path, info: DatasetInfo, blocks=None, **kw):
    with open_writer(fmt, path, info, **kw) as w:
        for b in w.pending_blocks() if blocks is None else blocks:
            w.write_block(b, *sample_data(info, b))
    return w


def all_data(info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    parts = [sample_data(info, b) for b in range(info.num_blocks)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def tree(path: Path) -> dict[str, bytes]:
    """Relative path -> content of the data files of an output (manifest and tmp files excluded)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and "manifest" not in p.parts and not p.name.startswith(".datagen-tmp")
    }


# ---- DatasetInfo and blocks ------------------------------------------------------------


def test_info_roundtrip_and_blocks():
    info = make_info(n=10, block_size=4)
    assert info.num_blocks == 3
    assert [list(info.block_range(b)) for b in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert info.block_of(9) == 2
    again = DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert again == info and again.fingerprint() == info.fingerprint()
    assert info.classes[2]["color"] == "#0000ff"  # normalised
    # volatile attrs do not change the fingerprint, others do
    assert make_info(hostname="a", created="now").fingerprint() == info.fingerprint()
    assert make_info(seed=8).fingerprint() != info.fingerprint()
    assert make_info(n=11).fingerprint() != info.fingerprint()


@pytest.mark.parametrize(
    ("classes", "field"),
    [
        ([{"id": 300, "name": "x", "color": "#000000"}], "classes[0].id"),
        ([{"id": 1, "name": "x", "color": "red"}], "classes[0].color"),
        ([{"id": 1, "name": "a", "color": "#000000"}, {"id": 1, "name": "b", "color": "#000000"}], "classes[1].id"),
    ],
)
def test_info_rejects_bad_class_table(classes, field):
    with pytest.raises(ConfigError) as exc:
        DatasetInfo(num_samples=1, height=2, width=2, classes=classes)
    assert exc.value.field == field


def test_blocks_for_worker_partition():
    info = make_info(n=37, block_size=4)  # 10 blocks, last one short
    parts = [blocks_for_worker(info, k, 3) for k in range(3)]
    assert [r.start // 4 for r in parts[1]] == [1, 4, 7]
    covered = sorted(i for p in parts for r in p for i in r)
    assert covered == list(range(37))
    with pytest.raises(ValueError):
        blocks_for_worker(info, 3, 3)


def test_blocks_left_is_the_one_answer():
    info = make_info(n=37, block_size=4)  # 10 blocks
    assert blocks_left(info, {0, 1, 5}) == [2, 3, 4, 6, 7, 8, 9]
    assert blocks_left(info, {0, 1, 5}, redo={1}) == [1, 2, 3, 4, 6, 7, 8, 9]
    assert blocks_left(info, {1, 4}, shard_index=1, num_shards=3, redo=[4]) == [4, 7]
    assert read_manifest("/nonexistent", info).missing_blocks(info) == list(range(10))


# ---- round trip through each format, read back with the format's own library ----------------


def test_zarr_roundtrip_sharded(tmp_path):
    info = make_info(n=10, block_size=4)
    out = tmp_path / "out"
    write_all("zarr", out, info)
    images, masks = all_data(info)
    root = zarr.open_group(str(out / "data.zarr"), mode="r")
    zi, zm = root["images"], root["masks"]
    assert zi.shape == (10, 20, 24, 3) and zi.dtype == np.uint8
    assert zm.shape == (10, 20, 24) and zm.dtype == np.uint8
    assert zi.chunks == (1, 20, 24, 3) and zm.chunks == (1, 20, 24)
    assert zi.shards == (4, 20, 24, 3) and zm.shards == (4, 20, 24)
    np.testing.assert_array_equal(zi[:], images)
    np.testing.assert_array_equal(zm[:], masks)
    # compressed with zstd inside the shards
    codecs = json.loads((out / "data.zarr" / "images" / "zarr.json").read_text())["codecs"]
    assert codecs[0]["name"] == "sharding_indexed"
    assert [c["name"] for c in codecs[0]["configuration"]["codecs"]] == ["bytes", "zstd"]
    # sharding really on: exactly one shard file per block and array
    shard_files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "/c/" in str(p))
    assert shard_files == sorted(
        [f"data.zarr/images/c/{b}/0/0/0" for b in range(3)] + [f"data.zarr/masks/c/{b}/0/0" for b in range(3)]
    )
    attrs = dict(root.attrs)
    assert attrs["classes"] == info.to_dict()["classes"]
    assert attrs["seed"] == 7 and attrs["block_size"] == 4
    assert "recipe" not in attrs and len(attrs["recipe_sha256"]) == 64  # the text is stored once, in info.json
    assert attrs["datagen"]["fingerprint"] == info.fingerprint()


def test_zarr_all_background_mask_still_one_shard(tmp_path):
    info = make_info(n=4, block_size=4)
    with open_writer("zarr", tmp_path / "o", info) as w:
        images, masks = sample_data(info, 0)
        w.write_block(0, images, np.zeros_like(masks))
    assert (tmp_path / "o" / "data.zarr" / "masks" / "c" / "0" / "0" / "0").is_file()
    assert validate_dataset(tmp_path / "o").ok


def test_tiff_roundtrip_tifffile_and_tiffslide(tmp_path):
    info = make_info(n=10, h=300, w=260, block_size=4)  # > one 256 tile each way
    out = tmp_path / "out"
    write_all("tiff", out, info)
    images, masks = all_data(info)
    files = sorted(p.name for p in (out / "shards").iterdir())
    assert files == ["block-000000.tif", "block-000001.tif", "block-000002.tif"]
    with tifffile.TiffFile(out / "shards" / "block-000001.tif") as tf:
        assert len(tf.pages) == 8
        for j in range(4):
            img_page, mask_page = tf.pages[2 * j], tf.pages[2 * j + 1]
            np.testing.assert_array_equal(img_page.asarray(), images[4 + j])
            np.testing.assert_array_equal(mask_page.asarray(), masks[4 + j])
            assert img_page.is_tiled and (img_page.tilewidth, img_page.tilelength) == (256, 256)
            assert img_page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            assert mask_page.dtype == np.uint8 and mask_page.shape == (300, 260)
            d_img = json.loads(img_page.description)
            d_mask = json.loads(mask_page.description)
            assert d_img["datagen"]["sample"] == 4 + j and d_img["datagen"]["kind"] == "image"
            assert d_mask["datagen"]["sample"] == 4 + j and d_mask["datagen"]["kind"] == "mask"
        first = json.loads(tf.pages[0].description)["datagen"]
        assert first["classes"] == info.to_dict()["classes"]
        assert [s.name for s in tf.series[:2]] == ["image-000004", "mask-000004"]
    # tiffslide: the first image is the slide; every other page is a named associated image
    with tiffslide.TiffSlide(out / "shards" / "block-000002.tif") as slide:
        assert slide.dimensions == (260, 300)
        region = np.asarray(slide.read_region((250, 10), 0, (10, 280), as_array=True))
        np.testing.assert_array_equal(region[..., :3], images[8, 10:290, 250:260])
        assert set(slide.associated_images) == {"mask-000008", "image-000009", "mask-000009"}
        np.testing.assert_array_equal(np.asarray(slide.associated_images["mask-000009"]), masks[9])


def test_tiff_openslide_if_installed(tmp_path):
    openslide = pytest.importorskip("openslide")
    info = make_info(n=2, h=300, w=260, block_size=2)
    write_all("tiff", tmp_path / "o", info)
    images, _ = all_data(info)
    slide = openslide.OpenSlide(str(tmp_path / "o" / "shards" / "block-000000.tif"))
    try:
        assert slide.dimensions == (260, 300)
        region = np.asarray(slide.read_region((0, 0), 0, (260, 300)).convert("RGB"))
        np.testing.assert_array_equal(region, images[0])
    finally:
        slide.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_and_manifest(tmp_path, fmt):
    info = make_info()
    write_all(fmt, tmp_path / "o", info)
    images, masks = all_data(info)
    m = read_manifest(tmp_path / "o", info)
    assert m.completed_blocks() == {0, 1, 2} and not m.warnings
    assert m.hashes(2) == [tuple(sample_sha256(images[i], masks[i]) for i in (8, 9))]
    reader = open_reader(tmp_path / "o")
    img, mask = reader.read_sample(6)
    np.testing.assert_array_equal(img, images[6])
    np.testing.assert_array_equal(mask, masks[6])
    info_doc = json.loads((tmp_path / "o" / "info.json").read_text())
    assert info_doc["format"] == fmt and DatasetInfo.from_dict(info_doc["info"]) == info


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_block_rejects_bad_input(tmp_path, fmt):
    info = make_info()
    with open_writer(fmt, tmp_path / "o", info) as w:
        images, masks = sample_data(info, 0)
        with pytest.raises(ValueError, match="images must be uint8"):
            w.write_block(0, images[:3], masks)
        with pytest.raises(ValueError, match="masks must be uint8"):
            w.write_block(0, images, masks.astype(np.int64))
        bad = masks.copy()
        bad[0, 0, 0] = 9
        with pytest.raises(ValueError, match=r"ids \[9\]"):
            w.write_block(0, images, bad)
        with pytest.raises(IndexError):
            w.write_block(3, images, masks)
    assert w.completed_blocks() == set()


# ---- resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_after_kill(tmp_path, fmt):
    info = make_info(n=14, block_size=4)  # 4 blocks
    out = tmp_path / "o"
    with open_writer(fmt, out, info) as w:
        w.write_block(0, *sample_data(info, 0))
        w.write_block(1, *sample_data(info, 1))
        # (a) block 2's data is written, but the process dies before its manifest line
        w._write_data(2, *sample_data(info, 2, salt=99))
    # (b) the manifest's last line (block 1) was cut short by the kill
    part = next((out / "manifest").glob("*.jsonl"))
    text = part.read_bytes()
    part.write_bytes(text[: len(text) - 30])
    m = read_manifest(out, info)
    assert m.completed_blocks() == {0}
    assert any("truncated" in w_ for w_ in m.warnings)
    report = validate_dataset(out)
    assert not report.ok and "incomplete" in report.errors[0]
    # blocks 1 and 2 have data files but no (complete) manifest line
    assert any("2 block(s) have data files but are not in the manifest" in w_ for w_ in report.warnings)

    with pytest.raises(DatagenError, match="already contains data"):
        open_writer(fmt, out, info)  # resume=False over existing data
    with open_writer(fmt, out, info, resume=True) as w:
        assert w.completed_blocks() == {0}
        assert w.pending_blocks() == [1, 2, 3]
        for b in w.pending_blocks():
            w.write_block(b, *sample_data(info, b))
        assert w.completed_blocks() == {0, 1, 2, 3}
    report = validate_dataset(out)
    assert report.ok, report.format()
    assert report.complete and report.samples_checked == 14
    # the result equals an uninterrupted run
    write_all(fmt, tmp_path / "ref", info)
    assert tree(out).keys() == tree(tmp_path / "ref").keys()
    if fmt == "tiff":  # TIFF files are byte-for-byte reproducible
        assert tree(out) == tree(tmp_path / "ref")
    ra, rb = open_reader(out), open_reader(tmp_path / "ref")
    for b in range(info.num_blocks):
        for x, y in zip(ra.read_block(b), rb.read_block(b), strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_fingerprint_mismatch_names_difference(tmp_path, fmt):
    out = tmp_path / "o"
    write_all(fmt, out, make_info(), blocks=[0])
    with pytest.raises(ConfigError) as exc:
        open_writer(fmt, out, make_info(seed=8), resume=True)
    msg = str(exc.value)
    assert "attrs.seed: existing 7, new 8" in msg and "info.json" in msg
    with pytest.raises(ConfigError, match="num_samples: existing 10, new 12"):
        open_writer(fmt, out, make_info(n=12), resume=True)
    # volatile attrs may differ
    with open_writer(fmt, out, make_info(hostname="elsewhere"), resume=True) as w:
        assert w.completed_blocks() == {0}


def test_format_mismatch_is_refused(tmp_path):
    write_all("zarr", tmp_path / "o", make_info(), blocks=[0])
    with pytest.raises(ConfigError, match="'zarr' dataset"):
        open_writer("tiff", tmp_path / "o", make_info(), resume=True)
    with pytest.raises(ConfigError, match="unknown output format"):
        open_writer("png", tmp_path / "x", make_info())
    assert not (tmp_path / "x").exists()


# ---- refusing bad output locations ----------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_refuses_non_datagen_directory(tmp_path, fmt):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DatagenError, match="not a datagen dataset"):
        open_writer(fmt, out, make_info())
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_existing_directory_is_fine(tmp_path, fmt):
    (tmp_path / "o").mkdir()
    write_all(fmt, tmp_path / "o", make_info())
    assert validate_dataset(tmp_path / "o").ok


@pytest.mark.parametrize("fmt", FORMATS)
def test_unwritable_output_leaves_nothing(tmp_path, fmt):
    f = tmp_path / "afile"
    f.write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DatagenError, match="is a file"):
        open_writer(fmt, f / "sub" / "out", make_info())
    with pytest.raises(DatagenError, match="not a directory"):
        open_writer(fmt, f, make_info())
    assert sorted(p.name for p in tmp_path.iterdir()) == before and f.read_text() == "keep me"


@pytest.mark.parametrize("fmt", FORMATS)
def test_readonly_directory(tmp_path, fmt):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK) and os.geteuid() == 0:
            # root ignores permission bits; use a file system root cannot write either
            if not Path("/proc/self").is_dir():
                pytest.skip("running as root without /proc: no unwritable location to test")
            target = Path("/proc/datagen-out")
        else:
            target = ro / "out"
        with pytest.raises(DatagenError, match="cannot create output directory|not writable"):
            open_writer(fmt, target, make_info())
        assert not target.exists()
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(ro, 0o755)


# ---- several writers ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_shards_equal_single_writer(tmp_path, fmt):
    info = make_info(n=18, block_size=4)  # 5 blocks
    out = tmp_path / "multi"
    w0 = open_writer(fmt, out, info, shard_index=0, num_shards=2)
    w1 = open_writer(fmt, out, info, shard_index=1, num_shards=2)  # joins (resume=False is fine)
    assert w0.pending_blocks() == [0, 2, 4] and w1.pending_blocks() == [1, 3]
    for b in w1.pending_blocks()[:1]:  # interleave the two
        w1.write_block(b, *sample_data(info, b))
    for b in w0.pending_blocks():
        w0.write_block(b, *sample_data(info, b))
    for b in w1.pending_blocks():
        w1.write_block(b, *sample_data(info, b))
    w0.close()
    w1.close()
    assert len(list((out / "manifest").glob("part-*.jsonl"))) == 2
    report = validate_dataset(out)
    assert report.ok and report.complete, report.format()
    single = tmp_path / "single"
    write_all(fmt, single, info)
    ra, rb = open_reader(out), open_reader(single)
    for b in range(info.num_blocks):
        for x, y in zip(ra.read_block(b), rb.read_block(b), strict=True):
            np.testing.assert_array_equal(x, y)
    assert read_manifest(out, info).entries.keys() == read_manifest(single, info).entries.keys()
    assert {b: read_manifest(out, info).hashes(b) for b in range(5)} == {
        b: read_manifest(single, info).hashes(b) for b in range(5)
    }


def _worker(fmt: str, out: str, shard: int, shards: int) -> None:
    info = make_info(n=18, block_size=4)
    with open_writer(fmt, out, info, shard_index=shard, num_shards=shards) as w:
        for b in w.pending_blocks():
            w.write_block(b, *sample_data(info, b))


@pytest.mark.parametrize("fmt", FORMATS)
def test_concurrent_processes_create_race(tmp_path, fmt):
    """Three processes start on the same (absent) output at once; all must succeed."""
    out = str(tmp_path / "race")
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    procs = [ctx.Process(target=_worker, args=(fmt, out, k, 3)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    report = validate_dataset(out)
    assert report.ok and report.complete, report.format()
    assert not [p for p in Path(out).rglob("*") if p.name.startswith(".datagen-tmp")]


# ---- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_validate_detects_corruption_and_bad_ids(tmp_path, fmt):
    info = make_info(n=8, block_size=4)
    out = tmp_path / "o"
    write_all(fmt, out, info)
    good = validate_dataset(out)
    assert good.ok and good.samples_checked == 8 and good.corrupted_samples == 0
    assert set(good.class_pixels) == {0, 1, 5}
    assert "result: OK" in good.format()

    # rewrite block 1's data behind the manifest's back: sample 5 changed, and with a mask id 3
    images, masks = sample_data(info, 1)
    images[1, 0, 0, 0] ^= 0xFF
    masks[1, 2, 2] = 3
    with open_writer(fmt, out, info, resume=True) as w:
        w._write_data(1, images, masks)  # bypasses write_block's own id check and the manifest
    report = validate_dataset(out)
    assert not report.ok
    assert report.corrupted_samples == 1 and report.bad_mask_samples == 1
    text = report.format()
    assert "sample 5 (block 1): content does not match" in text
    assert "mask has ids [3] not in the class table" in text
    assert "FAILED" in text


def test_validate_missing_and_unreadable(tmp_path):
    info = make_info(n=8, block_size=4)
    out = tmp_path / "o"
    write_all("tiff", out, info)
    (out / "shards" / "block-000001.tif").unlink()
    (out / "shards" / "block-000000.tif").write_bytes(b"not a tiff")
    (out / "shards" / ".datagen-tmp-block-000001.tif.0123").write_bytes(b"half")
    report = validate_dataset(out)
    assert any("temporary file(s) of interrupted writes" in w for w in report.warnings)
    assert not report.ok
    assert any("block 1: in the manifest but its data files are missing" in e for e in report.errors)
    assert any("block 0: cannot read" in e for e in report.errors)
    assert validate_dataset(tmp_path / "nothing").errors
    (tmp_path / "empty").mkdir()
    assert "no info.json" in validate_dataset(tmp_path / "empty").errors[0]


def test_validate_warns_constant_image(tmp_path):
    info = make_info(n=4, block_size=4)
    images, masks = sample_data(info, 0)
    images[2] = 17
    with open_writer("zarr", tmp_path / "o", info) as w:
        w.write_block(0, images, masks)
    report = validate_dataset(tmp_path / "o")
    assert report.ok and report.constant_images == 1
    assert any("sample 2: image is constant" in m for m in report.warnings)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_every_registered_writer_round_trips_through_the_dataset(tmp_path, fmt):
    """Whatever formats are registered, each one's output reads back sample for sample."""
    from datagen.data import SegmentationDataset

    info = make_info(n=6, h=20, w=24, block_size=4)  # a short last block
    write_all(fmt, tmp_path / "o", info)
    images, masks = all_data(info)
    ds = SegmentationDataset(tmp_path / "o", return_tensors=False)
    assert ds.format == fmt and len(ds) == 6
    for i in range(6):
        image, mask = ds[i]
        assert image.dtype == np.uint8 and mask.dtype == np.uint8
        np.testing.assert_array_equal(image, images[i])
        np.testing.assert_array_equal(mask, masks[i])


# ---- zarr hygiene: the group holds only zarr nodes; layout-1 outputs still work ----------------------


@pytest.mark.parametrize("instances", [False, True])
def test_plain_zarr_lists_the_group_without_warnings(tmp_path, instances):
    """info.json, manifest/, locks and temporary files live beside data.zarr/, not in it: zarr-python
    (which skips only zarr.json when listing a group) finds nothing it does not recognise."""
    info = make_info(n=10, block_size=4, instances=instances)
    out = tmp_path / "o"
    with open_writer("zarr", out, info) as w:
        for b in w.pending_blocks():
            w.write_block(b, *sample_data(info, b))
        with warnings.catch_warnings():  # while a writer is at work, too
            warnings.simplefilter("error")
            assert len(list(zarr.open_group(str(out / "data.zarr"), mode="r").members(max_depth=None))) >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        root = zarr.open_group(str(out / "data.zarr"), mode="r")
        names = sorted(name for name, _ in root.members(max_depth=None))
        assert names == sorted(["images", "masks"] + (["instances"] if instances else []))
        assert sorted(root.array_keys()) == sorted(names) and not list(root.group_keys())
        assert root.attrs["instances"] is instances
    assert sorted(p.name for p in out.iterdir()) == [".datagen-locks", "data.zarr", "info.json", "manifest"]


def _to_layout_1(out: Path) -> None:
    """Rewrite a zarr output as version 1 wrote it: the group in the output folder itself."""
    for p in (out / "data.zarr").iterdir():
        p.rename(out / p.name)
    (out / "data.zarr").rmdir()
    doc = json.loads((out / "info.json").read_text())
    (out / "info.json").write_text(json.dumps({**doc, "datagen_dataset": 1}))
    for part in (out / "manifest").glob("*.jsonl"):
        part.write_text(part.read_text().replace('"data.zarr/', '"'))


def test_layout_1_zarr_output_reads_validates_and_resumes(tmp_path):
    from datagen.data import SegmentationDataset

    info = make_info(n=10, block_size=4)
    out = tmp_path / "o"
    write_all("zarr", out, info, blocks=[0, 2])
    _to_layout_1(out)
    report = validate_dataset(out)
    assert report.completed_blocks == 2 and report.samples_checked == 6 and not report.warnings, report.format()
    ds = SegmentationDataset(out, allow_incomplete=True, return_tensors=False)
    np.testing.assert_array_equal(ds[5][1], sample_data(info, 2)[1][1])
    with open_writer("zarr", out, info, resume=True) as w:
        assert w.verify_blocks([0, 2]) == {} and w.pending_blocks() == [1]
        w.write_block(1, *sample_data(info, 1))
    assert validate_dataset(out).ok
    assert not (out / "data.zarr").exists() and (out / "masks" / "c" / "1" / "0" / "0").is_file()
    np.testing.assert_array_equal(np.asarray(zarr.open_group(str(out), mode="r")["masks"][:]), all_data(info)[1])


# ---- instance maps ------------------------------------------------------------------------------------


def _is_instance_map_of(inst: np.ndarray, mask: np.ndarray, ignore: int | None) -> None:
    """Every id is one 4-connected region of one class, regions of one class that touch share an id,
    and 0 is exactly the ignore pixels."""
    from scipy import ndimage

    assert inst.dtype == np.uint32 and inst.shape == mask.shape
    np.testing.assert_array_equal(inst == 0, mask == ignore if ignore is not None else np.zeros_like(mask, bool))
    ids = np.unique(inst[inst > 0])
    assert ids.tolist() == list(range(1, len(ids) + 1))  # dense 1..K
    for i in ids:
        region = inst == i
        assert len(np.unique(mask[region])) == 1
        assert ndimage.label(region)[1] == 1
    same_class = mask[:, 1:] == mask[:, :-1]
    assert np.all((inst[:, 1:] == inst[:, :-1])[same_class])
    same_class = mask[1:] == mask[:-1]
    assert np.all((inst[1:] == inst[:-1])[same_class])


def test_instance_map_is_connected_regions_per_class():
    mask = np.array(
        [
            [1, 1, 0, 1],
            [0, 1, 0, 1],
            [5, 0, 9, 9],
            [5, 1, 0, 9],
        ],
        dtype=np.uint8,
    )
    inst = instance_map(mask, ignore_index=9)
    # class 0: four regions (corners do not connect), class 1: three, class 5: one; ids by class, then raster order
    np.testing.assert_array_equal(
        inst,
        [
            [5, 5, 1, 6],
            [2, 5, 1, 6],
            [8, 3, 0, 0],
            [8, 7, 4, 0],
        ],
    )
    _is_instance_map_of(inst, mask, 9)
    rng = np.random.default_rng(3)
    big = rng.choice(np.array([0, 1, 5, 255], np.uint8), size=(40, 50))
    _is_instance_map_of(instance_map(big, 255), big, 255)
    np.testing.assert_array_equal(instance_map(big, 255), instance_map(big.copy(), 255))  # deterministic
    _is_instance_map_of(instance_map(big), big, None)  # no ignore value: every pixel has an id


@pytest.mark.parametrize("fmt", FORMATS)
def test_instances_round_trip(tmp_path, fmt):
    from datagen.data import SegmentationDataset

    info = make_info(n=10, block_size=4, instances=True)
    info.ignore_index = 255
    info = DatasetInfo.from_dict(info.to_dict())
    out = tmp_path / "o"
    with open_writer(fmt, out, info) as w:
        for b in w.pending_blocks():
            images, masks = sample_data(info, b)
            masks[:, :3, :5] = 255  # some ignore pixels
            w.write_block(b, images, masks)
    doc = json.loads((out / "info.json").read_text())
    assert doc["info"]["instances"] is True and doc["datagen_dataset"] == 2
    assert validate_dataset(out).ok
    reader = open_reader(out)
    masks = np.concatenate([reader.read_block(b)[1] for b in range(info.num_blocks)])
    stored = np.concatenate([reader.read_block_instances(b) for b in range(info.num_blocks)])
    for j in range(10):
        _is_instance_map_of(stored[j], masks[j], 255)
        np.testing.assert_array_equal(reader.read_instances(j), stored[j])
    reader.close()
    if fmt == "zarr":
        arr = zarr.open_group(str(out / "data.zarr"), mode="r")["instances"]
        assert arr.dtype == np.uint32 and arr.shards == (4, 20, 24)
        np.testing.assert_array_equal(arr[:], stored)
    else:
        assert tifffile.imread(out / "shards" / "block-000001-instances.tif", key=slice(None)).dtype == np.uint32
        np.testing.assert_array_equal(
            tifffile.imread(out / "shards" / "block-000001-instances.tif", key=slice(None)), stored[4:8])
    ds = SegmentationDataset(out, instances=True, return_tensors=False)
    image, mask, inst = ds[6]
    np.testing.assert_array_equal(mask, masks[6])
    np.testing.assert_array_equal(inst, stored[6])
    # an instance file damaged behind the manifest's back: validate and the dataset both notice
    rel = next(f for f in reader.block_files(2) if "instances" in f)
    with open_writer(fmt, out, info, resume=True) as w:
        files = w._write_data(2, *sample_data(info, 2), instances=np.zeros((2, 20, 24), np.uint32))
    assert rel in files
    assert any("instance map does not match its mask" in e for e in validate_dataset(out).errors)


def test_instances_are_part_of_the_fingerprint(tmp_path):
    out = tmp_path / "o"
    write_all("zarr", out, make_info(), blocks=[0])
    with pytest.raises(ConfigError, match="instances: existing null, new true"):
        open_writer("zarr", out, make_info(instances=True), resume=True)
