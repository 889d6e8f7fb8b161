"""The manifest: which blocks of an output are complete, and the sha256 of every sample in them.

Layout: ``<output>/manifest/part-<shard_index>-<random>.jsonl``, one append-only file
per writer (so concurrent writers never append to the same file), one JSON line per
completed block::

    {"block": 3, "start": 48, "stop": 64, "sha256": ["<64 hex>", ...]}

``sha256[j]`` is the hash of sample ``start + j``: ``sha256(image.tobytes() + mask.tobytes())``
of the C-contiguous uint8 arrays (H,W,3) and (H,W).  ``files`` (written since the
lock/verify release; absent in older manifests) records the size and sha256 of each
stored data file of the block, relative to the output folder::

    "files": {"data.zarr/images/c/3/0/0/0": [81234, "<64 hex>"], "data.zarr/masks/c/3/0/0": [2345, "<64 hex>"]}

A block that failed verification on resume is rewritten and recorded again: a block
may have several lines; it is intact when its files match any of them.

A line is appended (and fsynced) only after the block's data is durably written, so
a block that is not in any manifest file is absent, whatever data files exist for it.
A writer killed mid-line leaves a truncated last line; readers skip it (and any other
unparsable line) and report it as a warning.  The dataset is complete when the union
of all manifest files covers every block.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datagen.fsutil import fsync_path
from datagen.writers.info import DatasetInfo

MANIFEST_DIR = "manifest"

#: (size in bytes, sha256 hex) of one stored data file.
FileRecord = tuple[int, str]


def file_record(data: bytes) -> FileRecord:
    return len(data), hashlib.sha256(data).hexdigest()


def file_digest(path: str | os.PathLike) -> FileRecord:
    """(size, sha256) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def sample_sha256(image: np.ndarray, mask: np.ndarray) -> str:
    """The manifest hash of one sample: sha256 of the image bytes followed by the mask bytes."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(image, dtype=np.uint8).data)
    h.update(np.ascontiguousarray(mask, dtype=np.uint8).data)
    return h.hexdigest()


@dataclass(frozen=True)
class ManifestEntry:
    block: int
    start: int
    stop: int
    sha256: tuple[str, ...]
    #: {relative path: (size, sha256)} of the block's stored files (None in older manifests).
    files: dict[str, FileRecord] | None = None

    def to_json(self) -> str:
        doc: dict[str, Any] = {"block": self.block, "start": self.start, "stop": self.stop, "sha256": list(self.sha256)}
        if self.files is not None:
            doc["files"] = {k: [int(v[0]), v[1]] for k, v in sorted(self.files.items())}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_obj(cls, obj: Any) -> ManifestEntry:
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        block, start, stop, hashes = obj.get("block"), obj.get("start"), obj.get("stop"), obj.get("sha256")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (block, start, stop)):
            raise ValueError("block/start/stop must be integers")
        if not isinstance(hashes, list) or not all(isinstance(s, str) and len(s) == 64 for s in hashes):
            raise ValueError("sha256 must be a list of 64-character hex strings")
        files = obj.get("files")
        parsed: dict[str, FileRecord] | None = None
        if files is not None:
            if not isinstance(files, dict):
                raise ValueError("files must be a mapping")
            parsed = {}
            for k, v in files.items():
                if (not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], int) or isinstance(v[0], bool)
                        or not isinstance(v[1], str) or len(v[1]) != 64):
                    raise ValueError("files values must be [size, sha256]")
                parsed[str(k)] = (v[0], v[1])
        return cls(block=block, start=start, stop=stop, sha256=tuple(hashes), files=parsed)


@dataclass
class Manifest:
    """All manifest entries of one output (the union over writers)."""

    entries: dict[int, list[ManifestEntry]] = field(default_factory=dict)
    #: Problems found while reading (truncated lines, entries that do not fit the dataset, ...).
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def completed_blocks(self) -> set[int]:
        return set(self.entries)

    def hashes(self, block: int) -> list[tuple[str, ...]]:
        """The distinct sha256 lists recorded for ``block`` (normally exactly one)."""
        out: list[tuple[str, ...]] = []
        for e in self.entries.get(block, []):
            if e.sha256 not in out:
                out.append(e.sha256)
        return out

    def is_complete(self, info: DatasetInfo) -> bool:
        return len(self.missing_blocks(info)) == 0

    def missing_blocks(self, info: DatasetInfo) -> list[int]:
        return blocks_left(info, self.entries)

    def completed_samples(self, info: DatasetInfo) -> np.ndarray:
        """Sorted int64 array of the sample indices in completed blocks."""
        parts = [np.arange(r.start, r.stop, dtype=np.int64) for r in (info.block_range(b) for b in sorted(self.entries))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def blocks_left(info: DatasetInfo, completed: Iterable[int], *, shard_index: int = 0, num_shards: int = 1,
                redo: Iterable[int] = ()) -> list[int]:
    """The blocks still to write, in order: worker ``shard_index`` of ``num_shards``'s blocks that are
    not ``completed`` (recorded in a manifest), plus the recorded ones in ``redo`` (failed verification).

    The one answer to "what is left" for writers, ``generate``, the Ray engine and validation.
    """
    done = set(completed) - set(redo)
    return [b for b in info.shard_blocks(shard_index, num_shards) if b not in done]


def read_manifest(path: str | os.PathLike, info: DatasetInfo | None = None) -> Manifest:
    """Read every ``manifest/*.jsonl`` of the output at ``path``.

    With ``info``, entries that do not fit the dataset (block out of range, wrong
    start/stop, wrong number of hashes) are dropped with a warning.
    """
    mdir = Path(path) / MANIFEST_DIR
    result = Manifest()
    if not mdir.is_dir():
        return result
    for file in sorted(mdir.glob("*.jsonl")):
        result.files.append(file)
        try:
            data = file.read_bytes()
        except OSError as exc:
            result.warnings.append(f"{file.name}: cannot read: {exc.strerror or exc}")
            continue
        lines = data.split(b"\n")
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            is_last = lineno == len(lines)  # no newline after it: possibly cut short by a kill
            try:
                entry = ManifestEntry.from_obj(json.loads(raw))
            except (ValueError, UnicodeDecodeError) as exc:
                what = "truncated last line (interrupted write)" if is_last else f"unreadable line ({exc})"
                result.warnings.append(f"{file.name}:{lineno}: {what}; ignored")
                continue
            if info is not None:
                problem = _entry_problem(entry, info)
                if problem:
                    result.warnings.append(f"{file.name}:{lineno}: {problem}; ignored")
                    continue
            result.entries.setdefault(entry.block, []).append(entry)
    return result


def _entry_problem(entry: ManifestEntry, info: DatasetInfo) -> str | None:
    if not 0 <= entry.block < info.num_blocks:
        return f"block {entry.block} out of range (dataset has {info.num_blocks} blocks)"
    r = info.block_range(entry.block)
    if (entry.start, entry.stop) != (r.start, r.stop):
        return f"block {entry.block} covers samples {entry.start}..{entry.stop}, expected {r.start}..{r.stop}"
    if len(entry.sha256) != len(r):
        return f"block {entry.block} has {len(entry.sha256)} hashes, expected {len(r)}"
    return None


class ManifestWriter:
    """Appends entries to this writer's own manifest file (created on first append)."""

    def __init__(self, path: str | os.PathLike, *, shard_index: int = 0, fsync: bool = True) -> None:
        self.dir = Path(path) / MANIFEST_DIR
        self.file = self.dir / f"part-{shard_index:05d}-{uuid.uuid4().hex[:12]}.jsonl"
        self.fsync = fsync
        self._fh: Any = None

    def append(self, entry: ManifestEntry) -> None:
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.file, "xb")  # noqa: SIM115 - kept open for appends
            if self.fsync:
                fsync_path(self.dir)
        self._fh.write(entry.to_json().encode() + b"\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
