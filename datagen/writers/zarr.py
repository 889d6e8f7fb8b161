"""Zarr v3 output: one group with sharded ``images`` (N,H,W,3) and ``masks`` (N,H,W) uint8 arrays.

Chunks hold one sample; shards hold one block (``block_size`` samples), so block
``b`` is exactly the two files ``images/c/<b>/0/0/0`` and ``masks/c/<b>/0/0`` and
writing a block is a whole-shard write.  Chunks are zstd-compressed.  See docs/formats.md.

A block is written into the writer's private temporary store (same metadata) and its
two shard files are then renamed into place, so a block's files are replaced
atomically and never deleted: a reader sees the old or the new shard, never none.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import ZstdCodec

from datagen.writers.base import (
    LAYOUT_VERSION,
    DatasetInfo,
    DatasetReader,
    DatasetWriter,
    compact_attrs,
    fsync_path,
    remove_tree_quietly,
    write_exclusive,
)
from datagen.writers.manifest import FileRecord, file_record

ZSTD_LEVEL = 3
#: Root attribute keys written by datagen; ``attrs`` entries with these names are not copied to the root.
_RESERVED_ROOT_KEYS = ("datagen", "classes", "num_samples", "block_size", "height", "width", "ignore_index")


def root_attributes(info: DatasetInfo) -> dict[str, Any]:
    # the recipe text is stored once, in info.json; the root attributes carry its sha256
    attrs: dict[str, Any] = {k: v for k, v in compact_attrs(info.to_dict()["attrs"]).items() if k not in _RESERVED_ROOT_KEYS}
    attrs.update(
        {
            "classes": info.to_dict()["classes"],
            "num_samples": info.num_samples,
            "height": info.height,
            "width": info.width,
            "block_size": info.block_size,
            "ignore_index": info.ignore_index,
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
        attributes={"kind": "mask", "axes": "NYX", "classes": info.to_dict()["classes"], "ignore_index": info.ignore_index},
    )


class ZarrWriter(DatasetWriter):
    format = "zarr"

    def _init_store(self) -> None:
        # Build the metadata documents in a private temporary store, then hard-link each
        # one into place unless it already exists: racing writers never see half a
        # zarr.json and never overwrite each other's.  The temporary store stays: blocks
        # are written into it and their shard files renamed into the output.
        self._tmp = self.path / f"{self.tmp_prefix}store-{uuid.uuid4().hex}"
        group = zarr.create_group(zarr.storage.LocalStore(self._tmp), attributes=root_attributes(self.info))
        _build_metadata(group, self.info)
        for file in sorted(self._tmp.rglob("zarr.json")):
            target = self.path / file.relative_to(self._tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_exclusive(target, file.read_bytes(), tmp_prefix=self.tmp_prefix)
        cfg = {"write_empty_chunks": True}  # keep one shard file per block, even for all-zero masks
        tmp_root = zarr.open_group(zarr.storage.LocalStore(self._tmp), mode="r+")
        self._images = tmp_root["images"].with_config(cfg)
        self._masks = tmp_root["masks"].with_config(cfg)
        root = zarr.open_group(zarr.storage.LocalStore(self.path, read_only=True), mode="r")
        problems = _array_problems(root["images"], root["masks"], self.info)
        if problems:
            from datagen.errors import DatagenError

            raise DatagenError(f"{self.path}: existing zarr arrays do not match info.json: " + "; ".join(problems))

    def block_files(self, block: int) -> list[str]:
        return _block_files(self._images, self._masks, block)

    def _write_data(self, block: int, images: np.ndarray, masks: np.ndarray) -> dict[str, FileRecord]:
        # write into the (empty) private store: zarr never reads old shard bytes of the output
        r = self.info.block_range(block)
        self._images[r.start : r.stop] = images
        self._masks[r.start : r.stop] = masks
        records: dict[str, FileRecord] = {}
        try:
            for rel in self.block_files(block):
                src = self._tmp / rel
                records[rel] = file_record(src.read_bytes())
                if self.fsync:
                    fsync_path(src)
            for rel in records:
                dst = self.path / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._tmp / rel, dst)  # atomic: the old shard (if any) until the new one is in place
                if self.fsync:
                    fsync_path(dst.parent)
        finally:
            for sub in ("images", "masks"):  # the private store holds no shard between blocks
                remove_tree_quietly(self._tmp / sub / "c")
        return records

    def _close_store(self) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            remove_tree_quietly(tmp)

    def _clean_partials(self) -> list[str]:
        """zarr's own ``*.partial`` files in the output (left by versions that wrote shards in place)."""
        out = []
        for sub in ("images", "masks"):
            base = self.path / sub
            if base.is_dir():
                for p in base.rglob("*.partial"):
                    try:
                        p.unlink()
                    except OSError:
                        continue
                    out.append(str(p.relative_to(self.path)))
        return out


def _block_files(images: Any, masks: Any, block: int) -> list[str]:
    return [
        "images/" + images.metadata.encode_chunk_key((block, 0, 0, 0)),
        "masks/" + masks.metadata.encode_chunk_key((block, 0, 0)),
    ]


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

    def block_files(self, block: int) -> list[str]:
        images, masks = self._open()
        return _block_files(images, masks, block)

    def leftovers(self) -> list[str]:
        out = []
        for sub in ("images", "masks"):
            base = self.path / sub
            if base.is_dir():
                out += [str(p.relative_to(self.path)) for p in base.rglob("*.partial")]
        return sorted(out)

    def close(self) -> None:
        self._arrays = None
