"""Tiled-TIFF output: one TIFF file per block, ``shards/block-<b:06d>.tif``.

Each file holds, for every sample of its block in order, the RGB image page
followed by the mask page (uint8 class ids): pages ``2j`` and ``2j+1`` are sample
``start + j``.  Pages are tiled (256x256), Adobe-deflate compressed with the
horizontal predictor (lossless, readable by libtiff/OpenSlide, tifffile, tiffslide),
and carry tifffile "shaped" JSON descriptions naming the sample index and page kind,
so every page is its own named series (``image-000123``, ``mask-000123``).  The
first page's description also holds the class table and the DatasetInfo.  Datasets
with instance maps also have ``shards/block-<b:06d>-instances.tif``: one uint32 page
per sample (``instances-000123``), so the image/mask file keeps its page layout.

Each block file is written under a temporary name in ``shards/`` and renamed into
place, so a block file is either absent or whole.  See docs/formats.md.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from datagen.fsutil import TMP_PREFIX, atomic_path
from datagen.writers.base import DatasetReader, DatasetWriter
from datagen.writers.info import LAYOUT_VERSION, DatasetInfo, compact_attrs
from datagen.writers.manifest import FileRecord, file_digest

SHARDS_DIR = "shards"
TILE = 256
COMPRESSION = "adobe_deflate"  # TIFF compression 8: in every libtiff, hence OpenSlide
DEFLATE_LEVEL = 6


def block_file_name(block: int, *, instances: bool = False) -> str:
    return f"block-{block:06d}{'-instances' if instances else ''}.tif"


def block_file(path: str | os.PathLike, block: int, *, instances: bool = False) -> Path:
    return Path(path) / SHARDS_DIR / block_file_name(block, instances=instances)


def _block_files(info: DatasetInfo, block: int) -> list[str]:
    """The files of ``block``, relative to the output folder: image/mask file, then the instance file."""
    kinds = (False, True) if info.instances else (False,)
    return [f"{SHARDS_DIR}/{block_file_name(block, instances=k)}" for k in kinds]


#: A page to write: (array, photometric, ``metadata`` of its description).
_Page = tuple[np.ndarray, str, dict[str, Any]]


def _page_meta(kind: str, index: int, block: int) -> dict[str, Any]:
    return {"name": f"{kind}-{index:06d}", "datagen": {"sample": index, "kind": kind, "block": block}}


class TiffWriter(DatasetWriter):
    format = "tiff"

    def _init_store(self) -> None:
        (self.path / SHARDS_DIR).mkdir(exist_ok=True)

    def block_files(self, block: int) -> list[str]:
        return _block_files(self.info, block)

    def open_reader(self) -> TiffReader:
        return TiffReader(self.path, self.info)

    def _temporary_places(self) -> list[Path]:
        return [self.path / SHARDS_DIR]

    def _write_data(self, block: int, images: np.ndarray, masks: np.ndarray,
                    instances: np.ndarray | None = None) -> dict[str, FileRecord]:
        r = self.info.block_range(block)
        pages: list[_Page] = []
        for j, index in enumerate(r):
            meta = _page_meta("image", index, block)
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
            pages += [(images[j], "rgb", meta), (masks[j], "minisblack", _page_meta("mask", index, block))]
        files = {block_file(self.path, block): pages}
        if instances is not None:
            files[block_file(self.path, block, instances=True)] = [
                (instances[j], "minisblack", _page_meta("instances", index, block)) for j, index in enumerate(r)
            ]
        return {f"{SHARDS_DIR}/{final.name}": self._write_file(final, p) for final, p in files.items()}

    def _write_file(self, final: Path, pages: list[_Page]) -> FileRecord:
        """Write ``pages`` as one tiled TIFF under a temporary name and rename it to ``final``."""
        from datagen import __version__

        # classic TIFF offsets are 32-bit; deflate rarely expands, but leave a wide margin
        bigtiff = sum(a.nbytes for a, _, _ in pages) > 2**31
        common: dict[str, Any] = {
            "tile": (TILE, TILE),
            "compression": COMPRESSION,
            "compressionargs": {"level": DEFLATE_LEVEL},
            "predictor": True,
            "software": f"datagen {__version__}",
        }
        with atomic_path(final, prefix=self.tmp_prefix, fsync=self.fsync) as tmp:
            with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
                for array, photometric, meta in pages:
                    tw.write(array, photometric=photometric, metadata=meta, **common)
            record = file_digest(tmp)
        return record


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
        self._files: OrderedDict[tuple[int, bool], tifffile.TiffFile] = OrderedDict()
        self._pid = os.getpid()

    def _tiff(self, block: int, *, instances: bool = False) -> tifffile.TiffFile:
        if self._pid != os.getpid():  # forked: never share file positions with the parent
            self._files = OrderedDict()
            self._pid = os.getpid()
        key = (block, instances)
        tf = self._files.get(key)
        if tf is not None:
            self._files.move_to_end(key)
            return tf
        tf = tifffile.TiffFile(block_file(self.path, block, instances=instances))
        self._files[key] = tf
        while len(self._files) > self.max_open:
            _, old = self._files.popitem(last=False)
            old.close()
        return tf

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        block = self.info.block_of(index)
        j = index - self.info.block_range(block).start
        tf = self._tiff(block)
        return tf.pages[2 * j].asarray(), tf.pages[2 * j + 1].asarray()

    def read_instances(self, index: int) -> np.ndarray:
        block = self.info.block_of(index)
        return self._tiff(block, instances=True).pages[index - self.info.block_range(block).start].asarray()

    def read_block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Read the block; raises ValueError if the file's page layout is not as expected."""
        images, masks = self._read_pages(block, ("image", "mask"))
        return images, masks

    def read_block_instances(self, block: int) -> np.ndarray:
        """Read the block's instance maps; raises ValueError if the file's page layout is not as expected."""
        (instances,) = self._read_pages(block, ("instances",))
        return instances

    def _read_pages(self, block: int, kinds: tuple[str, ...]) -> list[np.ndarray]:
        """Per kind, the stacked pages of a block file holding ``kinds`` per sample in turn, each
        page checked against its description (sample index and kind)."""
        r = self.info.block_range(block)
        name = block_file_name(block, instances=kinds == ("instances",))
        pages = self._tiff(block, instances=kinds == ("instances",)).pages
        per = len(kinds)
        if len(pages) != per * len(r):
            raise ValueError(f"{name} has {len(pages)} pages, expected {per * len(r)}")
        out: list[list[np.ndarray]] = [[] for _ in kinds]
        for j, index in enumerate(r):
            for k, kind in enumerate(kinds):
                page = pages[per * j + k]
                md = page_metadata(page)
                if md.get("sample") != index or md.get("kind") != kind:
                    raise ValueError(
                        f"{name} page {per * j + k}: expected {kind} of sample {index}, "
                        f"description says {md.get('kind')!r} of sample {md.get('sample')!r}"
                    )
                out[k].append(page.asarray())
        return [_stack(arrays) for arrays in out]

    def block_files(self, block: int) -> list[str]:
        return _block_files(self.info, block)

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
