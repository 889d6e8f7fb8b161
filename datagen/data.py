"""PyTorch access to generated datasets (zarr or TIFF output folders).

    ds = SegmentationDataset("out/", transform=A.Compose([A.HorizontalFlip()]))
    image, mask = ds[0]      # float32 (3,H,W) in [0,1], int64 (H,W)
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=4)

Files are opened lazily, per process, so the dataset can be handed to DataLoader
workers (fork or spawn); no open handle is ever pickled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datagen.errors import DatagenError
from datagen.writers import READERS, DatasetInfo, detect_format, load_info, read_manifest


class SegmentationDataset(Dataset):
    """Image/mask pairs of a datagen output folder; the format (zarr or TIFF) is detected.

    Parameters
    ----------
    path:
        The output folder (the one holding ``info.json``).
    transform:
        Optional joint transform called as ``transform(image=HWC uint8, mask=HW uint8)``
        returning a dict with ``image`` and ``mask`` (an ``albumentations.Compose``, or
        anything with that interface).  Spatial transforms thus move image and mask
        together.  It runs on numpy arrays before tensor conversion; do not end it
        with ``ToTensorV2`` (tensors are made here), although tensors are accepted.
    return_tensors:
        True: ``(image float32 (3,H,W) in [0,1], mask int64 (H,W))`` torch tensors.
        If the transform already produced a float image (e.g. ``A.Normalize``) it is
        not rescaled.  False: the numpy arrays as they come out of the transform
        (by default ``(H,W,3) uint8`` and ``(H,W) uint8``).
    allow_incomplete:
        A dataset whose manifest does not cover every block is refused unless this is
        True; then only the samples of completed blocks are exposed, in index order
        (``sample_indices`` maps dataset positions to sample indices).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Callable[..., dict[str, Any]] | None = None,
        return_tensors: bool = True,
        *,
        allow_incomplete: bool = False,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatagenError(f"dataset folder {self.path} does not exist")
        self.info: DatasetInfo
        self.info, _ = load_info(self.path)
        self.format = detect_format(self.path)
        self.transform = transform
        self.return_tensors = return_tensors
        manifest = read_manifest(self.path, self.info)
        #: Sample index of each dataset position (all samples when complete).
        self.sample_indices: np.ndarray = manifest.completed_samples(self.info)
        if len(self.sample_indices) < self.info.num_samples and not allow_incomplete:
            raise DatagenError(
                f"dataset {self.path} is incomplete: {len(manifest.completed_blocks())} of "
                f"{self.info.num_blocks} blocks written ({len(self.sample_indices)} of "
                f"{self.info.num_samples} samples). Resume the run to finish it, or pass "
                "allow_incomplete=True to read only the completed samples."
            )
        # opens files lazily, per process; pickles without open handles (DataLoader workers)
        self._reader = READERS[self.format](self.path, self.info)

    @property
    def classes(self) -> list[dict[str, Any]]:
        """The class table: ``[{"id", "name", "color"}, ...]``; mask values are these ids."""
        return [dict(c) for c in self.info.classes]

    @property
    def num_classes(self) -> int:
        """``max class id + 1``: the number of logits a model needs."""
        return max(self.info.class_ids) + 1

    def __len__(self) -> int:
        return len(self.sample_indices)

    def read_raw(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored ``(image (H,W,3) uint8, mask (H,W) uint8)`` at dataset position ``idx``, untransformed."""
        n = len(self)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"index {idx} out of range for a dataset of {n} samples")
        return self._reader.read_sample(int(self.sample_indices[idx]))

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        image, mask = self.read_raw(idx)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        if not self.return_tensors:
            return image, mask
        return _image_tensor(image), _mask_tensor(mask)

    def close(self) -> None:
        self._reader.close()

    def __repr__(self) -> str:
        return f"SegmentationDataset({str(self.path)!r}, format={self.format}, samples={len(self)})"


def _image_tensor(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image
        if t.ndim == 3 and t.shape[-1] in (1, 3) and t.shape[0] not in (1, 3):
            t = t.permute(2, 0, 1)
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))
    if t.dtype == torch.uint8:
        return t.to(torch.float32).div_(255.0)
    return t.to(torch.float32)


def _mask_tensor(mask: Any) -> torch.Tensor:
    if isinstance(mask, torch.Tensor):
        return mask.to(torch.int64)
    return torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
