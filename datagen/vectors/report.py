"""Human-readable outputs: PNG contact sheets and a one-file HTML report.

:func:`library_sheet` is a vector library's sheet (``datagen vectors show``): vectors in a
grid, grouped by cluster and sorted by tileability, each with its full- and grid-replace
renders, a tileable/not bar and a caption. :func:`contact_sheet` is the plain captioned grid
of any images. The HTML report embeds every image as a base64 PNG ``data:`` URI and inlines
its CSS, so the single file can be mailed, archived or opened offline. Files are written
atomically (:mod:`datagen.fsutil`).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw, ImageFont

from ..fsutil import atomic_path, atomic_write_text
from .library import VectorLibrary
from .visualize import to_uint8

if TYPE_CHECKING:  # pragma: no cover
    from .separability import SeparabilityReport

MARGIN = 4
"""Pixels between tiles and around the sheet."""
LINE_HEIGHT = 12
"""Caption line height in pixels (PIL's built-in bitmap font)."""


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    return images if images.dtype == torch.uint8 else to_uint8(images)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) uint8 or [-1, 1] float tensor -> PIL RGB image."""
    arr = _as_uint8(image.detach().cpu()).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(arr, "RGB")


def png_bytes(image: torch.Tensor | Image.Image) -> bytes:
    img = image if isinstance(image, Image.Image) else to_pil(image)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(image: torch.Tensor | Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def sheet_size(count: int, columns: int, tile: tuple[int, int], caption_lines: int) -> tuple[int, int]:
    """(width, height) of a contact sheet: ``count`` tiles of ``tile`` = (H, W) in ``columns``."""
    rows = -(-count // columns)
    cell_h = tile[0] + caption_lines * LINE_HEIGHT
    return columns * (tile[1] + MARGIN) + MARGIN, rows * (cell_h + MARGIN) + MARGIN


def contact_sheet(
    images: torch.Tensor,
    captions: Sequence[str] | None,
    path: str | os.PathLike | None = None,
    *,
    columns: int | None = None,
) -> Image.Image:
    """A grid of images with text captions below each, written as PNG to ``path`` (if given).

    ``images``: (N, 3, H, W), or (V, S, 3, H, W) for V rows of S seeds (then ``columns`` = S).
    ``captions``: one per image, or for 5-D input one per row (shown under the row's first
    image); lines split on "\\n". Sheet size is :func:`sheet_size` with the caption line count
    of the longest caption. Returns the PIL image.
    """
    if images.ndim == 5:
        v, s = images.shape[:2]
        if captions is not None and len(captions) == v and s > 1:
            captions = [c if j == 0 else "" for c in captions for j in range(s)]
        images = images.reshape(v * s, *images.shape[2:])
        columns = columns or s
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"contact_sheet: expected (N, 3, H, W) or (V, S, 3, H, W) images, got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if captions is not None and len(captions) != n:
        raise ValueError(f"contact_sheet: {len(captions)} captions for {n} images")
    caps = [str(c) for c in captions] if captions is not None else [""] * n
    lines = max((len(c.split("\n")) for c in caps if c), default=0)
    columns = max(1, min(columns or int(max(1, round(n**0.5))), max(n, 1)))
    width, height = sheet_size(max(n, 1), columns, (h, w), lines)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    data = _as_uint8(images.detach().cpu())
    for i in range(n):
        r, c = divmod(i, columns)
        x0 = MARGIN + c * (w + MARGIN)
        y0 = MARGIN + r * (h + lines * LINE_HEIGHT + MARGIN)
        sheet.paste(to_pil(data[i]), (x0, y0))
        for k, text in enumerate(caps[i].split("\n") if caps[i] else []):
            draw.text((x0 + 1, y0 + h + k * LINE_HEIGHT), text, fill=(0, 0, 0), font=font)
    if path is not None:
        save_png(sheet, path)
    return sheet


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically (a reader never sees half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp:
        image.save(tmp, format="PNG")
    return p


def vector_caption(library: VectorLibrary, vector_id: int) -> str:
    """``id 12  t=0.931`` / ``cluster 3  tumor`` - the caption used on contact sheets."""
    rec = library.record(vector_id)
    first = f"id {rec.id}" + (f"  t={rec.tileability:.3f}" if rec.tileability is not None else "")
    second = "  ".join(p for p in (
        f"cluster {rec.cluster}" if rec.cluster is not None else "",
        rec.label or "",
    ) if p)
    return first + ("\n" + second if second else "")


SHEET_PER_ROW = 6
"""Vectors per row of a library sheet (each vector: its full- then grid-replace renders)."""
_TILE_GAP, _GROUP_GAP, _CELL_GAP, _BAR = 2, 6, 12, 3
_INK, _MUTED, _RULE = (0, 0, 0), (90, 90, 90), (200, 200, 200)
_TILEABLE, _NOT_TILEABLE, _UNSCORED = (46, 160, 67), (230, 145, 56), (190, 190, 190)


def sheet_order(library: VectorLibrary, ids: Sequence[int]) -> list[int]:
    """Positions of ``ids`` sorted by cluster (unclustered last), then tileability (best first,
    unscored last), then id: the order of :func:`library_sheet`."""

    def key(pos: int) -> tuple:
        r = library.record(ids[pos])
        return (r.cluster is None, r.cluster if r.cluster is not None else 0,
                r.tileability is None, -(r.tileability or 0.0), r.id)

    return sorted(range(len(ids)), key=key)


def library_sheet(
    library: VectorLibrary,
    images: torch.Tensor,
    path: str | os.PathLike | None = None,
    *,
    ids: Sequence[int] | None = None,
    split: int | None = None,
    grid: int | None = None,
    threshold: float | None = None,
    per_row: int = SHEET_PER_ROW,
) -> Image.Image:
    """A vector library's contact sheet as a grid, written as PNG to ``path`` (if given).

    ``images``: (V, S, 3, H, W), row v showing vector ``ids[v]`` (default: all vectors in
    order); its first ``split`` renders (default S // 2) are full-replace, the rest grid-replace
    (``grid``: the grid size named in the legend, default the library's tileability grid).
    Vectors are grouped by cluster under a header (cluster, vectors shown, labels) and sorted
    by tileability within a cluster (:func:`sheet_order`), ``per_row`` vectors to a row. Under
    each vector a bar says whether it is tileable (green: score >= ``threshold``, default the
    library's; orange: below; grey: unscored) and a caption gives id, score and label.
    """
    ids = list(ids) if ids is not None else list(library.ids)
    if images.ndim == 4:
        images = images[:, None]
    if images.ndim != 5 or images.shape[2] != 3 or len(images) != len(ids):
        raise ValueError(f"library_sheet: expected ({len(ids)}, S, 3, H, W) images for {len(ids)} vectors, "
                         f"got {tuple(images.shape)}")
    v, n, _, h, w = images.shape
    split = n // 2 if split is None else max(0, min(int(split), n))
    tinfo = library.tileability or {}
    threshold = tinfo.get("threshold") if threshold is None else threshold
    grid = grid if grid is not None else tinfo.get("grid", 2)
    per_row = max(1, min(int(per_row), max(v, 1)))
    data = _as_uint8(images.detach().cpu())
    font = ImageFont.load_default()

    groups: dict[int | None, list[int]] = {}
    for pos in sheet_order(library, ids):
        groups.setdefault(library.record(ids[pos]).cluster, []).append(pos)

    cell_w = n * w + (n - 1) * _TILE_GAP + (_GROUP_GAP - _TILE_GAP if 0 < split < n else 0)
    cell_h = h + 2 + _BAR + LINE_HEIGHT
    head_h = LINE_HEIGHT + 6
    legend_h = 2 * LINE_HEIGHT + 6
    width = 2 * MARGIN + per_row * cell_w + (per_row - 1) * _CELL_GAP
    height = MARGIN + legend_h + sum(head_h + -(-len(g) // per_row) * (cell_h + MARGIN) for g in groups.values())
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)

    what = f"full replace ({split} seed{'s' * (split != 1)})" if split else ""
    if split < n:
        what += (" | " if what else "") + f"grid-{grid} replace ({n - split} seed{'s' * (n - split != 1)})"
    title = (f"{library.model} / {library.layer}: {v} of {len(library)} vectors, by cluster, "
             "then tileability t (best first)")
    thr = f"t >= {threshold:.3f}" if threshold is not None else "no threshold recorded"
    draw.text((MARGIN, MARGIN), title, fill=_INK, font=font)
    draw.text((MARGIN, MARGIN + LINE_HEIGHT), f"each vector: {what}; bar: green tileable ({thr}), "
              "orange not, grey unscored", fill=_MUTED, font=font)
    y = MARGIN + legend_h
    for cluster, members in groups.items():
        labels = sorted({library.record(ids[p]).label for p in members if library.record(ids[p]).label})
        size = sum(1 for r in library.records if r.cluster == cluster)
        name = f"cluster {cluster}" if cluster is not None else "no cluster"
        head = f"{name}: {len(members)} of {size} vectors shown" + (f"; labels: {', '.join(labels)}" if labels else "")
        draw.line([(MARGIN, y + 2), (width - MARGIN, y + 2)], fill=_RULE)
        draw.text((MARGIN, y + 4), head, fill=_INK, font=font)
        y += head_h
        for k, pos in enumerate(members):
            r, c = divmod(k, per_row)
            x0 = MARGIN + c * (cell_w + _CELL_GAP)
            y0 = y + r * (cell_h + MARGIN)
            x = x0
            for j in range(n):
                if j == split and 0 < split < n:
                    x += _GROUP_GAP - _TILE_GAP
                sheet.paste(to_pil(data[pos, j]), (x, y0))
                x += w + _TILE_GAP
            rec = library.record(ids[pos])
            t = rec.tileability
            bar = _UNSCORED if t is None or threshold is None else (_TILEABLE if t >= threshold else _NOT_TILEABLE)
            draw.rectangle([x0, y0 + h + 1, x0 + cell_w - 1, y0 + h + _BAR], fill=bar)
            caption = "  ".join(p for p in (f"id {rec.id}", f"t={t:.3f}" if t is not None else "", rec.label or "") if p)
            draw.text((x0 + 1, y0 + h + 2 + _BAR), caption, fill=_INK, font=font)
        y += -(-len(members) // per_row) * (cell_h + MARGIN)
    if path is not None:
        save_png(sheet, path)
    return sheet


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}
h2{font-size:1.1em;margin:1em 0 .3em}
table{border-collapse:collapse}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f4f4f4;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{image-rendering:pixelated;margin-right:2px;vertical-align:middle}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:.9em}
dt{font-weight:600}
.tile{background:#e8f5e9}.notile{background:#fff3e0}
"""


def html_report(
    library: VectorLibrary,
    full_images: torch.Tensor,
    grid_images: torch.Tensor,
    path: str | os.PathLike,
    *,
    ids: Sequence[int] | None = None,
    title: str | None = None,
    thumb: int | None = 128,
    threshold: float | None = None,
    separability: "SeparabilityReport | None" = None,
) -> Path:
    """One self-contained HTML file: a provenance header and a table with one row per vector
    (full and grid-2 visualisations, tileability, cluster, class), sorted by score (best
    first; unscored last, by id).

    ``full_images``/``grid_images``: (V, 3, H, W) or (V, S, 3, H, W), row v showing vector
    ``ids[v]`` (default: all library vectors in order). ``thumb``: images wider than this are
    stored downscaled to this width (None keeps full size). Every image is embedded, so for
    libraries of thousands of vectors pass a subset (e.g. the top and bottom 100 by score).
    ``threshold`` (default: the library's recorded Otsu threshold) marks rows as tileable.
    ``separability``: a :class:`~datagen.vectors.separability.SeparabilityReport` of the labelled
    classes, shown as a class confusion matrix above the vector table.
    """
    ids = list(ids) if ids is not None else library.ids
    if full_images.ndim == 4:
        full_images = full_images[:, None]
    if grid_images.ndim == 4:
        grid_images = grid_images[:, None]
    if len(full_images) != len(ids) or len(grid_images) != len(ids):
        raise ValueError(f"html_report: {len(full_images)} full and {len(grid_images)} grid image rows for {len(ids)} vectors")
    if threshold is None and library.tileability:
        threshold = library.tileability.get("threshold")

    def key(pos: int) -> tuple:
        t = library.record(ids[pos]).tileability
        return (t is None, -(t if t is not None else 0.0), ids[pos])

    order = sorted(range(len(ids)), key=key)
    esc = html.escape
    width = f' width="{thumb}"' if thumb else ""

    def shrink(image: torch.Tensor) -> Image.Image:
        img = to_pil(image)
        if thumb and img.width > thumb:  # store thumbnails, not full images: keeps the file small
            img = img.resize((thumb, max(1, round(img.height * thumb / img.width))), Image.Resampling.BILINEAR)
        return img

    def imgs(stack: torch.Tensor, what: str, vid: int) -> str:
        return "".join(
            f'<img src="{data_uri(shrink(stack[s]))}" alt="{what} vector {vid} seed {s}"{width}>'
            for s in range(len(stack))
        )

    prov = {
        "model": library.model,
        "layer": f"{library.layer} ({library.channels} channels)",
        "vectors": str(len(library)),
        "image size": "x".join(map(str, library.image_size)) if library.image_size else "?",
        "extraction": ", ".join(f"{k}={v}" for k, v in library.extraction.items()) or "?",
        "tileability": ", ".join(f"{k}={v}" for k, v in (library.tileability or {}).items()) or "not scored",
        "clustering": ", ".join(f"{k}={v}" for k, v in (library.clustering or {}).items() if k not in ("prototypes", "sizes"))
        or "not clustered",
        "datagen": library.tool_version,
        "created": library.created,
    }
    rows = []
    for pos in order:
        vid = ids[pos]
        rec = library.record(vid)
        cls = ""
        if threshold is not None and rec.tileability is not None:
            cls = ' class="tile"' if rec.tileability >= threshold else ' class="notile"'
        score = f"{rec.tileability:.4f}" if rec.tileability is not None else "&ndash;"
        origin = f"image {rec.image}, y {rec.y}, x {rec.x}" if rec.image is not None else "&ndash;"
        rows.append(
            f'<tr id="v{vid}"{cls}><td class="num">{vid}</td><td>{imgs(full_images[pos], "full", vid)}</td>'
            f'<td>{imgs(grid_images[pos], "grid", vid)}</td><td class="num">{score}</td>'
            f'<td class="num">{rec.cluster if rec.cluster is not None else "&ndash;"}</td>'
            f'<td>{esc(rec.label) if rec.label else "&ndash;"}</td><td>{origin}</td></tr>'
        )
    grid = (library.tileability or {}).get("grid", 2)
    t = title or f"Vector library: {library.model} / {library.layer}"
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(t)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{esc(t)}</h1>\n<dl>"
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in prov.items())
        + (f"<dt>tileable threshold</dt><dd>{threshold:.4f} (green rows &ge; threshold)</dd>" if threshold is not None else "")
        + "</dl>\n" + (separability_html(separability) if separability is not None else "")
        + "<table><thead><tr><th>id</th><th>full replace</th>"
        f"<th>grid-{esc(str(grid))} replace</th><th>tileability</th><th>cluster</th><th>class</th><th>origin</th>"
        "</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n</body></html>\n"
    )
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, doc)
    return p


def separability_html(report: "SeparabilityReport") -> str:
    """An HTML section: the class confusion matrix (% of renders, rows true class, columns
    predicted), per-class accuracy and the inseparable pairs (docs/vectors.md#separability)."""
    esc = html.escape
    names = report.classes
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for i, n in enumerate(names):
        cells = []
        for j, v in enumerate(report.confusion[i]):
            bad = i != j and v + report.confusion[j][i] >= report.threshold
            style = ' style="background:#fdd"' if bad else (' style="background:#e8f5e9"' if i == j else "")
            cells.append(f'<td class="num"{style}>{100 * v:.0f}</td>')
        rows.append(f"<tr><th>{esc(n)}</th>{''.join(cells)}<td class=\"num\">{100 * report.accuracy[n]:.0f}%</td>"
                    f"<td class=\"num\">{len(report.vectors[n])} of {report.num_vectors[n]}</td></tr>")
    pairs = "".join(f"<li>{esc(p.a)} ~ {esc(p.b)}: {esc(p.describe())}</li>" for p in report.pairs)
    verdict = (f"<p>Inseparable pairs (confusion a&rarr;b + b&rarr;a &ge; {report.threshold:g}, or shared vectors):"
               f"</p><ul>{pairs}</ul>" if report.pairs else
               f"<p>Every pair of classes is separable (confusion a&rarr;b + b&rarr;a &lt; {report.threshold:g}).</p>")
    s = report.settings
    return (
        "<h2>Class separability</h2>\n<p>Full-replace renders of each class's vectors (seeds "
        f"{esc(str(s.get('seeds')))}, {esc('x'.join(map(str, s.get('size', []))))} px), classified by the nearest class "
        f"centroid of {esc(str(s.get('extractor')))} {esc(str(s.get('extractor_layer')))} features, leaving each vector "
        "out of its own class. Rows: true class; columns: predicted class; % of renders. "
        "See docs/vectors.md#separability.</p>\n"
        f"<table><thead><tr><th>true \\ predicted</th>{head}<th>accuracy</th><th>vectors</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>\n" + verdict + "\n"
    )


__all__ = ["contact_sheet", "data_uri", "html_report", "library_sheet", "png_bytes", "save_png", "separability_html",
           "sheet_order", "sheet_size", "to_pil", "vector_caption"]
