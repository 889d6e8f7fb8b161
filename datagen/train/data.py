"""Random training crops from a folder of images, or from a few large images / tiled TIFFs.

Large TIFFs (whole-slide images) are read lazily through tifffile's zarr view,
so only the crops are decoded. Crops that are mostly glass (bright, unsaturated)
or scanner border (black) are skipped: they teach the GAN nothing about tissue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatagenError
from ..render import to_uint8

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs", ".bmp", ".webp"}
LAZY_PIXELS = 4096 * 4096  # larger TIFFs are not loaded whole
GLASS_MIN, GLASS_RANGE, BLACK_MAX = 200, 25, 30
"""The glass test on 0-255: min channel > GLASS_MIN and channel range < GLASS_RANGE (bright and
grey), or max channel < BLACK_MAX (scanner border). One definition for the sampler, the training
log and the glass loss."""


@dataclass
class SourceImage:
    path: Path
    scale: float
    array: Any  # numpy (H, W, 3) uint8, or a lazy zarr array
    height: int
    width: int


def _open(path: Path, scale: float) -> SourceImage:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff", ".svs"):
        import tifffile
        import zarr

        try:
            with tifffile.TiffFile(path) as tf:
                series = tf.series[0]
                shape = series.shape
        except Exception as e:
            raise DatagenError(f"{path}: cannot read as TIFF ({e})") from None
        if len(shape) != 3 or shape[-1] not in (3, 4):
            raise DatagenError(f"{path}: expected an RGB image (H, W, 3), got shape {shape}")
        if shape[0] * shape[1] > LAZY_PIXELS:
            store = tifffile.imread(path, aszarr=True, series=0, level=0)
            arr = zarr.open(store, mode="r")
        else:
            arr = tifffile.imread(path, series=0)[..., :3]
        return _scaled(SourceImage(path, scale, arr, shape[0], shape[1]))
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"))
    except Exception as e:
        raise DatagenError(f"{path}: cannot read as an image ({e})") from None
    return _scaled(SourceImage(path, scale, arr, arr.shape[0], arr.shape[1]))


def _scaled(src: SourceImage) -> SourceImage:
    """Resize in-memory images once up front; lazy ones are resized per crop."""
    if src.scale == 1.0 or not isinstance(src.array, np.ndarray):
        return src
    t = torch.from_numpy(src.array).permute(2, 0, 1)[None].float()
    h, w = round(src.height * src.scale), round(src.width * src.scale)
    t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    arr = t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return SourceImage(src.path, 1.0, arr, h, w)


def find_images(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise DatagenError(f"{p}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if not p.is_file():
        raise DatagenError(f"{p}: no such file or folder")
    return [p]


def background_fraction(crop: np.ndarray) -> float:
    """Share of pixels that are glass (bright and grey) or scanner border (near black)."""
    # channel-wise max/min in uint8 (mx >= mn, so mx - mn cannot wrap): ~10x faster than
    # max/min over a 3-long last axis in int16, and this runs for every tried training crop
    r, g, b = crop[..., 0], crop[..., 1], crop[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    bad = (mn > GLASS_MIN) & ((mx - mn) < GLASS_RANGE)  # glass
    bad |= mx < BLACK_MAX  # black
    return np.count_nonzero(bad) / bad.size


def background_fraction_t(images: torch.Tensor) -> torch.Tensor:
    """:func:`background_fraction` of each image of a (N, 3, H, W) float batch in [-1, 1], on its
    device (quantised to uint8 first, as written images are): the training loop logs it for its
    real and generated batches without a host copy, so a generator that stops drawing glass shows
    in ``log.jsonl`` long before a realism run."""
    u = to_uint8(images.detach())
    mx, mn = u.amax(dim=1), u.amin(dim=1)  # uint8, mx >= mn: mx - mn cannot wrap
    bad = ((mn > GLASS_MIN) & ((mx - mn) < GLASS_RANGE)) | (mx < BLACK_MAX)
    return bad.flatten(1).float().mean(dim=1)


class CropSampler:
    """Draws random ``crop x crop`` uint8 crops, weighting images by their area."""

    def __init__(self, sources: list[tuple[str | Path, float]], crop: int, *, max_background: float = 0.5,
                 seed: int = 0, max_tries: int = 50) -> None:
        self.images = [_open(f, s) for p, s in sources for f in find_images(p)]
        self.crop = crop
        self.max_background = max_background
        self.max_tries = max_tries
        self.rng = np.random.default_rng(seed)
        sizes = []
        for im in self.images:
            need = self._source_extent(im)
            if im.height < need or im.width < need:
                raise DatagenError(f"{im.path}: {im.width}x{im.height} px is smaller than one {crop}-px crop at scale {im.scale}")
            sizes.append(im.height * im.width * im.scale**2)
        w = np.asarray(sizes, dtype=np.float64)
        self.weights = w / w.sum()

    def _source_extent(self, im: SourceImage) -> int:
        return int(np.ceil(self.crop / im.scale))

    def _crop_one(self) -> np.ndarray:
        best, best_bg = None, 2.0
        for _ in range(self.max_tries):
            im = self.images[self.rng.choice(len(self.images), p=self.weights)]
            e = self._source_extent(im)
            y = int(self.rng.integers(0, im.height - e + 1))
            x = int(self.rng.integers(0, im.width - e + 1))
            c = np.asarray(im.array[y : y + e, x : x + e])[..., :3]
            if e != self.crop:
                t = torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1)[None].float()
                t = F.interpolate(t, size=(self.crop, self.crop), mode="bilinear", antialias=True, align_corners=False)
                c = t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
            bg = background_fraction(c)
            if bg <= self.max_background:
                return c
            if bg < best_bg:
                best, best_bg = c, bg
        return best  # type: ignore[return-value]  # every try was mostly glass: take the least bad

    def sample(self, n: int, device: str | torch.device | None = None) -> torch.Tensor:
        """(n, 3, crop, crop) float in [-1, 1], on ``device`` (the uint8 crops move there first:
        a quarter of the bytes, and the conversion runs on the device)."""
        batch = torch.from_numpy(np.stack([self._crop_one() for _ in range(n)]))
        if device is not None:
            batch = batch.to(device)
        return batch.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state
