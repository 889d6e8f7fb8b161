"""Checking recorded blocks against the manifest (used by ``generate --resume`` and the torch Dataset).

Two levels:

* ``files`` (default): each data file of the block exists and has the size and sha256
  the manifest recorded for it.  Cheap (one read of the compressed files).  Blocks
  recorded by older versions, without file checksums, are checked as ``full``.
* ``full``: additionally decode every sample and compare its sha256 with the manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from datagen.writers.manifest import Manifest, file_digest, sample_sha256

if TYPE_CHECKING:
    from datagen.writers.base import DatasetReader

#: Longest exception text quoted in a problem description.
_MAX_QUOTE = 160


def short(text: object, limit: int = _MAX_QUOTE) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def check_files(reader: DatasetReader, manifest: Manifest, block: int, *, checksum: bool = True) -> str | None:
    """None when the block's files exist and match a manifest record (size; and sha256 if ``checksum``)."""
    files = reader.block_files(block)
    missing = [f for f in files if not (reader.path / f).is_file()]
    if missing:
        return f"file {', '.join(missing)} is missing"
    records = [e.files for e in manifest.entries.get(block, []) if e.files]
    if not records:
        return None
    sizes = {f: (reader.path / f).stat().st_size for f in files}
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
    problem = check_files(reader, manifest, block)
    if problem:
        return problem
    has_records = any(e.files for e in manifest.entries.get(block, []))
    if not full and has_records:
        return None
    r = reader.info.block_range(block)
    try:
        images, masks = reader.read_block(block)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the block is damaged
        return f"cannot be read ({type(exc).__name__}: {short(exc)})"
    h, w = reader.info.height, reader.info.width
    if images.shape != (len(r), h, w, 3) or images.dtype != np.uint8 or masks.shape != (len(r), h, w) \
            or masks.dtype != np.uint8:
        return f"holds arrays of the wrong shape ({images.shape}, {masks.shape})"
    recorded = manifest.hashes(block)
    bad = [i for j, i in enumerate(r) if not any(hs[j] == sample_sha256(images[j], masks[j]) for hs in recorded)]
    if bad:
        return f"sample(s) {', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''} do not match their manifest sha256"
    return None
