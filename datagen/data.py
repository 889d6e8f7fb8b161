"""PyTorch access to generated datasets (zarr or TIFF output folders).

    ds = SegmentationDataset("out/", transform=A.Compose([A.HorizontalFlip()]))
    image, mask = ds[0]      # float32 (3,H,W) in [0,1], int64 (H,W); ds.ignore_index marks "no class"
    image, mask, instances = SegmentationDataset("out/", instances=True)[0]   # datasets made with --instances
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

from datagen.errors import DatagenError, arg
from datagen.writers import READERS, DatasetInfo, detect_format, instance_map, load_info, read_manifest, sample_sha256
from datagen.writers.manifest import FileRecord
from datagen.writers.verify import check_files, file_records, read_error


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
    instances:
        Also return each sample's instance map as a third item (int64 (H,W) tensor, or the
        uint32 array with ``return_tensors=False``): one id per connected region of one class,
        0 where the mask holds the ignore value.  Only for datasets generated with instance
        maps (``generate(..., instances=True)`` / ``--instances``).  A transform gets it as
        ``masks=[instances]`` (int32: OpenCV warps no uint32), so albumentations moves it with
        the mask; with ``verify`` it is checked against its mask on first read.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Callable[..., dict[str, Any]] | None = None,
        return_tensors: bool = True,
        *,
        allow_incomplete: bool = False,
        verify: bool = True,
        instances: bool = False,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatagenError(f"dataset folder {self.path} does not exist")
        self.info: DatasetInfo
        self.info, _ = load_info(self.path)
        self.format = detect_format(self.path)
        if instances and not self.info.instances:
            raise DatagenError(f"dataset {self.path} has no instance maps; generate it with {arg('instances', True)} "
                               "to read them")
        self.instances = instances
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
        self._file_records: dict[int, list[dict[str, FileRecord]]] = {}
        for b in manifest.entries:
            r = self.info.block_range(b)
            lists = manifest.hashes(b)
            self._hashes[r.start:r.stop] = np.frombuffer(bytes.fromhex("".join(lists[0])), dtype=np.uint8).reshape(-1, 32)
            for alt in lists[1:]:
                for i, hx in zip(r, alt):
                    self._alt_hashes.setdefault(i, []).append(bytes.fromhex(hx))
            self._file_records[b] = file_records(manifest, b)
        self._checked_blocks: set[int] = set()
        self._verified = np.zeros(self.info.num_samples, dtype=bool)
        self._instances_verified = np.zeros(self.info.num_samples if instances else 0, dtype=bool)

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
        if block not in self._checked_blocks:  # once per block and process: files exist, recorded sizes (stat only)
            problem = check_files(self._reader, self._file_records.get(block, []), block, checksum=False)
            if problem:
                raise self._damaged(block, index, f"is damaged: {problem}")
            self._checked_blocks.add(block)
        try:
            image, mask = self._reader.read_sample(index)
        except Exception as exc:  # noqa: BLE001 - codec/IO errors name no file or sample: say which
            raise self._damaged(block, index, read_error(exc)) from exc
        if self.verify and not self._verified[index]:
            h, w = self.info.height, self.info.width
            if np.shape(image) != (h, w, 3) or np.shape(mask) != (h, w):
                raise self._damaged(block, index, f"has shape {np.shape(image)}/{np.shape(mask)}, expected {(h, w, 3)}/{(h, w)}")
            digest = bytes.fromhex(sample_sha256(image, mask))
            if digest != self._hashes[index].tobytes() and digest not in self._alt_hashes.get(index, ()):
                raise self._damaged(block, index, "does not match its sha256 in the manifest (corrupted data)")
            self._verified[index] = True
        return image, mask

    def _damaged(self, block: int, index: int, problem: str) -> DatagenError:
        return DatagenError(
            f"dataset {self.path}: sample {index} (block {block}) {problem}. "
            f"Check it with `datagen validate {self.path}`; rerun the generate command with {arg('resume', True)} "
            "to rewrite damaged blocks."
        )

    def read_instances(self, idx: int) -> np.ndarray:
        """The stored instance map (H,W) uint32 at dataset position ``idx`` (``instances=True`` only)."""
        _, mask = self.read_raw(idx)  # checks the block's files (and, with verify, the mask)
        return self._instances(idx, mask)

    def _instances(self, idx: int, mask: np.ndarray) -> np.ndarray:
        if not self.instances:
            raise DatagenError("instance maps are read with SegmentationDataset(..., instances=True)")
        index = int(self.sample_indices[idx])
        block = self.info.block_of(index)
        try:
            inst = self._reader.read_instances(index)
        except Exception as exc:  # noqa: BLE001 - as in read_raw
            raise self._damaged(block, index, f"instance map {read_error(exc)}") from exc
        if self.verify and not self._instances_verified[index]:
            if not np.array_equal(inst, instance_map(mask, self.info.ignore_index)):
                raise self._damaged(block, index, "has an instance map that does not match its mask (corrupted data)")
            self._instances_verified[index] = True
        return inst

    def __getitem__(self, idx: int) -> tuple[Any, ...]:
        image, mask = self.read_raw(idx)
        inst = self._instances(idx, mask) if self.instances else None
        if self.transform is not None:
            extra = {"masks": [inst.astype(np.int32)]} if inst is not None else {}
            out = self.transform(image=image, mask=mask, **extra)
            image, mask = out["image"], out["mask"]
            if inst is not None:
                inst = out["masks"][0]
                if isinstance(inst, np.ndarray):
                    inst = inst.astype(np.uint32)
        if not self.return_tensors:
            return (image, mask) if inst is None else (image, mask, inst)
        tensors = (_image_tensor(image), _mask_tensor(mask))
        return tensors if inst is None else (*tensors, _mask_tensor(inst))

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
