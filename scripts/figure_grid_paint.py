"""docs/images/grid-paint.png: the demo recipe with tumor painted whole, in a grid, and in a grid on stroma.

    OMP_NUM_THREADS=1 python scripts/figure_grid_paint.py [--out docs/images/grid-paint.png] [--samples 0 1]

Built-in model, recipes/tissue-small-demo.yaml (256 px, mask: rendered), seed 0. Columns: the
recipe as shipped; tumor with ``paint: grid, grid: 2`` (gaps keep the generator's own
activations, written as ignore: black); the same with ``between: stroma`` (gaps painted stroma,
written stroma). Same layouts, vectors and noise in every column.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datagen.generate import build_renderer, load_recipe_model
from datagen.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "tissue-small-demo.yaml"
VARIANTS = [
    ("A  demo recipe: tumor painted whole", None),
    ("B  tumor  paint: grid, grid: 2  (gaps: own, ignore)", "paint: grid, grid: 2"),
    ("C  as B, with  between: stroma", "paint: grid, grid: 2, between: stroma"),
]


def render(extra: str | None, samples: list[int], tmp: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    text = DEMO.read_text().replace("../vector_libraries", str(REPO / "vector_libraries"))
    if extra:
        text = text.replace("label: tumor}", f"label: tumor, {extra}}}")
    path = tmp / "recipe.yaml"
    path.write_text(text)
    recipe = load_recipe(path)
    renderer = build_renderer(recipe, load_recipe_model(recipe, "cpu"), 0)
    images, masks = renderer.pairs(samples)
    return images, masks, recipe.palette()


def colour(mask: np.ndarray, palette: dict) -> np.ndarray:
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)  # ignore: black
    for cid, rgb in palette.items():
        out[mask == cid] = rgb
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "docs" / "images" / "grid-paint.png"))
    ap.add_argument("--samples", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cols = [(title, *render(extra, a.samples, Path(d))) for title, extra in VARIANTS]
    size, pad, head = 256, 6, 22
    n = len(a.samples)
    sheet = Image.new("RGB", (len(cols) * (2 * size + pad) - pad, n * (size + pad) + head), "white")
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for k, (title, images, masks, palette) in enumerate(cols):
        x = k * (2 * size + pad)
        draw.text((x + 4, 3), f"{title}", fill="black", font=font)
        for r in range(n):
            y = head + r * (size + pad)
            sheet.paste(Image.fromarray(images[r]), (x, y))
            sheet.paste(Image.fromarray(colour(masks[r], palette)), (x + size, y))
    sheet.save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
