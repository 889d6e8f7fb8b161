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
from datagen.writers.lock import LOCK_DIR, OutputLock
from datagen.writers.manifest import (
    MANIFEST_DIR,
    FileRecord,
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
#: Names starting with this are datagen's own housekeeping (temporary files, locks), not data.
HIDDEN_PREFIX = ".datagen-"

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
        # where the recipe file was, not what it says: its text ("recipe") is fingerprinted,
        # so the same recipe resumes from a relative path, another folder or another host
        "recipe_file",
    }
)

_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class DatasetInfo:
    """What a run generates; stored as ``info.json`` at the root of every output.

    ``classes`` is the class table: a list of ``{"id": int 0..255, "name": str,
    "color": "#rrggbb"}`` (plus optional keys such as ``"keep": true``); mask pixels
    hold these ids, or ``ignore_index`` where a pixel claims no class (keep regions,
    unpainted slivers; None when the dataset has no ignore value).  ``attrs`` is
    free-form JSON metadata (recipe text, seed, model, layer, tool version, ...).
    """

    num_samples: int
    height: int
    width: int
    classes: list[dict[str, Any]]
    block_size: int = 16
    attrs: dict[str, Any] = field(default_factory=dict)
    ignore_index: int | None = None

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
        if self.ignore_index is not None:
            ig = self.ignore_index
            if isinstance(ig, bool) or not isinstance(ig, (int, np.integer)) or not 0 <= ig <= 255:
                raise ConfigError(f"must be an integer 0..255 (masks are uint8) or null, got {ig!r}", field="ignore_index")
            if int(ig) in seen:
                raise ConfigError(f"ignore value {ig} is also a class id", field="ignore_index")
            self.ignore_index = int(ig)
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

    @property
    def mask_values(self) -> list[int]:
        """Every value a mask may hold: the class ids and the ignore value."""
        return self.class_ids + ([self.ignore_index] if self.ignore_index is not None else [])

    # ---- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {
            "num_samples": self.num_samples,
            "height": self.height,
            "width": self.width,
            "block_size": self.block_size,
            "classes": [dict(c) for c in self.classes],
            "attrs": json.loads(json.dumps(self.attrs)),
        }
        if self.ignore_index is not None:  # absent in datasets without one (older ones keep their fingerprint)
            d["ignore_index"] = self.ignore_index
        return d

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
                ignore_index=d.get("ignore_index"),
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
        for key in ("num_samples", "height", "width", "block_size", "classes", "ignore_index"):
            if a.get(key) != b.get(key):
                out.append(f"{key}: existing {_short(a.get(key))}, new {_short(b.get(key))}")
        for key in sorted(set(a["attrs"]) | set(b["attrs"])):
            va, vb = a["attrs"].get(key, _MISSING), b["attrs"].get(key, _MISSING)
            if va != vb:
                out.append(f"attrs.{key}: existing {_short(va)}, new {_short(vb)}")
        return out


#: ``attrs`` holding large text that is stored once, in info.json; copies elsewhere (zarr.json,
#: TIFF page descriptions) carry ``<key>_sha256`` instead.
STORED_ONCE_ATTRS = ("recipe",)


def compact_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` for copies of the metadata: large texts (the recipe) replaced by their sha256."""
    out = {}
    for k, v in attrs.items():
        if k in STORED_ONCE_ATTRS and isinstance(v, str):
            out[f"{k}_sha256"] = hashlib.sha256(v.encode()).hexdigest()
        else:
            out[k] = v
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


def write_exclusive(path: Path, data: bytes, *, tmp_prefix: str = TMP_PREFIX) -> bool:
    """Atomically create ``path`` holding ``data`` unless it exists; True if this call created it.

    The content is written to a temporary name first and hard-linked into place, so a
    reader never sees a partial file and of several racing writers exactly one wins.
    """
    tmp = path.parent / f"{tmp_prefix}{path.name}.{uuid.uuid4().hex}"
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


def _prepare_output_dir(path: Path) -> list[Path]:
    """Make sure ``path`` is (or can become) a writable directory; leave nothing behind on failure.

    Returns the folders this call created (outermost last)."""
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
        probe.unlink(missing_ok=True)  # a concurrent clean-up may have taken it already
    except OSError as exc:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
        _remove_created(created)
        raise DatagenError(f"output directory {path} is not writable: {exc.strerror or exc}") from None
    return created


def _visible_entries(path: Path) -> list[str]:
    return sorted(e for e in os.listdir(path) if not e.startswith(HIDDEN_PREFIX))


class DatasetWriter(ABC):
    """Writes the blocks of one output folder.  Make one with :meth:`create`.

    Several writers (processes, hosts sharing a file system) may write *different*
    shards of the same output at once; each keeps its own manifest file and holds
    the lock of its shard index (:mod:`datagen.writers.lock`) until :meth:`close`.
    """

    format: ClassVar[str]

    def __init__(self, path: Path, info: DatasetInfo, *, shard_index: int, num_shards: int, fsync: bool,
                 lock: OutputLock | None = None) -> None:
        self.path = path
        self.info = info
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.fsync = fsync
        self.lock = lock
        #: Prefix of this writer's temporary files: shard-tagged, so a clean-up by another
        #: shard's writer never takes a file this one is still writing.
        self.tmp_prefix = f"{TMP_PREFIX}w{shard_index}-"
        self._manifest = ManifestWriter(path, shard_index=shard_index, fsync=fsync)
        self._closed = False
        #: Blocks some manifest recorded as complete when this writer was opened: never overwritten,
        #: unless listed by :meth:`allow_rewrite` (blocks that failed verification).
        self._done_at_open: set[int] = set()
        self._rewrite: set[int] = set()
        #: Temporary files of interrupted writes that were removed when this writer was opened.
        self.cleaned: list[str] = []

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
        * another live process holding the same shard index (or writing the output
          with another ``num_shards``): :class:`~datagen.writers.lock.OutputLockedError`.
        """
        _check_shard(shard_index, num_shards)
        path = Path(path).expanduser().absolute()
        created = _prepare_output_dir(path)
        if not (path / INFO_FILE).exists():
            others = _visible_entries(path)
            if others:
                shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                raise DatagenError(
                    f"output directory {path} is not empty and is not a datagen dataset "
                    f"(no {INFO_FILE}; found {shown}); choose a new or empty directory"
                )
        lock = OutputLock(path, shard_index, num_shards)
        try:
            lock.acquire()
        except BaseException:
            if created and not _visible_entries(path):  # we made the folder: leave nothing behind
                shutil.rmtree(path / LOCK_DIR, ignore_errors=True)
                _remove_created(created)
            raise
        try:
            info_file = path / INFO_FILE
            if not info_file.exists():
                doc = _info_document(info, cls.format)
                made = write_exclusive(info_file, (json.dumps(doc, indent=2) + "\n").encode(),
                                       tmp_prefix=f"{TMP_PREFIX}w{shard_index}-")
                if made and fsync:
                    fsync_path(path)
            cls._check_existing(path, info, resume=resume, shard_index=shard_index, num_shards=num_shards)
            (path / MANIFEST_DIR).mkdir(exist_ok=True)
            writer = cls(path, info, shard_index=shard_index, num_shards=num_shards, fsync=fsync, lock=lock)
            writer._done_at_open = read_manifest(path, info).completed_blocks()
            writer.cleaned = writer.clean_temporary(everything=lock.alone)
            lock.share()
            writer._init_store()
        except BaseException:
            lock.release()
            raise
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
    def _write_data(self, block: int, images: np.ndarray, masks: np.ndarray) -> dict[str, FileRecord]:
        """Write one whole block's data durably (fsynced if self.fsync), replacing whatever was there
        atomically (never leaving the block without files); return ``{relative path: (size, sha256)}``
        of the files written."""

    @abstractmethod
    def block_files(self, block: int) -> list[str]:
        """The data files of ``block``, relative to the output folder."""

    def _temporary_places(self) -> list[Path]:
        """Folders that may hold temporary files of interrupted writes (besides the output folder)."""
        return []

    def clean_temporary(self, *, everything: bool = False) -> list[str]:
        """Remove this writer's leftover temporary files (``everything``: every writer's, and zarr's
        ``*.partial`` files; only safe while no other writer is at work).  Returns what was removed."""
        removed: list[str] = []
        own = self.tmp_prefix
        for place in [self.path, *self._temporary_places()]:
            try:
                names = os.listdir(place)
            except OSError:
                continue
            for name in names:
                if not name.startswith(TMP_PREFIX) or not (everything or name.startswith(own)):
                    continue
                p = place / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    try:
                        p.unlink()
                    except OSError:
                        continue
                removed.append(str(p.relative_to(self.path)))
        if everything:
            removed += self._clean_partials()
        return removed

    def _clean_partials(self) -> list[str]:
        return []

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

    def allow_rewrite(self, blocks: Any) -> None:
        """Let :meth:`write_block` replace these recorded blocks (they failed verification)."""
        self._rewrite.update(int(b) for b in blocks)

    def verify_blocks(self, blocks: Any, *, full: bool = False) -> dict[int, str]:
        """Check recorded blocks against the manifest: ``{block: problem}`` for those that fail.

        Checks that each block's files exist and have the recorded size and sha256
        (blocks recorded without file checksums, by older versions, are decoded and
        hashed); ``full`` also decodes every sample and compares its manifest sha256.
        """
        from datagen.writers import READERS
        from datagen.writers.verify import check_block

        manifest = read_manifest(self.path, self.info)
        reader = READERS[self.format](self.path, self.info)
        try:
            out = {}
            for b in blocks:
                problem = check_block(reader, manifest, int(b), full=full)
                if problem:
                    out[int(b)] = problem
            return out
        finally:
            reader.close()

    def write_block(self, block: int, images: np.ndarray, masks: np.ndarray) -> ManifestEntry:
        """Write all samples of ``block``: images (B,H,W,3) uint8, masks (B,H,W) uint8.

        The data is written (and fsynced) first; only then is the block appended to
        this writer's manifest, so a block interrupted half-way is never taken as data.
        A block some manifest already records is refused (it is never overwritten or
        deleted) unless :meth:`allow_rewrite` named it.
        """
        if self._closed:
            raise RuntimeError("write_block() on a closed writer")
        rng = self.info.block_range(block)
        if block in self._done_at_open and block not in self._rewrite:
            raise DatagenError(f"{self.path}: block {block} is already complete (recorded in the manifest); "
                               "refusing to overwrite it")
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
        bad = sorted(set(np.flatnonzero(counts).tolist()) - set(self.info.mask_values))
        if bad:
            ig = f" or the ignore value {self.info.ignore_index}" if self.info.ignore_index is not None else " (no ignore value is set)"
            raise ValueError(f"block {block}: masks contain ids {bad} that are not in the class table {self.info.class_ids}{ig}")
        hashes = [sample_sha256(images[j], masks[j]) for j in range(n)]
        files = self._write_data(block, images, masks)
        entry = ManifestEntry(block=block, start=rng.start, stop=rng.stop, sha256=tuple(hashes), files=files)
        self._manifest.append(entry)
        return entry

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._manifest.close()
                self._close_store()
                self.clean_temporary()
                if self.lock is not None and self.lock.try_exclusive():  # the last writer out sweeps up
                    self.clean_temporary(everything=True)
            finally:
                if self.lock is not None:
                    self.lock.release()

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

    def block_files(self, block: int) -> list[str]:
        """The data files of ``block``, relative to the output folder."""
        return []

    def block_present(self, block: int) -> bool:
        """Whether the data files of ``block`` exist (without checking their content)."""
        return all((self.path / f).is_file() for f in self.block_files(block))

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
