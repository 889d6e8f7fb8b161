"""Output writers: stream image/mask pairs, one block at a time, into a zarr v3 store or tiled TIFFs.

Typical use (one worker of ``num_shards``)::

    info = DatasetInfo(num_samples=1000, height=256, width=256, classes=[...], attrs={...})
    with open_writer("zarr", out, info, resume=True, shard_index=k, num_shards=m) as w:
        for block in w.pending_blocks():
            r = info.block_range(block)
            images, masks = generate(r)          # (B,H,W,3) uint8, (B,H,W) uint8
            w.write_block(block, images, masks)

Modules: ``info`` (DatasetInfo, info.json), ``manifest`` (which blocks are done, what is
left), ``base`` (the writer/reader interface), one module per format (``zarr``, ``tiff``),
``lock``, ``verify`` and ``instances`` (instance maps derived from masks).

See docs/formats.md for the on-disk layouts and the resume semantics.
"""

from __future__ import annotations

import os
from pathlib import Path

from datagen.errors import ConfigError, DatagenError
from datagen.writers.base import DatasetReader, DatasetWriter
from datagen.writers.info import INFO_FILE, VOLATILE_ATTRS, DatasetInfo, blocks_for_worker, load_info
from datagen.writers.instances import instance_map
from datagen.writers.manifest import Manifest, ManifestEntry, blocks_left, read_manifest, sample_sha256
from datagen.writers.tiff import SHARDS_DIR, TiffReader, TiffWriter
from datagen.writers.zarr import STORE_DIR, ZarrReader, ZarrWriter

WRITERS: dict[str, type[DatasetWriter]] = {"zarr": ZarrWriter, "tiff": TiffWriter}
READERS: dict[str, type[DatasetReader]] = {"zarr": ZarrReader, "tiff": TiffReader}


def open_writer(
    format: str,  # noqa: A002 - the user-facing name
    path: str | os.PathLike,
    info: DatasetInfo,
    *,
    resume: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    fsync: bool = True,
) -> DatasetWriter:
    """Create (or join / resume) the output at ``path`` with the writer for ``format`` ("zarr" or "tiff")."""
    cls = WRITERS.get(format)
    if cls is None:
        raise ConfigError(f"unknown output format {format!r}; expected one of: {', '.join(WRITERS)}", field="format")
    return cls.create(path, info, resume=resume, shard_index=shard_index, num_shards=num_shards, fsync=fsync)


def detect_format(path: str | os.PathLike) -> str:
    """The storage format of the output at ``path`` ("zarr" or "tiff"), from its info.json."""
    _, doc = load_info(path)
    fmt = doc.get("format")
    if fmt is None:  # older/hand-made info.json: look at the folder
        root = Path(path)
        if (root / STORE_DIR / "zarr.json").is_file() or (root / "zarr.json").is_file():
            fmt = "zarr"
        elif (root / SHARDS_DIR).is_dir():
            fmt = "tiff"
    if fmt not in READERS:
        raise DatagenError(f"{path}: unknown dataset format {fmt!r} in {INFO_FILE}")
    return fmt


def open_reader(path: str | os.PathLike) -> DatasetReader:
    """A reader for the output at ``path`` (format detected from info.json)."""
    info, _ = load_info(path)
    return READERS[detect_format(path)](path, info)


__all__ = [
    "INFO_FILE",
    "READERS",
    "VOLATILE_ATTRS",
    "WRITERS",
    "DatasetInfo",
    "DatasetReader",
    "DatasetWriter",
    "Manifest",
    "ManifestEntry",
    "TiffReader",
    "TiffWriter",
    "ZarrReader",
    "ZarrWriter",
    "blocks_for_worker",
    "blocks_left",
    "detect_format",
    "instance_map",
    "load_info",
    "open_reader",
    "open_writer",
    "read_manifest",
    "sample_sha256",
]
