"""Dataset description, block arithmetic and the writer interface shared by all output formats.

A run writes ``num_samples`` image/mask pairs.  The sample indices are cut into
*blocks* of ``block_size`` consecutive indices (the last one may be short).  A
block is the unit of writing, of resuming and of splitting work across workers:
a writer writes one whole block at a time, records it in the manifest only once
its data is on disk, and on resume every block that is not in the manifest is
written again from scratch.

Every output folder has an ``info.json`` (a :class:`DatasetInfo` plus the storage
format) at its root, written before anything else, a ``manifest/`` folder (see
:mod:`datagen.writers.manifest`) and the format's own data files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datagen.errors import ConfigError, DatagenError
from datagen.writers.manifest import (
    MANIFEST_DIR,
    ManifestEntry,
    ManifestWriter,
    read_manifest,
    sample_sha256,
)

INFO_FILE = "info.json"
#: Version of the on-disk layout described in docs/formats.md.
LAYOUT_VERSION = 1
#: Prefix of every temporary file a writer may leave behind when killed; readers ignore them.
TMP_PREFIX = ".datagen-tmp-"

#: ``attrs`` keys that describe *how* or *when* a run was started rather than *what* it
#: generates.  They are stored in info.json but are not part of the fingerprint, so a
#: run may be resumed from another host, with another number of workers, later, ...
VOLATILE_ATTRS = frozenset(
    {
        "created",
        "created_at",
        "started_at",
        "hostname",
        "host",
        "user",
        "argv",
        "command",
        "pid",
        "device",
        "workers",
        "num_workers",
        "shard_index",
        "num_shards",
        "elapsed",
        "duration",
    }
)

_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class DatasetInfo:
    """What a run generates; stored as ``info.json`` at the root of every output.

    ``classes`` is the class table: a list of ``{"id": int 0..255, "name": str,
    "color": "#rrggbb"}``; mask pixels hold these ids.  ``attrs`` is free-form JSON
    metadata (recipe text, seed, model, layer, tool version, ...).
    """

    num_samples: int
    height: int
    width: int
    classes: list[dict[str, Any]]
    block_size: int = 16
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("num_samples", "height", "width", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
            setattr(self, name, int(value))
        if not isinstance(self.classes, (list, tuple)) or not self.classes:
            raise ConfigError("must be a non-empty list of {id, name, color}", field="classes")
        classes: list[dict[str, Any]] = []
        seen: set[int] = set()
        for k, c in enumerate(self.classes):
            where = f"classes[{k}]"
            if not isinstance(c, dict):
                raise ConfigError(f"must be a mapping with id, name, color; got {c!r}", field=where)
            cid = c.get("id")
            if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)) or not 0 <= cid <= 255:
                raise ConfigError(f"id must be an integer 0..255 (masks are uint8), got {cid!r}", field=f"{where}.id")
            if int(cid) in seen:
                raise ConfigError(f"duplicate class id {cid}", field=f"{where}.id")
            seen.add(int(cid))
            name = c.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"name must be a non-empty string, got {name!r}", field=f"{where}.name")
            color = c.get("color")
            if not isinstance(color, str) or not _COLOR_RE.match(color):
                raise ConfigError(f'color must look like "#rrggbb", got {color!r}', field=f"{where}.color")
            extra = {k2: v for k2, v in c.items() if k2 not in ("id", "name", "color")}
            classes.append({"id": int(cid), "name": name, "color": color.lower(), **extra})
        self.classes = classes
        if not isinstance(self.attrs, dict):
            raise ConfigError(f"must be a mapping, got {type(self.attrs).__name__}", field="attrs")
        try:
            json.dumps(self.attrs, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"must be JSON-serialisable: {exc}", field="attrs") from None

    # ---- block arithmetic -------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return -(-self.num_samples // self.block_size)

    def block_range(self, block: int) -> range:
        """The sample indices of ``block`` (the last block may be short)."""
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} out of range: the dataset has {self.num_blocks} blocks")
        start = block * self.block_size
        return range(start, min(start + self.block_size, self.num_samples))

    def block_of(self, index: int) -> int:
        """The block that holds sample ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range: the dataset has {self.num_samples} samples")
        return index // self.block_size

    @property
    def class_ids(self) -> list[int]:
        return [c["id"] for c in self.classes]

    # ---- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "height": self.height,
            "width": self.width,
            "block_size": self.block_size,
            "classes": [dict(c) for c in self.classes],
            "attrs": json.loads(json.dumps(self.attrs)),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, file: str | os.PathLike | None = None) -> DatasetInfo:
        if not isinstance(d, dict):
            raise ConfigError("expected a JSON object", file=file)
        missing = [k for k in ("num_samples", "height", "width", "classes") if k not in d]
        if missing:
            raise ConfigError(f"missing required field(s): {', '.join(missing)}", file=file)
        try:
            return cls(
                num_samples=d["num_samples"],
                height=d["height"],
                width=d["width"],
                classes=d["classes"],
                block_size=d.get("block_size", 16),
                attrs=d.get("attrs", {}) or {},
            )
        except ConfigError as exc:
            raise ConfigError(exc.message, file=file, field=exc.field) from None

    def fingerprint(self) -> str:
        """sha256 of everything that determines the generated data (volatile attrs excluded)."""
        doc = self._fingerprint_doc()
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _fingerprint_doc(self) -> dict[str, Any]:
        doc = self.to_dict()
        doc["attrs"] = {k: v for k, v in doc["attrs"].items() if k not in VOLATILE_ATTRS}
        return doc

    def differences(self, other: DatasetInfo) -> list[str]:
        """Human-readable list of the fingerprinted fields that differ (self = existing, other = new)."""
        a, b = self._fingerprint_doc(), other._fingerprint_doc()
        out: list[str] = []
        for key in ("num_samples", "height", "width", "block_size", "classes"):
            if a[key] != b[key]:
                out.append(f"{key}: existing {_short(a[key])}, new {_short(b[key])}")
        for key in sorted(set(a["attrs"]) | set(b["attrs"])):
            va, vb = a["attrs"].get(key, _MISSING), b["attrs"].get(key, _MISSING)
            if va != vb:
                out.append(f"attrs.{key}: existing {_short(va)}, new {_short(vb)}")
        return out


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if isinstance(value, _Missing) else json.dumps(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def blocks_for_worker(info: DatasetInfo, shard_index: int, num_shards: int) -> list[range]:
    """The sample ranges of the blocks worker ``shard_index`` of ``num_shards`` writes: blocks b with b % M == K.

    The block number of a returned range ``r`` is ``r.start // info.block_size``.
    """
    _check_shard(shard_index, num_shards)
    return [info.block_range(b) for b in range(shard_index, info.num_blocks, num_shards)]


def _check_shard(shard_index: int, num_shards: int) -> None:
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index}")


# ---- small filesystem helpers ---------------------------------------------------------
def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file (or directory, where the OS allows it)."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_exclusive(path: Path, data: bytes) -> bool:
    """Atomically create ``path`` holding ``data`` unless it exists; True if this call created it.

    The content is written to a temporary name first and hard-linked into place, so a
    reader never sees a partial file and of several racing writers exactly one wins.
    """
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            # file systems without hard links: fall back to exclusive create + write
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
    finally:
        tmp.unlink(missing_ok=True)


def load_info(path: str | os.PathLike) -> tuple[DatasetInfo, dict[str, Any]]:
    """Read ``<path>/info.json``: the DatasetInfo and the whole document (which also holds ``format``)."""
    file = Path(path) / INFO_FILE
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise DatagenError(f"{path}: not a datagen dataset (no {INFO_FILE})") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=file) from None
    if not isinstance(doc, dict):
        raise ConfigError("expected a JSON object", file=file)
    info = DatasetInfo.from_dict(doc.get("info", {}), file=file)
    return info, doc


def _info_document(info: DatasetInfo, fmt: str) -> dict[str, Any]:
    from datagen import __version__

    return {
        "datagen_dataset": LAYOUT_VERSION,
        "format": fmt,
        "fingerprint": info.fingerprint(),
        "writer_version": __version__,
        "info": info.to_dict(),
    }


def _remove_created(created: list[Path]) -> None:
    for p in reversed(created):
        try:
            p.rmdir()
        except OSError:
            pass


def _prepare_output_dir(path: Path) -> None:
    """Make sure ``path`` is (or can become) a writable directory; leave nothing behind on failure."""
    if path.exists() and not path.is_dir():
        raise DatagenError(f"output path {path} exists and is not a directory")
    created: list[Path] = []
    if not path.exists():
        ancestor = path
        missing: list[Path] = []
        while not ancestor.exists():
            missing.append(ancestor)
            if ancestor.parent == ancestor:
                break
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise DatagenError(f"cannot create output directory {path}: {ancestor} is a file, not a directory")
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                if not p.is_dir():
                    _remove_created(created)
                    raise DatagenError(f"cannot create output directory {path}: {p} is not a directory") from None
            except OSError as exc:
                _remove_created(created)
                raise DatagenError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
            else:
                created.append(p)
    # probe: can we really create and remove files in it (read-only mounts, permissions, quotas)?
    probe = path / f"{TMP_PREFIX}probe-{uuid.uuid4().hex}"
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
        probe.unlink()
    except OSError as exc:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
        _remove_created(created)
        raise DatagenError(f"output directory {path} is not writable: {exc.strerror or exc}") from None


def _visible_entries(path: Path) -> list[str]:
    return sorted(e for e in os.listdir(path) if not e.startswith(TMP_PREFIX))


class DatasetWriter(ABC):
    """Writes the blocks of one output folder.  Make one with :meth:`create`.

    Several writers (threads, processes, hosts sharing a file system) may write
    *different* blocks of the same output at once; each keeps its own manifest file.
    """

    format: ClassVar[str]

    def __init__(self, path: Path, info: DatasetInfo, *, shard_index: int, num_shards: int, fsync: bool) -> None:
        self.path = path
        self.info = info
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.fsync = fsync
        self._manifest = ManifestWriter(path, shard_index=shard_index, fsync=fsync)
        self._closed = False

    # ---- construction -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        info: DatasetInfo,
        *,
        resume: bool = False,
        shard_index: int = 0,
        num_shards: int = 1,
        fsync: bool = True,
    ) -> DatasetWriter:
        """Create the output at ``path`` or join/resume the one that is there.

        * ``path`` missing or an empty directory: a new output is created.
        * ``path`` holds an output of this format with the same fingerprint: it is
          joined.  With ``resume=False`` that is only allowed while none of *this*
          worker's blocks (``shard_index`` of ``num_shards``) is complete yet, so
          concurrently started workers can all call ``create`` but re-running a
          finished or partly finished run over its output is refused.
        * anything else (other files, another format, another fingerprint) is an error.
        """
        _check_shard(shard_index, num_shards)
        path = Path(path).expanduser().absolute()
        _prepare_output_dir(path)
        info_file = path / INFO_FILE
        if not info_file.exists():
            others = _visible_entries(path)
            if others:
                shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                raise DatagenError(
                    f"output directory {path} is not empty and is not a datagen dataset "
                    f"(no {INFO_FILE}; found {shown}); choose a new or empty directory"
                )
            doc = _info_document(info, cls.format)
            created = write_exclusive(info_file, (json.dumps(doc, indent=2) + "\n").encode())
            if created and fsync:
                fsync_path(path)
        cls._check_existing(path, info, resume=resume, shard_index=shard_index, num_shards=num_shards)
        (path / MANIFEST_DIR).mkdir(exist_ok=True)
        writer = cls(path, info, shard_index=shard_index, num_shards=num_shards, fsync=fsync)
        writer._init_store()
        return writer

    @classmethod
    def _check_existing(cls, path: Path, info: DatasetInfo, *, resume: bool, shard_index: int, num_shards: int) -> None:
        existing, doc = load_info(path)
        file = path / INFO_FILE
        fmt = doc.get("format")
        if fmt != cls.format:
            raise ConfigError(
                f"{path} holds a {fmt!r} dataset; cannot write format {cls.format!r} into it "
                "(choose another output directory)",
                file=file,
                field="format",
            )
        if existing.fingerprint() != info.fingerprint():
            diffs = existing.differences(info)
            verb = "resume" if resume else "write into"
            raise ConfigError(
                f"cannot {verb} {path}: it was generated with different settings: "
                + "; ".join(diffs)
                + ". Use the original settings to resume, or choose another output directory.",
                file=file,
            )
        if not resume:
            mine = set(range(shard_index, info.num_blocks, num_shards))
            done = read_manifest(path, info).completed_blocks()
            if done & mine:
                raise DatagenError(
                    f"{path} already contains data ({len(done)} of {info.num_blocks} blocks complete); "
                    "resume the run (resume=True / --resume) or choose another output directory"
                )

    @abstractmethod
    def _init_store(self) -> None:
        """Create (idempotently and race-safely) the format's metadata; open handles for writing."""

    @abstractmethod
    def _write_data(self, block: int, images: np.ndarray, masks: np.ndarray) -> None:
        """Write one whole block's data durably (fsynced if self.fsync); replace whatever was there."""

    # ---- public API -----------------------------------------------------------------
    def completed_blocks(self) -> set[int]:
        """Blocks recorded in any manifest of this output (all writers, not only this one)."""
        return read_manifest(self.path, self.info).completed_blocks()

    def my_blocks(self) -> list[int]:
        """Block numbers this writer's shard is responsible for (b % num_shards == shard_index)."""
        return list(range(self.shard_index, self.info.num_blocks, self.num_shards))

    def pending_blocks(self) -> list[int]:
        """This shard's blocks that are not complete yet, in order."""
        done = self.completed_blocks()
        return [b for b in self.my_blocks() if b not in done]

    def write_block(self, block: int, images: np.ndarray, masks: np.ndarray) -> ManifestEntry:
        """Write all samples of ``block``: images (B,H,W,3) uint8, masks (B,H,W) uint8.

        The data is written (and fsynced) first; only then is the block appended to
        this writer's manifest, so a block interrupted half-way is never taken as data.
        """
        if self._closed:
            raise RuntimeError("write_block() on a closed writer")
        rng = self.info.block_range(block)
        n, h, w = len(rng), self.info.height, self.info.width
        images = np.asarray(images)
        masks = np.asarray(masks)
        if images.shape != (n, h, w, 3) or images.dtype != np.uint8:
            raise ValueError(f"block {block}: images must be uint8 of shape {(n, h, w, 3)}, got {images.dtype} {images.shape}")
        if masks.shape != (n, h, w) or masks.dtype != np.uint8:
            raise ValueError(f"block {block}: masks must be uint8 of shape {(n, h, w)}, got {masks.dtype} {masks.shape}")
        images = np.ascontiguousarray(images)
        masks = np.ascontiguousarray(masks)
        counts = np.bincount(masks.ravel(), minlength=256)
        bad = sorted(set(np.flatnonzero(counts).tolist()) - set(self.info.class_ids))
        if bad:
            raise ValueError(f"block {block}: masks contain ids {bad} that are not in the class table {self.info.class_ids}")
        hashes = [sample_sha256(images[j], masks[j]) for j in range(n)]
        self._write_data(block, images, masks)
        entry = ManifestEntry(block=block, start=rng.start, stop=rng.stop, sha256=tuple(hashes))
        self._manifest.append(entry)
        return entry

    def close(self) -> None:
        if not self._closed:
            self._manifest.close()
            self._close_store()
            self._closed = True

    def _close_store(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shard {self.shard_index}/{self.num_shards})"


class DatasetReader(ABC):
    """Reads samples of one output folder of a given format (used by validation and the torch Dataset).

    Opens files lazily and never pickles open handles, so a reader can be sent to
    DataLoader worker processes.
    """

    format: ClassVar[str]

    def __init__(self, path: str | os.PathLike, info: DatasetInfo) -> None:
        self.path = Path(path)
        self.info = info

    @abstractmethod
    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (H,W,3) uint8, mask (H,W) uint8) of sample ``index``."""

    @abstractmethod
    def read_block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(images (B,H,W,3), masks (B,H,W)) of ``block`` as stored (shape/dtype not checked)."""

    def structure_errors(self) -> list[str]:
        """Problems with the format's metadata (not with individual blocks)."""
        return []

    def block_present(self, block: int) -> bool:
        """Whether the data files of ``block`` exist (without checking their content)."""
        return True

    def leftovers(self) -> list[str]:
        """Data files that belong to no completed block or temporary files of interrupted writes."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "info": self.info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["info"])  # type: ignore[misc]


def remove_tree_quietly(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
