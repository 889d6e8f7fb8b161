"""PyTorch access to generated datasets (zarr or TIFF output folders).

    ds = SegmentationDataset("out/", transform=A.Compose([A.HorizontalFlip()]))
    image, mask = ds[0]      # float32 (3,H,W) in [0,1], int64 (H,W); ds.ignore_index marks "no class"
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
from datagen.writers import READERS, DatasetInfo, detect_format, load_info, read_manifest, sample_sha256
from datagen.writers.verify import short


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
    verify:
        True (default): the first time a process reads a sample, its sha256 is compared
        with the manifest, so corrupted data raises instead of being trained on (about
        the cost of decoding it; later reads of the sample are not hashed again).
        Whatever this is, a block whose files are missing or have another size than
        recorded raises :class:`~datagen.errors.DatagenError` (naming the dataset, block
        and sample) instead of reading as zeros, and so does an undecodable sample.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Callable[..., dict[str, Any]] | None = None,
        return_tensors: bool = True,
        *,
        allow_incomplete: bool = False,
        verify: bool = True,
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
        self.verify = verify
        #: sha256 of every sample as recorded (N, 32) uint8; blocks recorded more than once
        #: with other content keep their alternatives in ``_alt_hashes``.
        self._hashes = np.zeros((self.info.num_samples, 32), dtype=np.uint8)
        self._alt_hashes: dict[int, list[bytes]] = {}
        self._file_sizes: dict[int, list[dict[str, int]]] = {}
        for b, entries in manifest.entries.items():
            r = self.info.block_range(b)
            lists = manifest.hashes(b)
            self._hashes[r.start:r.stop] = np.frombuffer(bytes.fromhex("".join(lists[0])), dtype=np.uint8).reshape(-1, 32)
            for alt in lists[1:]:
                for i, hx in zip(r, alt):
                    self._alt_hashes.setdefault(i, []).append(bytes.fromhex(hx))
            sizes = [{f: int(v[0]) for f, v in e.files.items()} for e in entries if e.files]
            if sizes:
                self._file_sizes[b] = sizes
        self._checked_blocks: set[int] = set()
        self._verified = np.zeros(self.info.num_samples, dtype=bool)

    @property
    def classes(self) -> list[dict[str, Any]]:
        """The class table: ``[{"id", "name", "color"}, ...]``; mask values are these ids."""
        return [dict(c) for c in self.info.classes]

    @property
    def num_classes(self) -> int:
        """``max class id + 1``: the number of logits a model needs (the ignore value is not a class)."""
        return max(self.info.class_ids) + 1

    @property
    def ignore_index(self) -> int | None:
        """Mask value of pixels that claim no class (keep regions, unpainted slivers), or None.

        Pass it to the loss: ``nn.CrossEntropyLoss(ignore_index=ds.ignore_index)``. It stays
        the same value after ``transform`` (give albumentations' ``mask_fill_value`` /
        ``fill_mask`` this value so padding from rotations is ignored too).
        """
        return self.info.ignore_index

    def __len__(self) -> int:
        return len(self.sample_indices)

    def read_raw(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored ``(image (H,W,3) uint8, mask (H,W) uint8)`` at dataset position ``idx``, untransformed."""
        n = len(self)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"index {idx} out of range for a dataset of {n} samples")
        index = int(self.sample_indices[idx])
        block = self.info.block_of(index)
        if block not in self._checked_blocks:
            self._check_block_files(block, index)
        try:
            image, mask = self._reader.read_sample(index)
        except Exception as exc:  # noqa: BLE001 - codec/IO errors name no file or sample: say which
            raise self._damaged(block, index, f"cannot be read ({type(exc).__name__}: {short(exc)})") from exc
        if self.verify and not self._verified[index]:
            h, w = self.info.height, self.info.width
            if np.shape(image) != (h, w, 3) or np.shape(mask) != (h, w):
                raise self._damaged(block, index, f"has shape {np.shape(image)}/{np.shape(mask)}, expected {(h, w, 3)}/{(h, w)}")
            digest = bytes.fromhex(sample_sha256(image, mask))
            if digest != self._hashes[index].tobytes() and digest not in self._alt_hashes.get(index, ()):
                raise self._damaged(block, index, "does not match its sha256 in the manifest (corrupted data)")
            self._verified[index] = True
        return image, mask

    def _check_block_files(self, block: int, index: int) -> None:
        """Once per block and process: its files exist and have a recorded size (cheap: stat only)."""
        files = self._reader.block_files(block)
        sizes: dict[str, int] = {}
        for f in files:
            try:
                sizes[f] = (self.path / f).stat().st_size
            except OSError:
                raise self._damaged(block, index, f"is missing: file {f} does not exist") from None
        recorded = self._file_sizes.get(block)
        if recorded and not any(all(r.get(f) == sizes[f] for f in files) for r in recorded):
            r = recorded[-1]
            bad = ", ".join(f"{f} has {sizes[f]} bytes, recorded {r.get(f)}" for f in files if r.get(f) != sizes[f])
            raise self._damaged(block, index, f"is damaged: {bad}")
        self._checked_blocks.add(block)

    def _damaged(self, block: int, index: int, problem: str) -> DatagenError:
        return DatagenError(
            f"dataset {self.path}: sample {index} (block {block}) {problem}. "
            f"Check it with `datagen validate {self.path}`; rerun the generate command with --resume "
            "to rewrite damaged blocks."
        )

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
