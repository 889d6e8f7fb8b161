"""Train a tiny segmentation network on a datagen output folder (CPU, a few steps).

    python examples/train_segmentation.py OUT --steps 20

Shows the intended way to consume generated data: ``SegmentationDataset`` (zarr or
TIFF output, detected), an optional albumentations transform applied jointly to
image and mask, and a plain DataLoader.  The network is deliberately small; swap in
a real model (a U-Net, DeepLab, ...) for actual training.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from datagen.data import SegmentationDataset
from datagen.errors import DatagenError


def tiny_segnet(num_classes: int, width: int = 16) -> nn.Module:
    """A few 3x3 convolutions and a 1x1 classifier: per-pixel logits (B, num_classes, H, W)."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=2, dilation=2),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=4, dilation=4),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, num_classes, 1),
    )


def build_transform(augment: bool):  # noqa: ANN201
    if not augment:
        return None
    try:
        import albumentations as A
    except ImportError:
        print("albumentations is not installed; training without augmentation", file=sys.stderr)
        return None
    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="datagen output folder (zarr or TIFF format)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default 20)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--no-augment", action="store_true", help="no random flips")
    p.add_argument("--allow-incomplete", action="store_true", help="train on the completed part of a partial run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    try:
        ds = SegmentationDataset(
            args.dataset, transform=build_transform(not args.no_augment), allow_incomplete=args.allow_incomplete
        )
    except DatagenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(ds) == 0:
        print(f"error: {args.dataset} has no completed samples yet", file=sys.stderr)
        return 2
    names = ", ".join(f"{c['id']}={c['name']}" for c in ds.classes)
    print(f"{ds}: {len(ds)} samples {ds.info.height}x{ds.info.width}, classes {names}, ignore value {ds.ignore_index}")

    loader = DataLoader(
        ds,
        batch_size=min(args.batch_size, len(ds)),
        shuffle=True,
        num_workers=args.num_workers,
        drop_last=len(ds) >= args.batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )
    model = tiny_segnet(ds.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # pixels that claim no class (keep regions, unpainted slivers) carry ds.ignore_index:
    # they must not be learnt as any class
    ignore = ds.ignore_index if ds.ignore_index is not None else -100
    loss_fn = nn.CrossEntropyLoss(ignore_index=ignore)
    model.train()
    step, t0 = 0, time.perf_counter()
    while step < args.steps:
        for images, masks in loader:
            logits = model(images)
            loss = loss_fn(logits, masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            with torch.no_grad():
                valid = masks != ignore
                acc = (logits.argmax(1) == masks)[valid].float().mean().item() if valid.any() else float("nan")
            print(f"step {step:4d}/{args.steps}  loss {loss.item():.4f}  pixel-acc {acc:.3f}", flush=True)
            if step >= args.steps:
                break
    print(f"done: {args.steps} steps in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
