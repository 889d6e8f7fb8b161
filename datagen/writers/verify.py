"""Checking recorded blocks against the manifest (used by ``generate --resume`` and the torch Dataset).

Two levels:

* ``files`` (default): each data file of the block exists and has the size and sha256
  the manifest recorded for it.  Cheap (one read of the compressed files).  Blocks
  recorded by older versions, without file checksums, are checked as ``full``.
* ``full``: additionally decode every sample and compare its sha256 with the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from datagen.config import excerpt
from datagen.writers.manifest import FileRecord, Manifest, file_digest, sample_sha256

if TYPE_CHECKING:
    from datagen.writers.base import DatasetReader

#: Longest exception text quoted in a problem description.
MAX_QUOTE = 160


def read_error(exc: BaseException) -> str:
    """What a failed read of stored data says: exception type and a bounded excerpt of its text."""
    return f"cannot be read ({type(exc).__name__}: {excerpt(str(exc), MAX_QUOTE)})"


def file_records(manifest: Manifest, block: int) -> list[dict[str, FileRecord]]:
    """The file records (size, sha256 per file) ``block`` was recorded with, one per manifest line that has them."""
    return [e.files for e in manifest.entries.get(block, []) if e.files]


def check_files(reader: DatasetReader, records: Sequence[dict[str, FileRecord]], block: int, *,
                checksum: bool = True) -> str | None:
    """None when the block's files exist and match one of its ``records`` (size; and sha256 if ``checksum``).

    Blocks recorded without file records (older versions) pass when their files exist."""
    files = reader.block_files(block)
    try:
        sizes = {f: (reader.path / f).stat().st_size for f in files}
    except OSError:
        missing = [f for f in files if not (reader.path / f).is_file()] or files
        return f"file {', '.join(missing)} is missing"
    if not records:
        return None
    candidates = [r for r in records if all(f in r and r[f][0] == sizes[f] for f in files)]
    if not candidates:
        r = records[-1]
        bad = [f"{f} has {sizes[f]} bytes, recorded {r[f][0]}" for f in files if f in r and r[f][0] != sizes[f]]
        return "; ".join(bad) or "its files do not match the manifest"
    if not checksum:
        return None
    digests = {f: file_digest(reader.path / f) for f in files}
    if any(all(r[f] == digests[f] for f in files) for r in candidates):
        return None
    r = candidates[-1]
    bad = [f for f in files if r[f] != digests[f]]
    return f"checksum of {', '.join(bad)} does not match the manifest (corrupted)"


def check_block(reader: DatasetReader, manifest: Manifest, block: int, *, full: bool = False) -> str | None:
    """None when ``block`` is intact, else a short description of what is wrong."""
    records = file_records(manifest, block)
    problem = check_files(reader, records, block)
    if problem:
        return problem
    if not full and records:
        return None
    r = reader.info.block_range(block)
    try:
        images, masks = reader.read_block(block)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the block is damaged
        return read_error(exc)
    h, w = reader.info.height, reader.info.width
    if images.shape != (len(r), h, w, 3) or images.dtype != np.uint8 or masks.shape != (len(r), h, w) \
            or masks.dtype != np.uint8:
        return f"holds arrays of the wrong shape ({images.shape}, {masks.shape})"
    recorded = manifest.hashes(block)
    bad = [i for j, i in enumerate(r) if not any(hs[j] == sample_sha256(images[j], masks[j]) for hs in recorded)]
    if bad:
        return f"sample(s) {', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''} do not match their manifest sha256"
    return None
