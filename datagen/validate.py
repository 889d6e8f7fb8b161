"""Check a generated dataset: metadata, completeness, integrity (sha256 per sample) and content sanity.

Reads one block at a time, so memory stays bounded whatever the dataset size.
``datagen validate OUT`` prints :meth:`ValidationReport.format` and exits non-zero
unless the report is ``ok``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datagen.errors import DatagenError, Namer, arg, python_name, render
from datagen.fsutil import TMP_PREFIX
from datagen.writers import READERS, blocks_left, instance_map, load_info, read_manifest, sample_sha256

#: Per category, at most this many individual problems are listed; the rest are counted.
MAX_LISTED = 10


@dataclass
class ValidationReport:
    path: str
    dataset_format: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    num_samples: int = 0
    num_blocks: int = 0
    completed_blocks: int = 0
    samples_checked: int = 0
    corrupted_samples: int = 0
    bad_mask_samples: int = 0
    constant_images: int = 0
    #: Pixels per class id over all checked masks (ids outside the class table included).
    class_pixels: dict[int, int] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def complete(self) -> bool:
        return self.num_blocks > 0 and self.completed_blocks == self.num_blocks

    def format(self) -> str:  # noqa: A003 - asked-for name
        lines = [f"dataset {self.path}" + (f" ({self.dataset_format})" if self.dataset_format else "")]
        if self.num_blocks:
            lines.append(
                f"  samples: {self.num_samples} in {self.num_blocks} blocks; "
                f"complete blocks: {self.completed_blocks}/{self.num_blocks}"
            )
            lines.append(
                f"  checked: {self.samples_checked} samples; corrupted: {self.corrupted_samples}; "
                f"masks with unknown ids: {self.bad_mask_samples}; constant images: {self.constant_images}"
            )
        total = sum(self.class_pixels.values())
        if total:
            lines.append("  class pixels:")
            for cid in sorted(self.class_pixels):
                name = self.class_names.get(cid, "(not in class table)")
                n = self.class_pixels[cid]
                lines.append(f"    {cid:>3} {name:<20} {100.0 * n / total:6.2f}%")
        for title, items in (("errors", self.errors), ("warnings", self.warnings)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    - {m}" for m in items]
        lines.append("  result: " + ("OK" if self.ok else f"FAILED ({len(self.errors)} errors)"))
        return "\n".join(lines)


class _Limited:
    """Collects messages of one category, listing only the first MAX_LISTED."""

    def __init__(self, sink: list[str], what: str) -> None:
        self.sink, self.what, self.count = sink, what, 0

    def add(self, message: str) -> None:
        self.count += 1
        if self.count <= MAX_LISTED:
            self.sink.append(message)

    def finish(self) -> None:
        if self.count > MAX_LISTED:
            self.sink.append(f"... and {self.count - MAX_LISTED} more {self.what}")


class _Placeholder:
    """A value shown as written (``K``), for :func:`arg` mentions of a value the user fills in."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _how_to_finish(info, done: set[int], namer: Namer) -> str:  # noqa: ANN001
    """Which shards still have blocks to write (when the run was split), and how to finish them."""
    m = info.attrs.get("num_shards") if isinstance(info.attrs, dict) else None
    if not isinstance(m, int) or m <= 1:
        return render(f"resume the run to finish it (the same generation with {arg('resume', True)})", namer)
    left = [k for k in range(m) if blocks_left(info, done, shard_index=k, num_shards=m)]
    return render(f"shard(s) {', '.join(map(str, left))} of {m} have blocks left: run the same generation with "
                  f"{arg('shard_index', _Placeholder('K'))} {arg('num_shards', m)} {arg('resume', True)} "
                  f"for K = {', '.join(map(str, left))}", namer)


def validate_dataset(
    path: str | os.PathLike,
    *,
    check_data: bool = True,
    progress: Callable[[int, int], None] | None = None,
    namer: Namer = python_name,
) -> ValidationReport:
    """Validate the dataset at ``path``; never raises for problems in the data, it reports them.

    ``check_data=False`` checks metadata and completeness only (fast).  ``progress``
    is called as ``progress(blocks_done, blocks_total)`` after each block. ``namer`` spells
    the arguments the advice mentions (``resume=True``; the CLI passes its flag spelling, ``--resume``).
    """
    path = Path(path)
    report = ValidationReport(path=str(path))
    if not path.is_dir():
        report.errors.append(f"{path} is not a directory")
        return report
    try:
        info, doc = load_info(path)
    except DatagenError as exc:
        report.errors.append(str(exc))
        return report
    report.num_samples, report.num_blocks = info.num_samples, info.num_blocks
    report.class_names = {c["id"]: c["name"] for c in info.classes}
    if info.ignore_index is not None:
        report.class_names[info.ignore_index] = "(ignore)"
    fmt = doc.get("format")
    report.dataset_format = fmt
    if fmt not in READERS:
        report.errors.append(f"info.json: unknown format {fmt!r} (expected one of {', '.join(READERS)})")
        return report
    if doc.get("fingerprint") not in (None, info.fingerprint()):
        report.warnings.append("info.json: stored fingerprint does not match its content (edited by hand?)")

    manifest = read_manifest(path, info)
    report.warnings += [f"manifest: {w}" for w in manifest.warnings]
    done = manifest.completed_blocks()
    report.completed_blocks = len(done)
    missing = manifest.missing_blocks(info)
    if missing:
        shown = ", ".join(map(str, missing[:MAX_LISTED])) + (", ..." if len(missing) > MAX_LISTED else "")
        report.errors.append(
            f"incomplete: {len(missing)} of {info.num_blocks} blocks not in the manifest ({shown}); "
            + _how_to_finish(info, done, namer)
        )
    for b in sorted(done):
        if len(manifest.hashes(b)) > 1:
            report.warnings.append(f"block {b} is recorded more than once with different content")

    reader = READERS[fmt](path, info)
    try:
        structure = reader.structure_errors()
        report.errors += structure
        if structure:
            return report
        orphans = [b for b in missing if reader.block_present(b)]
        if orphans:
            report.warnings.append(
                f"{len(orphans)} block(s) have data files but are not in the manifest "
                f"(interrupted writes; rewritten on resume): {', '.join(map(str, orphans[:MAX_LISTED]))}"
            )
        left = sorted(e for e in os.listdir(path) if e.startswith(TMP_PREFIX)) + reader.leftovers()
        if left:
            report.warnings.append(f"{len(left)} temporary file(s) of interrupted writes, e.g. {left[0]}")
        if check_data:
            _check_blocks(report, reader, info, manifest, sorted(done), progress)
    finally:
        reader.close()
    return report


def _check_blocks(report, reader, info, manifest, blocks, progress) -> None:  # noqa: ANN001
    known = np.zeros(256, dtype=bool)
    known[info.mask_values] = True
    pixels = np.zeros(256, dtype=np.int64)
    limits = {
        "unreadable": _Limited(report.errors, "unreadable blocks"),
        "corrupted": _Limited(report.errors, "corrupted samples"),
        "bad_ids": _Limited(report.errors, "samples with unknown mask ids"),
        "constant": _Limited(report.warnings, "constant images"),
        "instances": _Limited(report.errors, "bad instance maps"),
    }
    for k, b in enumerate(blocks):
        _check_block(report, reader, info, manifest, b, known, pixels, limits)
        if progress is not None:
            progress(k + 1, len(blocks))
    for lim in limits.values():
        lim.finish()
    report.class_pixels = {int(c): int(pixels[c]) for c in np.flatnonzero(pixels)}


def _check_block(report, reader, info, manifest, b, known, pixels, limits) -> None:  # noqa: ANN001
    h, w = info.height, info.width
    r = info.block_range(b)
    unreadable = limits["unreadable"]
    if not reader.block_present(b):
        unreadable.add(f"block {b}: in the manifest but its data files are missing")
        report.corrupted_samples += len(r)
        return
    try:
        images, masks = reader.read_block(b)
    except Exception as exc:  # noqa: BLE001 - any read failure is a finding
        unreadable.add(f"block {b}: cannot read: {exc}")
        report.corrupted_samples += len(r)
        return
    if images.shape != (len(r), h, w, 3) or images.dtype != np.uint8:
        unreadable.add(f"block {b}: images are {images.dtype} {images.shape}, expected uint8 {(len(r), h, w, 3)}")
        report.corrupted_samples += len(r)
        return
    if masks.shape != (len(r), h, w) or masks.dtype != np.uint8:
        unreadable.add(f"block {b}: masks are {masks.dtype} {masks.shape}, expected uint8 {(len(r), h, w)}")
        report.corrupted_samples += len(r)
        return
    recorded = manifest.hashes(b)
    instances = _block_instances(reader, info, b, limits["instances"])
    for j, index in enumerate(r):
        report.samples_checked += 1
        digest = sample_sha256(images[j], masks[j])
        if not any(hashes[j] == digest for hashes in recorded):
            report.corrupted_samples += 1
            limits["corrupted"].add(f"sample {index} (block {b}): content does not match its manifest sha256")
        counts = np.bincount(masks[j].ravel(), minlength=256)
        pixels += counts
        unknown = np.flatnonzero((counts > 0) & ~known)
        if unknown.size:
            report.bad_mask_samples += 1
            limits["bad_ids"].add(
                f"sample {index}: mask has ids {unknown.tolist()} not in the class table {info.class_ids}"
                + (f" or the ignore value {info.ignore_index}" if info.ignore_index is not None else "")
            )
        if instances is not None and not np.array_equal(instances[j], instance_map(masks[j], info.ignore_index)):
            limits["instances"].add(f"sample {index} (block {b}): instance map does not match its mask")
        img = images[j]
        if img.min() == img.max():
            report.constant_images += 1
            limits["constant"].add(f"sample {index}: image is constant (every value {int(img.min())})")


def _block_instances(reader, info, b, limit) -> np.ndarray | None:  # noqa: ANN001
    """The block's stored instance maps (None without them, or when unreadable: reported)."""
    if not info.instances:
        return None
    try:
        instances = reader.read_block_instances(b)
    except Exception as exc:  # noqa: BLE001 - any read failure is a finding
        limit.add(f"block {b}: cannot read instance maps: {exc}")
        return None
    r = info.block_range(b)
    if instances.shape != (len(r), info.height, info.width) or instances.dtype != np.uint32:
        limit.add(f"block {b}: instance maps are {instances.dtype} {instances.shape}, "
                  f"expected uint32 {(len(r), info.height, info.width)}")
        return None
    return instances
