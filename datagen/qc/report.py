"""Scoring a trained pixel classifier against masks: :class:`FidelityReport`, the
worst-samples strip (PNG) and the HTML report."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datagen.errors import DatagenError

from .metrics import (
    band_masks,
    confusion_matrix,
    iou_from_confusion,
    mean_iou,
    pixel_accuracy,
    row_normalize,
)
from .model import PixelClassifier

__all__ = ["FidelityReport", "evaluate_fidelity", "render_strip", "render_html", "write_html"]

#: Fallback colours for classes without one (tab10).
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
IGNORE_RGB = (128, 128, 128)


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


@dataclass
class WorstSample:
    """One of the worst test samples, with the arrays the strip draws."""

    index: int
    miou: float
    accuracy: float
    image: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    pred: np.ndarray = field(repr=False)


@dataclass
class FidelityReport:
    """How well an independent pixel classifier reads the masks back from the images.

    Per-class figures are lists aligned with ``classes`` (``None``/nan: the class does
    not occur in the scored masks).  ``confusion[i][j]`` counts pixels of mask class
    ``classes[i]`` predicted as ``classes[j]``; ignored pixels are in no figure.
    """

    classes: list[dict[str, Any]]
    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    band: int
    band_confusion: np.ndarray
    interior_confusion: np.ndarray
    band_iou: np.ndarray
    band_miou: float
    interior_iou: np.ndarray
    interior_miou: float
    ignore_index: int | None
    ignored_pixels: int
    per_sample: list[dict[str, Any]]
    worst: list[WorstSample] = field(default_factory=list, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def class_ids(self) -> list[int]:
        return [int(c["id"]) for c in self.classes]

    @property
    def class_names(self) -> list[str]:
        return [str(c["name"]) for c in self.classes]

    @property
    def confusion_normalized(self) -> np.ndarray:
        """Row-normalised confusion: the fraction of each mask class read as each class."""
        return row_normalize(self.confusion)

    def iou_by_name(self) -> dict[str, float | None]:
        return {n: _nan_to_none(v) for n, v in zip(self.class_names, self.iou)}

    def failures(self, min_miou: float) -> list[str]:
        """Why this report fails ``min_miou`` (empty when it passes)."""
        if math.isfinite(self.miou) and self.miou >= min_miou:
            return []
        worst = sorted(((v, n) for n, v in zip(self.class_names, self.iou) if math.isfinite(v)))[:3]
        detail = ", ".join(f"{n} {v:.2f}" for v, n in worst)
        return [f"mIoU {self.miou:.3f} is below {min_miou:g}" + (f" (lowest classes: {detail})" if detail else "")]

    def to_dict(self) -> dict[str, Any]:
        """All figures as plain JSON types (nan -> None)."""
        def per_class(a: np.ndarray) -> dict[str, float | None]:
            return {n: _nan_to_none(v) for n, v in zip(self.class_names, a)}

        return {
            "classes": [{k: c[k] for k in ("id", "name", "color") if k in c} for c in self.classes],
            "miou": _nan_to_none(self.miou),
            "pixel_accuracy": _nan_to_none(self.pixel_accuracy),
            "iou": per_class(self.iou),
            "band_px": self.band,
            "band_miou": _nan_to_none(self.band_miou),
            "interior_miou": _nan_to_none(self.interior_miou),
            "band_iou": per_class(self.band_iou),
            "interior_iou": per_class(self.interior_iou),
            "confusion": {
                "rows": "mask class", "cols": "predicted class", "order": self.class_names,
                "counts": self.confusion.astype(int).tolist(),
                "normalized": [[round(float(v), 6) for v in r] for r in self.confusion_normalized],
            },
            "pixels": {
                "scored": int(self.confusion.sum()),
                "per_class": {n: int(v) for n, v in zip(self.class_names, self.confusion.sum(1))},
                "band": int(self.band_confusion.sum()),
                "interior": int(self.interior_confusion.sum()),
                "ignored": int(self.ignored_pixels),
            },
            "ignore_index": self.ignore_index,
            "worst_samples": [{"index": w.index, "miou": _nan_to_none(w.miou), "accuracy": _nan_to_none(w.accuracy)}
                              for w in self.worst],
            "per_sample": [{k: (_nan_to_none(v) if isinstance(v, float) else v) for k, v in s.items()} for s in self.per_sample],
            "settings": self.settings,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:
        """A short readable table (what the CLI prints on stderr)."""
        lines = [f"mIoU {self.miou:.3f}   pixel accuracy {self.pixel_accuracy:.3f}   "
                 f"band (±{self.band} px) mIoU {self.band_miou:.3f}   interior mIoU {self.interior_miou:.3f}"]
        w = max([5] + [len(n) for n in self.class_names])
        lines.append(f"  {'class':<{w}}  {'IoU':>6}  {'band':>6}  {'inter.':>6}  most confused with")
        norm = self.confusion_normalized
        for k, n in enumerate(self.class_names):
            row = norm[k].copy()
            row[k] = -1
            j = int(np.argmax(row)) if len(row) > 1 else k
            conf = f"{self.class_names[j]} ({row[j]:.0%})" if j != k and row[j] > 0 else "-"
            f = lambda v: "   n/a" if not math.isfinite(v) else f"{v:6.3f}"  # noqa: E731
            lines.append(f"  {n:<{w}}  {f(self.iou[k])}  {f(self.band_iou[k])}  {f(self.interior_iou[k])}  {conf}")
        return "\n".join(lines)


def evaluate_fidelity(
    model: PixelClassifier,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    class_ids: Sequence[int] | None = None,
    class_names: dict[int, str] | None = None,
    class_colors: dict[int, str] | None = None,
    ignore_index: int | None = None,
    band: int = 8,
    worst: int = 6,
    worst_by: str = "miou",
    indices: Sequence[int] | None = None,
    progress: bool = False,
) -> FidelityReport:
    """Predict ``images`` with ``model`` and score the predictions against ``masks``.

    ``class_ids`` defaults to the model's; ``class_names``/``class_colors`` map ids to
    names and ``#rrggbb`` colours (defaults: ``class <id>``, a palette).  ``band``:
    the boundary band half-width in px.  ``worst``: how many lowest-scoring samples
    (by ``worst_by``: ``"miou"`` or ``"accuracy"``) to keep for the strip.
    ``indices``: the sample index reported for each image (default 0..N-1).
    """
    t0 = time.perf_counter()
    images = np.asarray(images)
    masks = np.asarray(masks)
    if masks.shape != images.shape[:3]:
        raise DatagenError(f"masks must be (N,H,W) = {images.shape[:3]}, got {masks.shape}")
    if worst_by not in ("miou", "accuracy"):
        raise DatagenError(f"worst_by must be 'miou' or 'accuracy', got {worst_by!r}")
    ids = list(model.class_ids if class_ids is None else class_ids)
    names = class_names or {}
    colors = class_colors or {}
    classes = [{"id": c, "name": names.get(c, f"class {c}"), "color": colors.get(c, PALETTE[k % len(PALETTE)])}
               for k, c in enumerate(ids)]
    idx = list(range(len(images))) if indices is None else [int(i) for i in indices]
    k = len(ids)
    cm = np.zeros((k, k), np.int64)
    cm_band = np.zeros((k, k), np.int64)
    cm_int = np.zeros((k, k), np.int64)
    ignored = 0
    per_sample: list[dict[str, Any]] = []
    preds_kept: list[np.ndarray] = []
    it = range(len(images))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="qc evaluate", unit="img", dynamic_ncols=True, leave=False)
    for i in it:
        pred = model.predict(images[i])
        m = masks[i]
        c = confusion_matrix(m, pred, ids, ignore_index=ignore_index)
        near, inner = band_masks(m, band)
        cm += c
        cm_band += confusion_matrix(m, pred, ids, ignore_index=ignore_index, valid=near)
        cm_int += confusion_matrix(m, pred, ids, ignore_index=ignore_index, valid=inner)
        if ignore_index is not None:
            ignored += int((m == ignore_index).sum())
        per_sample.append({"index": idx[i], "miou": mean_iou(iou_from_confusion(c)), "accuracy": pixel_accuracy(c)})
        preds_kept.append(pred)
    key = "miou" if worst_by == "miou" else "accuracy"
    order = sorted(range(len(per_sample)),
                   key=lambda j: (per_sample[j][key] if math.isfinite(per_sample[j][key]) else math.inf, j))
    worst_samples = [WorstSample(idx[j], per_sample[j]["miou"], per_sample[j]["accuracy"], images[j], masks[j], preds_kept[j])
                     for j in order[:worst] if math.isfinite(per_sample[j][key])]
    iou = iou_from_confusion(cm)
    band_iou = iou_from_confusion(cm_band)
    int_iou = iou_from_confusion(cm_int)
    return FidelityReport(
        classes=classes, confusion=cm, iou=iou, miou=mean_iou(iou), pixel_accuracy=pixel_accuracy(cm),
        band=band, band_confusion=cm_band, interior_confusion=cm_int,
        band_iou=band_iou, band_miou=mean_iou(band_iou), interior_iou=int_iou, interior_miou=mean_iou(int_iou),
        ignore_index=ignore_index, ignored_pixels=ignored, per_sample=per_sample, worst=worst_samples,
        settings={"band": band, "worst_by": worst_by}, timings={"evaluate": time.perf_counter() - t0},
    )


# ---- pictures ---------------------------------------------------------------------

def _rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _colorize(labels: np.ndarray, classes: list[dict[str, Any]], ignore_index: int | None) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = (0, 0, 0)
    for c in classes:
        lut[int(c["id"])] = _rgb(c["color"])
    out = lut[labels.astype(np.uint8)]
    if ignore_index is not None:
        _hatch(out, labels == ignore_index)
    return out


def _hatch(rgb: np.ndarray, where: np.ndarray) -> None:
    """Grey with diagonal dark-grey hatching where ``where``."""
    h, w = where.shape
    yy, xx = np.mgrid[0:h, 0:w]
    stripe = ((yy + xx) // 3) % 3 == 0
    rgb[where] = IGNORE_RGB
    rgb[where & stripe] = (90, 90, 90)


def _error_map(image: np.ndarray, mask: np.ndarray, pred: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """Correct pixels: the image dimmed to grey; wrong pixels: red; ignored: hatched grey."""
    grey = (image.astype(np.float32).mean(-1) * 0.35 + 20).astype(np.uint8)
    out = np.repeat(grey[..., None], 3, -1)
    wrong = mask != pred
    if ignore_index is not None:
        wrong &= mask != ignore_index
    out[wrong] = (230, 30, 30)
    if ignore_index is not None:
        _hatch(out, mask == ignore_index)
    return out


def render_strip(report: FidelityReport, *, tile: int = 192) -> Any:
    """The worst samples as a PIL image: per row ``image | mask | prediction | errors``, plus a legend."""
    from PIL import Image, ImageDraw

    pad, label_h = 4, 16
    rows = report.worst
    cols = 4
    legend_h = 20
    width = pad + cols * (tile + pad)
    height = label_h + legend_h + max(1, len(rows)) * (tile + label_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for text in ("image", "mask", "prediction", "errors (red)"):
        draw.text((x, 2), text, fill=(0, 0, 0))
        x += tile + pad
    # legend
    x, y = pad, label_h
    entries = [(c["name"], _rgb(c["color"])) for c in report.classes]
    if report.ignore_index is not None:
        entries.append((f"ignore ({report.ignore_index})", IGNORE_RGB))
    for name, rgb in entries:
        draw.rectangle([x, y + 3, x + 11, y + 14], fill=rgb, outline=(0, 0, 0))
        draw.text((x + 15, y + 3), name, fill=(0, 0, 0))
        x += 15 + 7 * len(name) + 12
    y = label_h + legend_h
    if not rows:
        draw.text((pad, y), "no test samples", fill=(0, 0, 0))
    for s in rows:
        draw.text((pad, y), f"sample {s.index}: mIoU {s.miou:.2f}, pixel accuracy {s.accuracy:.2f}", fill=(0, 0, 0))
        y += label_h
        panels = [s.image, _colorize(s.mask, report.classes, report.ignore_index),
                  _colorize(s.pred, report.classes, None), _error_map(s.image, s.mask, s.pred, report.ignore_index)]
        h, w = s.mask.shape
        scale = tile / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        x = pad
        for k, p in enumerate(panels):
            im = Image.fromarray(np.ascontiguousarray(p))
            resample = Image.Resampling.BILINEAR if (k == 0 and scale < 1) else Image.Resampling.NEAREST
            canvas.paste(im.resize(size, resample), (x, y))
            x += tile + pad
        y += tile + pad
    return canvas


def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.3f}"


def _cell_bg(v: float, good_high: bool = True) -> str:
    if not math.isfinite(v):
        return "#eeeeee"
    t = max(0.0, min(1.0, v if good_high else 1 - v))
    r, g = int(255 * (1 - t) + 200 * t), int(200 * (1 - t) + 235 * t)
    return f"rgb({r},{g},200)"


def render_html(report: FidelityReport, *, title: str = "datagen qc", strip: Any | None = None) -> str:
    """A self-contained HTML page: headline figures, per-class table, confusion matrix, worst-samples strip."""
    e = html.escape
    names = report.class_names
    d = report.to_dict()
    strip = render_strip(report) if strip is None else strip
    png = base64.b64encode(_png_bytes(strip)).decode()
    pix = report.confusion.sum(1)
    rows = []
    for k, c in enumerate(report.classes):
        rows.append(
            f"<tr><td><span class=sw style='background:{e(c['color'])}'></span>{e(names[k])}</td><td>{c['id']}</td>"
            f"<td>{int(pix[k])}</td>"
            + "".join(f"<td style='background:{_cell_bg(v)}'>{_fmt(v)}</td>"
                      for v in (report.iou[k], report.band_iou[k], report.interior_iou[k]))
            + "</tr>")
    norm = report.confusion_normalized
    cm_rows = []
    for i in range(len(names)):
        cells = "".join(
            f"<td style='background:{_cell_bg(norm[i, j] if i == j else 1 - norm[i, j]) if pix[i] else '#eeeeee'}'>"
            f"{norm[i, j]:.1%}<br><small>{int(report.confusion[i, j])}</small></td>" for j in range(len(names)))
        cm_rows.append(f"<tr><th>{e(names[i])}</th>{cells}</tr>")
    settings = json.dumps(d["settings"], indent=1)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f4f4f4; }}
td:first-child {{ text-align: left; }}
.sw {{ display: inline-block; width: .9em; height: .9em; margin-right: .4em; border: 1px solid #333; vertical-align: middle; }}
.big {{ font-size: 1.3em; }}
small {{ color: #666; }}
</style></head><body>
<h1>{e(title)}</h1>
<p class=big>mIoU <b>{_fmt(report.miou)}</b> &nbsp; pixel accuracy <b>{_fmt(report.pixel_accuracy)}</b> &nbsp;
boundary band (±{report.band} px) mIoU <b>{_fmt(report.band_miou)}</b> &nbsp; interior mIoU <b>{_fmt(report.interior_miou)}</b></p>
<p>An independent per-pixel CNN was trained on {report.settings.get('train_samples', '?')} image/mask pairs and tested on
{report.settings.get('test_samples', len(report.per_sample))} others. High figures mean the masks say what the images show.
Ignored pixels ({report.ignored_pixels}{'' if report.ignore_index is None else f', value {report.ignore_index}'}) are left out.
See docs/qc.md for how to read and act on these figures.</p>
<h2>Per class</h2>
<table><tr><th>class</th><th>id</th><th>test pixels</th><th>IoU</th><th>band IoU</th><th>interior IoU</th></tr>
{''.join(rows)}</table>
<h2>Confusion (rows: mask class, columns: predicted; row-normalised, counts below)</h2>
<table><tr><th></th>{''.join(f'<th>{e(n)}</th>' for n in names)}</tr>
{''.join(cm_rows)}</table>
<h2>Worst test samples</h2>
<p>image | mask | prediction | errors (red: prediction differs from the mask; hatched grey: ignored)</p>
<img alt="worst samples" src="data:image/png;base64,{png}">
<h2>Settings</h2>
<pre>{e(settings)}</pre>
<p><small>{e(timings)}</small></p>
</body></html>
"""


def write_html(report: FidelityReport, path: str | Path, *, title: str = "datagen qc") -> Path:
    """Write :func:`render_html` to ``path`` (folders created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(report, title=title), encoding="utf-8")
    return p
