"""Tiled-TIFF output: one TIFF file per block, ``shards/block-<b:06d>.tif``.

Each file holds, for every sample of its block in order, the RGB image page
followed by the mask page (uint8 class ids): pages ``2j`` and ``2j+1`` are sample
``start + j``.  Pages are tiled (256x256), Adobe-deflate compressed with the
horizontal predictor (lossless, readable by libtiff/OpenSlide, tifffile, tiffslide),
and carry tifffile "shaped" JSON descriptions naming the sample index and page kind,
so every page is its own named series (``image-000123``, ``mask-000123``).  The
first page's description also holds the class table and the DatasetInfo.

A block file is written under a temporary name in ``shards/`` and renamed into
place, so a block file is either absent or whole.  See docs/formats.md.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from datagen.writers.base import (
    LAYOUT_VERSION,
    TMP_PREFIX,
    DatasetInfo,
    DatasetReader,
    DatasetWriter,
    compact_attrs,
    fsync_path,
)
from datagen.writers.manifest import FileRecord, file_digest

SHARDS_DIR = "shards"
TILE = 256
COMPRESSION = "adobe_deflate"  # TIFF compression 8: in every libtiff, hence OpenSlide
DEFLATE_LEVEL = 6


def block_file_name(block: int) -> str:
    return f"block-{block:06d}.tif"


def block_file(path: str | os.PathLike, block: int) -> Path:
    return Path(path) / SHARDS_DIR / block_file_name(block)


class TiffWriter(DatasetWriter):
    format = "tiff"

    def _init_store(self) -> None:
        (self.path / SHARDS_DIR).mkdir(exist_ok=True)

    def block_files(self, block: int) -> list[str]:
        return [f"{SHARDS_DIR}/{block_file_name(block)}"]

    def _temporary_places(self) -> list[Path]:
        return [self.path / SHARDS_DIR]

    def _write_data(self, block: int, images: np.ndarray, masks: np.ndarray) -> dict[str, FileRecord]:
        from datagen import __version__

        final = block_file(self.path, block)
        tmp = final.parent / f"{self.tmp_prefix}{final.name}.{uuid.uuid4().hex}"
        r = self.info.block_range(block)
        raw_bytes = images.nbytes + masks.nbytes
        # classic TIFF offsets are 32-bit; deflate rarely expands, but leave a wide margin
        bigtiff = raw_bytes > 2**31
        common: dict[str, Any] = {
            "tile": (TILE, TILE),
            "compression": COMPRESSION,
            "compressionargs": {"level": DEFLATE_LEVEL},
            "predictor": True,
            "software": f"datagen {__version__}",
        }
        try:
            with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
                for j, index in enumerate(r):
                    meta: dict[str, Any] = {
                        "name": f"image-{index:06d}",
                        "datagen": {"sample": index, "kind": "image", "block": block},
                    }
                    if j == 0:
                        meta["datagen"].update(
                            {
                                "layout_version": LAYOUT_VERSION,
                                "format": "tiff",
                                "classes": self.info.to_dict()["classes"],
                                # the recipe text is stored once, in info.json (here: its sha256)
                                "info": {**self.info.to_dict(), "attrs": compact_attrs(self.info.attrs)},
                            }
                        )
                    tw.write(images[j], photometric="rgb", metadata=meta, **common)
                    tw.write(
                        masks[j],
                        photometric="minisblack",
                        metadata={
                            "name": f"mask-{index:06d}",
                            "datagen": {"sample": index, "kind": "mask", "block": block},
                        },
                        **common,
                    )
            if self.fsync:
                fsync_path(tmp)
            record = file_digest(tmp)
            os.replace(tmp, final)
            if self.fsync:
                fsync_path(final.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return {f"{SHARDS_DIR}/{final.name}": record}


def page_metadata(page: Any) -> dict[str, Any]:
    """The datagen part of a page's JSON description ({} if there is none)."""
    try:
        doc = json.loads(page.description)
    except (ValueError, TypeError):
        return {}
    return doc.get("datagen", {}) if isinstance(doc, dict) else {}


class TiffReader(DatasetReader):
    """Reads block files with tifffile, keeping a few of them open (per process)."""

    format = "tiff"
    max_open = 4

    def __init__(self, path: str | os.PathLike, info: DatasetInfo) -> None:
        super().__init__(path, info)
        self._files: OrderedDict[int, tifffile.TiffFile] = OrderedDict()
        self._pid = os.getpid()

    def _tiff(self, block: int) -> tifffile.TiffFile:
        if self._pid != os.getpid():  # forked: never share file positions with the parent
            self._files = OrderedDict()
            self._pid = os.getpid()
        tf = self._files.get(block)
        if tf is not None:
            self._files.move_to_end(block)
            return tf
        tf = tifffile.TiffFile(block_file(self.path, block))
        self._files[block] = tf
        while len(self._files) > self.max_open:
            _, old = self._files.popitem(last=False)
            old.close()
        return tf

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        block = self.info.block_of(index)
        j = index - self.info.block_range(block).start
        tf = self._tiff(block)
        return tf.pages[2 * j].asarray(), tf.pages[2 * j + 1].asarray()

    def read_block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Read the block; raises ValueError if the file's page layout is not as expected."""
        r = self.info.block_range(block)
        tf = self._tiff(block)
        pages = tf.pages
        if len(pages) != 2 * len(r):
            raise ValueError(f"{block_file_name(block)} has {len(pages)} pages, expected {2 * len(r)}")
        images, masks = [], []
        for j, index in enumerate(r):
            for k, kind in ((2 * j, "image"), (2 * j + 1, "mask")):
                md = page_metadata(pages[k])
                if md.get("sample") != index or md.get("kind") != kind:
                    raise ValueError(
                        f"{block_file_name(block)} page {k}: expected {kind} of sample {index}, "
                        f"description says {md.get('kind')!r} of sample {md.get('sample')!r}"
                    )
            images.append(pages[2 * j].asarray())
            masks.append(pages[2 * j + 1].asarray())
        return _stack(images), _stack(masks)

    def block_files(self, block: int) -> list[str]:
        return [f"{SHARDS_DIR}/{block_file_name(block)}"]

    def structure_errors(self) -> list[str]:
        if not (self.path / SHARDS_DIR).is_dir():
            return [f"missing folder {SHARDS_DIR}/"]
        return []

    def leftovers(self) -> list[str]:
        sdir = self.path / SHARDS_DIR
        if not sdir.is_dir():
            return []
        return sorted(f"{SHARDS_DIR}/{p.name}" for p in sdir.iterdir() if p.name.startswith(TMP_PREFIX))

    def close(self) -> None:
        for tf in self._files.values():
            tf.close()
        self._files.clear()


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    dtypes = {a.dtype for a in arrays}
    if len(shapes) != 1 or len(dtypes) != 1:
        raise ValueError(f"pages differ in shape/dtype: {sorted(map(str, shapes))} {sorted(map(str, dtypes))}")
    return np.stack(arrays)
