"""The independent per-pixel classifier that ``datagen qc`` trains: a small dilated CNN.

It is deliberately *not* the generator: it only sees RGB pixels, so if it can read a
mask back from the image, the mask says what the image shows.

Architecture (:class:`PixelNet`): six 3x3 convolutions at full resolution with
dilations 1, 2, 4, 8, 4, 1 (receptive field 41 px), BatchNorm + ReLU after each, and
a 1x1 classifier.  Trained with AdamW (warm-up + cosine learning rate) on random
crops with random flips; cross-entropy over mask pixels, ignored pixels left out.
Deterministic for a seed on the CPU (same thread count): weights are initialised
under ``seed`` and crops come from a ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datagen.errors import DatagenError

from .metrics import class_lut

__all__ = ["PixelNet", "PixelClassifier", "fit_pixel_classifier", "resolve_device"]

DILATIONS = (1, 2, 4, 8, 4, 1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; anything else as torch reads it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DatagenError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:1, ...)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DatagenError(f"device {device!r} asked for, but CUDA is not available here")
    return dev


class PixelNet(nn.Module):
    """Fully convolutional per-pixel classifier: ``(B,3,H,W)`` float -> ``(B,K,H,W)`` logits, any H, W."""

    def __init__(self, num_classes: int, width: int = 32, dilations: Sequence[int] = DILATIONS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for d in dilations:
            layers += [nn.Conv2d(cin, width, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, num_classes, 1)
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))

    @property
    def receptive_field(self) -> int:
        return 1 + 2 * sum(m.dilation[0] for m in self.features if isinstance(m, nn.Conv2d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - self.mean) / self.std))


@dataclass
class PixelClassifier:
    """A trained :class:`PixelNet` with the class id of each of its logits."""

    net: PixelNet
    class_ids: list[int]
    device: torch.device
    train_seconds: float = 0.0
    final_loss: float = float("nan")

    @torch.inference_mode()
    def predict(self, images: np.ndarray, *, batch_size: int = 4, progress: bool = False) -> np.ndarray:
        """Predicted class ids ``(N,H,W) uint8`` for ``(N,H,W,3) uint8`` images (or one ``(H,W,3)`` image)."""
        images = np.asarray(images)
        single = images.ndim == 3
        if single:
            images = images[None]
        _check_images(images)
        self.net.eval()
        ids = torch.tensor(self.class_ids, dtype=torch.uint8, device=self.device)
        out = np.empty(images.shape[:3], dtype=np.uint8)
        starts = range(0, len(images), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="qc evaluate", unit="batch", dynamic_ncols=True, leave=False)
        for s in starts:
            x = _to_input(torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])), self.device)
            out[s : s + batch_size] = ids[self.net(x).argmax(1)].cpu().numpy()
        return out[0] if single else out


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DatagenError(f"images must be (N,H,W,3) uint8, got {images.shape} {images.dtype}")


def _to_input(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float32 in [0,1] on ``device``."""
    return batch_u8.to(device).permute(0, 3, 1, 2).float().div_(255.0)


def fit_pixel_classifier(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    num_classes: int | None = None,
    class_ids: Sequence[int] | None = None,
    ignore_index: int | None = None,
    steps: int = 300,
    crop: int = 64,
    batch_size: int = 8,
    lr: float = 3e-3,
    width: int = 32,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    progress: bool = False,
) -> PixelClassifier:
    """Train a :class:`PixelNet` to predict ``masks`` from ``images``.

    Parameters
    ----------
    images, masks:
        ``(N,H,W,3) uint8`` and ``(N,H,W)`` integer label maps (class ids 0..255).
    num_classes, class_ids:
        The classes the model has logits for: ``class_ids`` (any ids), or
        ``range(num_classes)``.  Exactly one of the two.
    ignore_index:
        Mask value left out of the loss (e.g. 255).  Any other mask value that is not
        a class id is an error.
    steps, crop, batch_size, lr, width:
        Optimiser steps; square random crop size (clipped to the image); crops per
        step; AdamW peak learning rate; channels of the hidden layers.
    seed:
        Seeds weight initialisation and the crop/flip stream (the global torch RNG
        is left as it was).
    device:
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ... .
    progress:
        A tqdm bar on stderr.
    """
    import time

    images = np.asarray(images)
    masks = np.asarray(masks)
    _check_images(images)
    if masks.shape != images.shape[:3]:
        raise DatagenError(f"masks must be (N,H,W) = {images.shape[:3]}, got {masks.shape}")
    if len(images) == 0:
        raise DatagenError("no training samples")
    if (num_classes is None) == (class_ids is None):
        raise DatagenError("give exactly one of num_classes and class_ids")
    ids = list(range(num_classes)) if class_ids is None else [int(c) for c in class_ids]  # type: ignore[arg-type]
    if not ids:
        raise DatagenError("no classes to train")
    if ignore_index is not None and ignore_index in ids:
        raise DatagenError(f"ignore value {ignore_index} is also a class id")
    if steps < 1 or crop < 1 or batch_size < 1:
        raise DatagenError("steps, crop and batch_size must be >= 1")
    dev = resolve_device(device)
    # targets: contiguous logit index, -1 = not scored
    lut = class_lut(ids)
    targets = lut[masks.astype(np.int64)] if masks.dtype == np.uint8 else lut[np.clip(masks, 0, 255).astype(np.int64)]
    bad = (targets < 0) & ((masks != ignore_index) if ignore_index is not None else True)
    if bad.any():
        vals = sorted(int(v) for v in np.unique(np.asarray(masks)[bad]))[:10]
        hint = "" if ignore_index is not None else " (pass the ignore value as ignore_index)"
        raise DatagenError(f"mask values {vals} are neither class ids {ids} nor the ignore value {ignore_index}{hint}")
    if not (targets >= 0).any():
        raise DatagenError("every training mask pixel is ignored: nothing to learn")

    n, h, w = masks.shape
    ch, cw = min(crop, h), min(crop, w)
    t_img = torch.from_numpy(np.ascontiguousarray(images))
    t_tgt = torch.from_numpy(targets.astype(np.int16))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PixelNet(len(ids), width=width)
    x_all = t_img.permute(0, 3, 1, 2).float().div_(255.0)
    net.mean.copy_(x_all.mean((0, 2, 3)).view(1, 3, 1, 1))
    net.std.copy_(x_all.std((0, 2, 3)).clamp_min(1e-3).view(1, 3, 1, 1))
    del x_all
    net.to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    g = torch.Generator().manual_seed(seed)

    it = range(steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(it, desc="qc train", unit="step", dynamic_ncols=True, leave=False)
        it = bar
    t0 = time.perf_counter()
    loss_ema = float("nan")
    for _ in it:
        idx = torch.randint(0, n, (batch_size,), generator=g)
        ys = torch.randint(0, h - ch + 1, (batch_size,), generator=g)
        xs = torch.randint(0, w - cw + 1, (batch_size,), generator=g)
        flips = torch.randint(0, 2, (batch_size, 2), generator=g)
        xb, tb = [], []
        for i, y0, x0, f in zip(idx.tolist(), ys.tolist(), xs.tolist(), flips.tolist()):
            xi = t_img[i, y0 : y0 + ch, x0 : x0 + cw]
            ti = t_tgt[i, y0 : y0 + ch, x0 : x0 + cw]
            if f[0]:
                xi, ti = xi.flip(0), ti.flip(0)
            if f[1]:
                xi, ti = xi.flip(1), ti.flip(1)
            xb.append(xi)
            tb.append(ti)
        x = _to_input(torch.stack(xb), dev)
        t = torch.stack(tb).to(dev, torch.int64)
        logits = net(x)
        valid = int((t >= 0).sum())
        loss = F.cross_entropy(logits, t, ignore_index=-1, reduction="sum") / max(valid, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = float(loss.detach())
        loss_ema = lv if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * lv
        if bar is not None:
            bar.set_postfix(loss=f"{loss_ema:.3f}", refresh=False)
    if bar is not None:
        bar.close()
    net.eval()
    return PixelClassifier(net, ids, dev, train_seconds=time.perf_counter() - t0, final_loss=loss_ema)
