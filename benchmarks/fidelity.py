"""Mask fidelity: can a segmentation model read the written masks back from the images?

Two figures per *variant* of the written mask, side by side on the same samples (same
layouts, vectors and noise; only the written mask differs). The variants: ``layout``,
``cells`` and ``rendered`` (each mask mode alone: no confidence or boundary ignore) and
``recipe`` (the recipe's own paint settings, e.g. ``mask: rendered`` with
``min_confidence`` and ``boundary_ignore``):

* **qc**: ``datagen qc``'s independent pixel classifier, trained on the first half of
  ``--qc-num`` pairs and tested on the second: mIoU, per-class IoU, and IoU within
  +-8 px of mask boundaries (``band``) against the interior.
* **downstream**: a small U-Net (defined here, not datagen's) trained on N generated
  pairs for a fixed number of steps and tested on ``--test-num`` held-out pairs
  (sample indices after the training ones), for each N of ``--train-nums``.

Ignored pixels (keep regions, low-confidence boundary pixels) are left out of every
score, as a training loop with ``ignore_index`` leaves them out; the fraction of
ignored pixels is reported beside each mode.

    python benchmarks/fidelity.py [--recipe recipes/tissue-small-demo.yaml] [--variants layout,cells,rendered,recipe]
                                  [--train-nums 64,512] [--quick] [--json-out F]
"""

from __future__ import annotations

import argparse
import sys
import time

import _common as C

DEMO = C.ROOT / "recipes" / "tissue-small-demo.yaml"


def small_unet(num_classes: int, width: int = 16):  # noqa: ANN201
    """A 3-level U-Net (0.48 M parameters at width 16): the downstream model of the benchmark."""
    import torch
    from torch import nn

    def block(a: int, b: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                             nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.e1, self.e2, self.e3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.mid = block(4 * w, 8 * w)
            self.u3, self.d3 = nn.ConvTranspose2d(8 * w, 4 * w, 2, 2), block(8 * w, 4 * w)
            self.u2, self.d2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2), block(4 * w, 2 * w)
            self.u1, self.d1 = nn.ConvTranspose2d(2 * w, w, 2, 2), block(2 * w, w)
            self.head = nn.Conv2d(w, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.e1(x)
            e2 = self.e2(nn.functional.max_pool2d(e1, 2))
            e3 = self.e3(nn.functional.max_pool2d(e2, 2))
            m = self.mid(nn.functional.max_pool2d(e3, 2))
            d3 = self.d3(torch.cat([self.u3(m), e3], 1))
            d2 = self.d2(torch.cat([self.u2(d3), e2], 1))
            d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
            return self.head(d1)

    return UNet()


def downstream_miou(train_x, train_y, test_x, test_y, class_ids, ignore, *, steps: int, crop: int, batch: int,
                    seed: int) -> dict:
    """Train the small U-Net on (train_x, train_y) and score it on the test pairs (ignored pixels left out)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from datagen.qc.metrics import confusion_matrix, iou_from_confusion, mean_iou

    torch.manual_seed(seed)
    lut = np.full(256, -100 if ignore is None else 255, dtype=np.int64)
    lut[np.asarray(class_ids)] = np.arange(len(class_ids))
    ig = 255 if ignore is not None else -100
    X = torch.from_numpy(train_x).permute(0, 3, 1, 2).contiguous()
    Y = torch.from_numpy(lut[train_y])
    model = small_unet(len(class_ids))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    n, _, H, W = X.shape
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        i = torch.randint(n, (batch,), generator=g)
        y0 = torch.randint(H - crop + 1, (batch,), generator=g)
        x0 = torch.randint(W - crop + 1, (batch,), generator=g)
        xb = torch.stack([X[a, :, b:b + crop, c:c + crop] for a, b, c in zip(i.tolist(), y0.tolist(), x0.tolist())])
        yb = torch.stack([Y[a, b:b + crop, c:c + crop] for a, b, c in zip(i.tolist(), y0.tolist(), x0.tolist())])
        if torch.rand((), generator=g) < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        if torch.rand((), generator=g) < 0.5:
            xb, yb = xb.flip(-2), yb.flip(-2)
        loss = F.cross_entropy(model(xb.float() / 127.5 - 1), yb, ignore_index=ig)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        Xt = torch.from_numpy(test_x).permute(0, 3, 1, 2).float() / 127.5 - 1
        pred = torch.cat([model(Xt[k:k + 8]).argmax(1) for k in range(0, len(Xt), 8)]).numpy()
    pred_ids = np.asarray(class_ids, dtype=np.uint8)[pred]
    cm = confusion_matrix(test_y, pred_ids, class_ids, ignore_index=ignore)
    iou = iou_from_confusion(cm)
    return {"train_pairs": int(n), "miou": round(float(mean_iou(iou)), 4),
            "iou": {str(c): (None if np.isnan(v) else round(float(v), 4)) for c, v in zip(class_ids, iou)},
            "steps": steps, "train_s": round(train_s, 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--variants", default="layout,cells,rendered,recipe", help="mask variants to compare (comma-separated)")
    p.add_argument("--downstream-variants", default="layout,recipe",
                   help="variants the downstream U-Net is trained for (it is the slow part)")
    p.add_argument("--qc-num", type=int, default=48, help="pairs for the qc figure (half train, half test)")
    p.add_argument("--train-nums", default="64,512", help="training-set sizes of the downstream U-Net")
    p.add_argument("--test-num", type=int, default=64, help="held-out pairs the U-Net is scored on")
    p.add_argument("--steps", type=int, default=1000, help="U-Net optimiser steps (the same for every N)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-downstream", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.qc_num, a.train_nums, a.test_num, a.steps, a.crop = 8, "8", 4, 5, 32
        a.downstream_variants = "layout"
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)

    import numpy as np

    from datagen.generate import prepare, render_block
    from datagen.qc import qc_arrays

    recipe = a.recipe or (str(DEMO) if not a.quick and DEMO.exists() else str(C.default_recipe(a.quick)))
    train_nums = [int(x) for x in a.train_nums.split(",") if x]
    n_total = max([a.qc_num] + [n + a.test_num for n in train_nums] if not a.skip_downstream else [a.qc_num])
    job = prepare(recipe, num=n_total, seed=a.seed, device=device)
    r = job.renderer
    names = {c.id: c.name for c in r.classes if not c.keep}
    ignore = r.ignore_index
    layouts = np.stack([r.make_layout(i) for i in range(n_total)])
    result: dict = {"benchmark": "fidelity", "recipe": str(recipe), "seed": a.seed,
                    "classes": {str(k): v for k, v in names.items()},
                    "qc_pairs": a.qc_num, "test_pairs": a.test_num, "unet_steps": a.steps,
                    "ignore_index": ignore, "modes": {}}
    images = None
    recipe_paint = (r.mask_mode, r.min_confidence, r.boundary_ignore)
    downstream = {v.strip() for v in a.downstream_variants.split(",")}
    for mode in [m.strip() for m in a.variants.split(",") if m.strip()]:
        if mode == "recipe":
            r.mask_mode, r.min_confidence, r.boundary_ignore = recipe_paint
        elif mode in ("layout", "cells", "rendered"):
            r.mask_mode, r.min_confidence, r.boundary_ignore = mode, 0.0, 0
        else:
            raise SystemExit(f"unknown variant {mode!r}: expected layout, cells, rendered or recipe")
        t0 = time.perf_counter()
        plans = [r.plan(i, lay) for i, lay in enumerate(layouts)]
        imgs, masks = render_block(job, range(n_total), layouts, 8, plans)
        render_s = time.perf_counter() - t0
        if images is None:
            images = imgs
        assert np.array_equal(images, imgs), "the mask mode must not change the images"
        qc = qc_arrays(images[: a.qc_num], masks[: a.qc_num], class_names=names, ignore_index=ignore,
                       seed=a.seed, steps=5 if a.quick else 300, device="cpu")
        q = qc.to_dict()
        entry = {
            "paint": {"mask": r.mask_mode, "min_confidence": r.min_confidence, "boundary_ignore": r.boundary_ignore},
            "render_s": round(render_s, 1),
            "ignored_fraction": round(float((masks == ignore).mean()) if ignore is not None else 0.0, 4),
            "qc": {"miou": q["miou"], "iou": q["iou"], "band_miou": q["band_miou"], "interior_miou": q["interior_miou"],
                   "band_iou": q["band_iou"], "pixel_accuracy": q["pixel_accuracy"]},
            "downstream": [],
        }
        if not a.skip_downstream and mode in downstream:
            test = slice(n_total - a.test_num, n_total)
            for n in train_nums:
                entry["downstream"].append(downstream_miou(images[:n], masks[:n], images[test], masks[test],
                                                           sorted(names), ignore, steps=a.steps, crop=a.crop,
                                                           batch=a.batch, seed=a.seed))
                print(f"[fidelity] {mode}: U-Net on {n} pairs -> mIoU {entry['downstream'][-1]['miou']}",
                      file=sys.stderr, flush=True)
        result["modes"][mode] = entry
        print(f"[fidelity] {mode}: qc mIoU {q['miou']}, band {q['band_miou']}, interior {q['interior_miou']}",
              file=sys.stderr, flush=True)
    result["targets"] = {"qc_miou": 0.90, "min_class_iou": 0.80, "band_miou": 0.75, "downstream_miou_512": 0.85}
    result["machine"] = C.machine_info(device)
    C.emit(result, a)
    return result


if __name__ == "__main__":
    main()
