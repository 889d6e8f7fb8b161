"""`datagen qc`: the mask-fidelity metrics, the pixel classifier on toy data, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from datagen.cli import main
from datagen.errors import DatagenError
from datagen.qc import (
    band_masks,
    boundary_mask,
    confusion_matrix,
    evaluate_fidelity,
    fit_pixel_classifier,
    iou_from_confusion,
    mean_iou,
    pixel_accuracy,
    qc_arrays,
    qc_dataset,
    render_html,
    render_strip,
    row_normalize,
    split_positions,
)
from datagen.writers import DatasetInfo, open_writer

CLASSES = [
    {"id": 0, "name": "pink", "color": "#c87896"},
    {"id": 1, "name": "purple", "color": "#5a3ca0"},
    {"id": 2, "name": "pale", "color": "#e6c8d2"},
]
FAST = dict(steps=80, crop=32, batch_size=8, band=4, device="cpu")


def toy_pairs(n: int = 16, size: int = 48, seed: int = 0, num_classes: int = 3, cells: int = 6):
    """Faithful toy pairs: Voronoi masks; each class its own colour and texture plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.array([[200, 120, 150], [90, 60, 160], [230, 200, 210], [120, 180, 90]], np.float32)[:num_classes]
    tex = np.stack([np.zeros((size, size)), np.sin(xx * 1.3) * 25, ((yy + xx) % 6 < 3) * 30.0 - 15,
                    np.cos(yy * 0.9) * 20][:num_classes])
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for i in range(n):
        pts = rng.uniform(0, size, (cells, 2))
        lab = rng.integers(0, num_classes, cells)
        lab[:num_classes] = np.arange(num_classes)
        m = lab[((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2).argmin(-1)].astype(np.uint8)
        img = base[m] + tex[m, yy, xx][..., None] + rng.normal(0, 12, (size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        masks[i] = m
    return images, masks


# ---- pure metrics ------------------------------------------------------------------

def test_confusion_matrix_counts_and_ignore():
    t = np.array([[0, 0, 1], [1, 2, 255]])
    p = np.array([[0, 1, 1], [1, 0, 2]])
    cm = confusion_matrix(t, p, [0, 1, 2], ignore_index=255)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert cm.sum() == 5  # the ignored pixel is in no cell
    # sparse ids: rows/cols follow class_ids order
    cm2 = confusion_matrix(np.array([7, 7, 3]), np.array([7, 3, 3]), [3, 7])
    assert cm2.tolist() == [[1, 0], [1, 1]]
    # valid mask restricts the counted pixels
    cm3 = confusion_matrix(t, p, [0, 1, 2], ignore_index=255, valid=np.array([[True, False, False], [False, True, True]]))
    assert cm3.tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]
    with pytest.raises(DatagenError):
        confusion_matrix(t, p[:, :2], [0, 1, 2])


def test_iou_miou_accuracy_and_absent_class():
    cm = np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    iou = iou_from_confusion(cm)
    assert iou[0] == pytest.approx(3 / (3 + 1 + 2))
    assert iou[1] == pytest.approx(4 / (4 + 2 + 1))
    assert math.isnan(iou[2])  # never in the masks: absent, not 0
    assert mean_iou(iou) == pytest.approx((iou[0] + iou[1]) / 2)
    assert pixel_accuracy(cm) == pytest.approx(7 / 10)
    # a class predicted but absent from the masks stays nan (its false positives hurt the others)
    iou2 = iou_from_confusion(np.array([[2, 2], [0, 0]]))
    assert iou2[0] == pytest.approx(0.5) and math.isnan(iou2[1])
    assert row_normalize(cm)[1].tolist() == pytest.approx([1 / 3, 2 / 3, 0])
    assert row_normalize(cm)[2].tolist() == [0, 0, 0]
    assert math.isnan(mean_iou(np.array([np.nan])))


def test_boundary_and_band_split():
    m = np.zeros((20, 30), np.uint8)
    m[:, 15:] = 1
    b = boundary_mask(m)
    assert b[:, 14].all() and b[:, 15].all() and b.sum() == 40  # both sides of the change, nothing else
    near, inner = band_masks(m, 3)
    assert not (near & inner).any() and (near | inner).all()
    cols = near.any(0)
    assert np.flatnonzero(cols).tolist() == list(range(12, 18))  # 3 px on each side
    # ignored pixels are boundaries like any label
    m2 = np.zeros((10, 10), np.uint8)
    m2[4:6, 4:6] = 255
    assert boundary_mask(m2)[3, 4] and boundary_mask(m2)[4, 4]
    # one label only: all interior; the image border is no boundary
    near, inner = band_masks(np.ones((8, 8), np.uint8), 2)
    assert inner.all() and not near.any()
    with pytest.raises(DatagenError):
        band_masks(m, 0)


def test_split_positions():
    tr, te = split_positions(10, 0.5)
    assert tr.tolist() == [0, 1, 2, 3, 4] and te.tolist() == [5, 6, 7, 8, 9]
    tr, te = split_positions(3, 0.9)
    assert len(tr) == 2 and len(te) == 1
    with pytest.raises(DatagenError):
        split_positions(1, 0.5)
    with pytest.raises(DatagenError):
        split_positions(10, 1.0)


# ---- the classifier on toy data --------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    return toy_pairs()


def test_faithful_toy_scores_high_and_shuffled_masks_low(toy):
    images, masks = toy
    good = qc_arrays(images, masks, class_names={c["id"]: c["name"] for c in CLASSES}, **FAST)
    assert good.miou > 0.85, good.summary()
    assert min(good.iou) > 0.75
    assert good.pixel_accuracy > 0.9
    assert good.interior_miou >= good.band_miou - 0.02
    # the same images with masks shuffled across samples: the masks no longer say what the images show
    perm = np.roll(np.arange(len(masks)), 1)
    bad = qc_arrays(images, masks[perm], class_names={c["id"]: c["name"] for c in CLASSES}, **FAST)
    assert bad.miou < 0.5, bad.summary()
    assert bad.failures(0.8) and not good.failures(0.8)
    d = json.loads(good.to_json())
    assert set(d["iou"]) == {"pink", "purple", "pale"}
    assert d["confusion"]["counts"] == good.confusion.tolist()
    assert d["settings"]["train_samples"] == 8 and d["settings"]["test_samples"] == 8
    assert d["worst_samples"] and all(w["index"] >= 8 for w in d["worst_samples"])


def test_deterministic_for_a_seed(toy):
    images, masks = toy
    a = qc_arrays(images[:6], masks[:6], seed=3, **{**FAST, "steps": 10})
    b = qc_arrays(images[:6], masks[:6], seed=3, **{**FAST, "steps": 10})
    assert np.array_equal(a.confusion, b.confusion)


def test_ignored_wrong_labels_are_left_out(toy):
    images, masks = toy
    rng = np.random.default_rng(5)
    noisy = masks.copy()
    wrong = rng.random(masks.shape) < 0.3
    noisy[wrong] = (masks[wrong] + 1) % 3  # 30 % wrong labels everywhere ...
    names = {c["id"]: c["name"] for c in CLASSES}
    hurt = qc_arrays(images, noisy, class_names=names, **FAST)
    ignored = noisy.copy()
    ignored[wrong] = 255  # ... written as ignore instead
    clean = qc_arrays(images, ignored, class_names=names, ignore_index=255, **FAST)
    assert clean.miou > 0.85, clean.summary()
    assert hurt.miou < clean.miou - 0.2
    assert clean.ignored_pixels == int(wrong[8:].sum())
    assert clean.confusion.sum() + clean.ignored_pixels == masks[8:].size
    # without an ignore value, 255 is an unknown mask value: a clear error
    with pytest.raises(DatagenError, match="ignore"):
        qc_arrays(images, ignored, class_names=names, **FAST)


def test_fit_and_evaluate_on_arrays(toy):
    images, masks = toy
    model = fit_pixel_classifier(images[:8], masks[:8], num_classes=3, steps=60, crop=32, seed=0, device="cpu")
    pred = model.predict(images[8:])
    assert pred.shape == masks[8:].shape and pred.dtype == np.uint8
    rep = evaluate_fidelity(model, images[8:], masks[8:], class_names={0: "a", 1: "b", 2: "c"}, band=4, worst=2)
    assert rep.miou > 0.8
    assert [w.index for w in rep.worst] == sorted(range(8), key=lambda j: rep.per_sample[j]["miou"])[:2]
    strip = render_strip(rep, tile=64)
    assert strip.size[0] > 4 * 64 and strip.size[1] > 2 * 64
    page = render_html(rep, strip=strip)
    assert "data:image/png;base64," in page and "<td>" in page
    # a class absent from the test masks is reported as null
    rep2 = evaluate_fidelity(model, images[8:], np.where(masks[8:] == 2, 0, masks[8:]).astype(np.uint8), band=4)
    assert json.loads(rep2.to_json())["iou"]["class 2"] is None
    with pytest.raises(DatagenError):
        fit_pixel_classifier(images[:2], masks[:2], num_classes=3, class_ids=[0, 1, 2], steps=1, device="cpu")


# ---- dataset + CLI -----------------------------------------------------------------

def write_toy_dataset(path, images, masks, fmt="zarr"):
    n, h, w = masks.shape
    info = DatasetInfo(num_samples=n, height=h, width=w, classes=CLASSES, block_size=4, attrs={"seed": 0})
    with open_writer(fmt, path, info) as wr:
        for b in range(info.num_blocks):
            r = info.block_range(b)
            wr.write_block(b, images[r.start:r.stop], masks[r.start:r.stop])
    return path


@pytest.mark.parametrize("fmt", ["zarr", "tiff"])
def test_qc_dataset(tmp_path, toy, fmt):
    images, masks = toy
    out = write_toy_dataset(tmp_path / fmt, images, masks, fmt)
    rep = qc_dataset(out, max_samples=10, **{**FAST, "steps": 20})
    assert rep.settings["used_samples"] == 10 and rep.settings["dataset_samples"] == 16
    assert rep.settings["train_indices"] == [0, 2, 3, 5, 7] and rep.settings["test_indices"][-1] == 15
    assert rep.class_names == ["pink", "purple", "pale"]


def test_cli_qc(tmp_path, toy, capsys, monkeypatch):
    images, masks = toy
    good = write_toy_dataset(tmp_path / "good.zarr", images, masks)
    bad = write_toy_dataset(tmp_path / "bad.zarr", images, masks[np.roll(np.arange(len(masks)), 1)])
    opts = ["--steps", "80", "--crop", "32", "--band", "4", "--device", "cpu", "--quiet"]
    report = tmp_path / "r" / "good.html"
    strip = tmp_path / "strip.png"
    assert main(["qc", str(good), "--min-miou", "0.8", "--report", str(report), "--strip", str(strip), *opts]) == 0
    out = capsys.readouterr()
    d = json.loads(out.out)
    assert d["miou"] > 0.8 and d["settings"]["report"] == str(report)
    assert report.read_text().startswith("<!doctype html>") and strip.read_bytes()[:4] == b"\x89PNG"
    monkeypatch.chdir(tmp_path)
    assert main(["qc", str(bad), "--min-miou", "0.8", *opts]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["miou"] < 0.5
    assert "mIoU" in out.err and "--min-miou 0.8" in out.err
    assert (tmp_path / "qc-bad.zarr.html").exists()  # the default report path
    # user errors: one line, exit 2
    assert main(["qc", str(tmp_path / "missing"), *opts]) == 2
    assert main(["qc", str(good), "--ignore-index", "x", *opts]) == 2
    assert main(["qc", str(good), "--train-fraction", "1.5", *opts]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(l.startswith("datagen qc: error:") for l in err)
