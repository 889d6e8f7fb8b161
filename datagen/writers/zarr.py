"""Zarr v3 output: one group with sharded ``images`` (N,H,W,3) and ``masks`` (N,H,W) uint8 arrays.

Chunks hold one sample; shards hold one block (``block_size`` samples), so block
``b`` is exactly the two files ``images/c/<b>/0/0/0`` and ``masks/c/<b>/0/0`` and
writing a block is a whole-shard write.  Chunks are zstd-compressed.  See docs/formats.md.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import ZstdCodec

from datagen.writers.base import (
    LAYOUT_VERSION,
    TMP_PREFIX,
    DatasetInfo,
    DatasetReader,
    DatasetWriter,
    fsync_path,
    remove_tree_quietly,
    write_exclusive,
)

ZSTD_LEVEL = 3
#: Root attribute keys written by datagen; ``attrs`` entries with these names are not copied to the root.
_RESERVED_ROOT_KEYS = ("datagen", "classes", "num_samples", "block_size", "height", "width")


def root_attributes(info: DatasetInfo) -> dict[str, Any]:
    attrs: dict[str, Any] = {k: v for k, v in info.to_dict()["attrs"].items() if k not in _RESERVED_ROOT_KEYS}
    attrs.update(
        {
            "classes": info.to_dict()["classes"],
            "num_samples": info.num_samples,
            "height": info.height,
            "width": info.width,
            "block_size": info.block_size,
            "datagen": {"layout_version": LAYOUT_VERSION, "format": "zarr", "fingerprint": info.fingerprint()},
        }
    )
    return attrs


def _build_metadata(group: Any, info: DatasetInfo) -> None:
    n, h, w, bs = info.num_samples, info.height, info.width, info.block_size
    compressors = [ZstdCodec(level=ZSTD_LEVEL)]
    group.create_array(
        "images",
        shape=(n, h, w, 3),
        dtype="uint8",
        chunks=(1, h, w, 3),
        shards=(bs, h, w, 3),
        compressors=compressors,
        fill_value=0,
        dimension_names=("sample", "y", "x", "channel"),
        attributes={"kind": "image", "axes": "NYXC"},
    )
    group.create_array(
        "masks",
        shape=(n, h, w),
        dtype="uint8",
        chunks=(1, h, w),
        shards=(bs, h, w),
        compressors=compressors,
        fill_value=0,
        dimension_names=("sample", "y", "x"),
        attributes={"kind": "mask", "axes": "NYX", "classes": info.to_dict()["classes"]},
    )


class ZarrWriter(DatasetWriter):
    format = "zarr"

    def _init_store(self) -> None:
        # Build the metadata documents in a private temporary store, then hard-link each
        # one into place unless it already exists: racing writers never see half a
        # zarr.json and never overwrite each other's.
        tmp = self.path / f"{TMP_PREFIX}zarrmeta-{uuid.uuid4().hex}"
        try:
            group = zarr.create_group(zarr.storage.LocalStore(tmp), attributes=root_attributes(self.info))
            _build_metadata(group, self.info)
            for file in sorted(tmp.rglob("zarr.json")):
                target = self.path / file.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                write_exclusive(target, file.read_bytes())
        finally:
            remove_tree_quietly(tmp)
        store = zarr.storage.LocalStore(self.path)
        root = zarr.open_group(store, mode="r+")
        cfg = {"write_empty_chunks": True}  # keep one shard file per block, even for all-zero masks
        self._images = root["images"].with_config(cfg)
        self._masks = root["masks"].with_config(cfg)
        problems = _array_problems(self._images, self._masks, self.info)
        if problems:
            from datagen.errors import DatagenError

            raise DatagenError(f"{self.path}: existing zarr arrays do not match info.json: " + "; ".join(problems))

    def _shard_files(self, block: int) -> list[Path]:
        return [
            self.path / "images" / self._images.metadata.encode_chunk_key((block, 0, 0, 0)),
            self.path / "masks" / self._masks.metadata.encode_chunk_key((block, 0, 0)),
        ]

    def _write_data(self, block: int, images: np.ndarray, masks: np.ndarray) -> None:
        # Remove whatever an interrupted earlier attempt left, so zarr writes the shard
        # from scratch instead of reading (possibly garbage) old shard bytes first.
        files = self._shard_files(block)
        for f in files:
            f.unlink(missing_ok=True)
        r = self.info.block_range(block)
        self._images[r.start : r.stop] = images
        self._masks[r.start : r.stop] = masks
        if self.fsync:
            for f in files:
                fsync_path(f)
                fsync_path(f.parent)


def _array_problems(images: Any, masks: Any, info: DatasetInfo) -> list[str]:
    n, h, w, bs = info.num_samples, info.height, info.width, info.block_size
    out = []
    for name, arr, shape, shard in (
        ("images", images, (n, h, w, 3), (bs, h, w, 3)),
        ("masks", masks, (n, h, w), (bs, h, w)),
    ):
        if tuple(arr.shape) != shape:
            out.append(f"{name} has shape {tuple(arr.shape)}, expected {shape}")
        if arr.dtype != np.uint8:
            out.append(f"{name} has dtype {arr.dtype}, expected uint8")
        shards = getattr(arr, "shards", None)
        if shards is not None and tuple(shards) != shard:
            out.append(f"{name} has shard shape {tuple(shards)}, expected {shard}")
        elif shards is None:
            out.append(f"{name} is not sharded (expected shards of {shard})")
    return out


class ZarrReader(DatasetReader):
    format = "zarr"

    def __init__(self, path: str | os.PathLike, info: DatasetInfo) -> None:
        super().__init__(path, info)
        self._arrays: tuple[Any, Any] | None = None
        self._pid = -1

    def _open(self) -> tuple[Any, Any]:
        if self._arrays is None or self._pid != os.getpid():
            root = zarr.open_group(zarr.storage.LocalStore(self.path, read_only=True), mode="r")
            self._arrays = (root["images"], root["masks"])
            self._pid = os.getpid()
        return self._arrays

    def structure_errors(self) -> list[str]:
        try:
            images, masks = self._open()
        except Exception as exc:  # noqa: BLE001 - any failure to open is a finding
            return [f"cannot open zarr group with arrays 'images' and 'masks': {exc}"]
        return _array_problems(images, masks, self.info)

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, masks = self._open()
        return np.asarray(images[index]), np.asarray(masks[index])

    def read_block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        images, masks = self._open()
        r = self.info.block_range(block)
        return np.asarray(images[r.start : r.stop]), np.asarray(masks[r.start : r.stop])

    def _shard_files(self, block: int) -> list[Path]:
        images, masks = self._open()
        return [
            self.path / "images" / images.metadata.encode_chunk_key((block, 0, 0, 0)),
            self.path / "masks" / masks.metadata.encode_chunk_key((block, 0, 0)),
        ]

    def block_present(self, block: int) -> bool:
        return all(f.is_file() for f in self._shard_files(block))

    def leftovers(self) -> list[str]:
        out = []
        for sub in ("images", "masks"):
            base = self.path / sub
            if base.is_dir():
                out += [str(p.relative_to(self.path)) for p in base.rglob("*.partial")]
        return sorted(out)

    def close(self) -> None:
        self._arrays = None
