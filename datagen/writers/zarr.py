"""Zarr v3 output: one group, ``data.zarr/``, with sharded ``images`` (N,H,W,3) and ``masks`` (N,H,W)
uint8 arrays (and ``instances`` (N,H,W) uint32 when the dataset has instance maps).

Chunks hold one sample; shards hold one block (``block_size`` samples), so block
``b`` is exactly one file per array (``data.zarr/images/c/<b>/0/0/0``,
``data.zarr/masks/c/<b>/0/0``, ...) and writing a block is a whole-shard write.
Chunks are zstd-compressed.  See docs/formats.md.

The group sits in its own folder beside ``info.json``, ``manifest/`` and the locks, so
plain zarr readers listing it find nothing but zarr nodes (zarr-python 3 skips only
``zarr.json`` when it lists a group and warns about every other entry).  Outputs of
layout 1 had the group in the output folder itself; they are still read and resumed.

A block is written into the writer's private temporary store (same metadata) and its
shard files are then renamed into place, so a block's files are replaced atomically
and never deleted: a reader sees the old or the new shard, never none.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import ZstdCodec

from datagen.errors import DatagenError
from datagen.fsutil import TMP_PREFIX, fsync_path, temp_name, write_exclusive
from datagen.writers.base import DatasetReader, DatasetWriter, remove_tree_quietly
from datagen.writers.info import LAYOUT_VERSION, DatasetInfo, compact_attrs, load_info
from datagen.writers.instances import CONNECTIVITY
from datagen.writers.manifest import FileRecord, file_record

ZSTD_LEVEL = 3
#: The group's folder inside the output (layout 2).
STORE_DIR = "data.zarr"
#: Root attribute keys written by datagen; ``attrs`` entries with these names are not copied to the root.
_RESERVED_ROOT_KEYS = ("datagen", "classes", "num_samples", "block_size", "height", "width", "ignore_index",
                       "instances")


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
            "instances": info.instances,
            "datagen": {"layout_version": LAYOUT_VERSION, "format": "zarr", "fingerprint": info.fingerprint()},
        }
    )
    return attrs


def _array_specs(info: DatasetInfo) -> dict[str, dict[str, Any]]:
    """Name -> shape, dtype, dimension names and attributes of each array of the group: the one
    table the writer builds from and the reader checks against."""
    n, h, w = info.num_samples, info.height, info.width
    classes = info.to_dict()["classes"]
    specs: dict[str, dict[str, Any]] = {
        "images": {"shape": (n, h, w, 3), "dtype": "uint8", "dims": ("sample", "y", "x", "channel"),
                   "attributes": {"kind": "image", "axes": "NYXC"}},
        "masks": {"shape": (n, h, w), "dtype": "uint8", "dims": ("sample", "y", "x"),
                  "attributes": {"kind": "mask", "axes": "NYX", "classes": classes, "ignore_index": info.ignore_index}},
    }
    if info.instances:
        specs["instances"] = {"shape": (n, h, w), "dtype": "uint32", "dims": ("sample", "y", "x"),
                              "attributes": {"kind": "instances", "axes": "NYX", "connectivity": CONNECTIVITY}}
    return specs


def _shard_shape(info: DatasetInfo, shape: tuple[int, ...]) -> tuple[int, ...]:
    return (info.block_size, *shape[1:])


def _build_metadata(group: Any, info: DatasetInfo) -> None:
    for name, spec in _array_specs(info).items():
        group.create_array(
            name,
            shape=spec["shape"],
            dtype=spec["dtype"],
            chunks=(1, *spec["shape"][1:]),
            shards=_shard_shape(info, spec["shape"]),
            compressors=[ZstdCodec(level=ZSTD_LEVEL)],
            fill_value=0,
            dimension_names=spec["dims"],
            attributes=spec["attributes"],
        )


def store_dir(path: str | os.PathLike) -> Path:
    """The folder of the zarr group of the output at ``path``: ``data.zarr/`` beside info.json, or the
    output folder itself in outputs of layout 1 (told apart by info.json's ``datagen_dataset``, which
    is written first, so a stray ``zarr.json`` in the output folder cannot mislead it)."""
    path = Path(path)
    _, doc = load_info(path)
    version = doc.get("datagen_dataset", 1)
    return path if isinstance(version, int) and version < 2 else path / STORE_DIR


def _block_files(store_prefix: str, arrays: dict[str, Any], block: int) -> list[str]:
    """The shard file of ``block`` of each array, relative to the output folder."""
    return [f"{store_prefix}{name}/" + arr.metadata.encode_chunk_key((block,) + (0,) * (arr.ndim - 1))
            for name, arr in arrays.items()]


def _store_prefix(path: Path, store: Path) -> str:
    return "" if store == path else store.relative_to(path).as_posix() + "/"


class ZarrWriter(DatasetWriter):
    format = "zarr"

    def _init_store(self) -> None:
        # Build the metadata documents in a private temporary store, then hard-link each
        # one into place unless it already exists: racing writers never see half a
        # zarr.json and never overwrite each other's.  The temporary store stays: blocks
        # are written into it and their shard files renamed into the output.
        self._prefix = _store_prefix(self.path, self.store)
        self._tmp = temp_name(self.path / "store", prefix=self.tmp_prefix)
        group = zarr.create_group(zarr.storage.LocalStore(self._tmp), attributes=root_attributes(self.info))
        _build_metadata(group, self.info)
        for file in sorted(self._tmp.rglob("zarr.json")):
            target = self.store / file.relative_to(self._tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_exclusive(target, file.read_bytes(), prefix=self.tmp_prefix)
        cfg = {"write_empty_chunks": True}  # keep one shard file per block, even for all-zero masks
        tmp_root = zarr.open_group(zarr.storage.LocalStore(self._tmp), mode="r+")
        self._arrays = {name: tmp_root[name].with_config(cfg) for name in _array_specs(self.info)}
        problems = ZarrReader(self.path, self.info).structure_errors()
        if problems:
            raise DatagenError(f"{self.path}: existing zarr arrays do not match info.json: " + "; ".join(problems))

    @cached_property
    def store(self) -> Path:
        """The folder of the zarr group (see :func:`store_dir`)."""
        return store_dir(self.path)

    def open_reader(self) -> ZarrReader:
        return ZarrReader(self.path, self.info)

    def block_files(self, block: int) -> list[str]:
        return _block_files(self._prefix, self._arrays, block)

    def _temporary_places(self) -> list[Path]:
        # leftovers of interrupted metadata writes sit beside their zarr.json
        places = [self.store / name for name in _array_specs(self.info)]
        return places if self.store == self.path else [self.store, *places]

    def _write_data(self, block: int, images: np.ndarray, masks: np.ndarray,
                    instances: np.ndarray | None = None) -> dict[str, FileRecord]:
        # write into the (empty) private store: zarr never reads old shard bytes of the output
        r = self.info.block_range(block)
        data = {"images": images, "masks": masks, "instances": instances}
        for name, arr in self._arrays.items():
            arr[r.start : r.stop] = data[name]
        records: dict[str, FileRecord] = {}
        try:
            for rel in self.block_files(block):
                src = self._tmp / rel.removeprefix(self._prefix)
                records[rel] = file_record(src.read_bytes())
                if self.fsync:
                    fsync_path(src)
            for rel in records:
                # a move of the file zarr wrote, not a write: atomic, the old shard (if any) until the new one is in
                dst = self.path / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._tmp / rel.removeprefix(self._prefix), dst)
                if self.fsync:
                    fsync_path(dst.parent)
        finally:
            for name in self._arrays:  # the private store holds no shard between blocks
                remove_tree_quietly(self._tmp / name / "c")
        return records

    def _close_store(self) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            remove_tree_quietly(tmp)

    def _clean_partials(self) -> list[str]:
        """zarr's own ``*.partial`` files in the output (left by versions that wrote shards in place)."""
        out = []
        for p in _partials(self.store, self.info):
            try:
                p.unlink()
            except OSError:
                continue
            out.append(str(p.relative_to(self.path)))
        return out


def _partials(store: Path, info: DatasetInfo) -> list[Path]:
    return [p for name in _array_specs(info) if (store / name).is_dir() for p in (store / name).rglob("*.partial")]


def _array_problems(arrays: dict[str, Any], info: DatasetInfo) -> list[str]:
    out = []
    for name, spec in _array_specs(info).items():
        arr = arrays[name]
        shape, shard = spec["shape"], _shard_shape(info, spec["shape"])
        if tuple(arr.shape) != shape:
            out.append(f"{name} has shape {tuple(arr.shape)}, expected {shape}")
        if arr.dtype != np.dtype(spec["dtype"]):
            out.append(f"{name} has dtype {arr.dtype}, expected {spec['dtype']}")
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
        self._arrays: dict[str, Any] | None = None
        self._pid = -1

    @cached_property
    def store(self) -> Path:
        """The folder of the zarr group (see :func:`store_dir`)."""
        return store_dir(self.path)

    def _open(self) -> dict[str, Any]:
        if self._arrays is None or self._pid != os.getpid():
            root = zarr.open_group(zarr.storage.LocalStore(self.store, read_only=True), mode="r")
            self._arrays = {name: root[name] for name in _array_specs(self.info)}
            self._pid = os.getpid()
        return self._arrays

    def structure_errors(self) -> list[str]:
        try:
            arrays = self._open()
        except Exception as exc:  # noqa: BLE001 - any failure to open is a finding
            names = ", ".join(f"'{n}'" for n in _array_specs(self.info))
            return [f"cannot open the zarr group {self.store} with arrays {names}: {type(exc).__name__}: {exc}"]
        return _array_problems(arrays, self.info)

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        arrays = self._open()
        return np.asarray(arrays["images"][index]), np.asarray(arrays["masks"][index])

    def read_block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        arrays = self._open()
        r = self.info.block_range(block)
        return np.asarray(arrays["images"][r.start : r.stop]), np.asarray(arrays["masks"][r.start : r.stop])

    def read_instances(self, index: int) -> np.ndarray:
        return np.asarray(self._open()["instances"][index])

    def read_block_instances(self, block: int) -> np.ndarray:
        r = self.info.block_range(block)
        return np.asarray(self._open()["instances"][r.start : r.stop])

    def block_files(self, block: int) -> list[str]:
        return _block_files(_store_prefix(self.path, self.store), self._open(), block)

    def leftovers(self) -> list[str]:
        out = [str(p.relative_to(self.path)) for p in _partials(self.store, self.info)]
        if self.store != self.path and self.store.is_dir():  # interrupted metadata writes inside the group
            out += [str((self.store / e).relative_to(self.path)) for e in os.listdir(self.store) if e.startswith(TMP_PREFIX)]
        return sorted(out)

    def close(self) -> None:
        self._arrays = None
