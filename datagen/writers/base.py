"""The writer and reader interface shared by all output formats, and output-folder housekeeping.

A run writes ``num_samples`` image/mask pairs.  The sample indices are cut into
*blocks* of ``block_size`` consecutive indices (the last one may be short; see
:class:`~datagen.writers.info.DatasetInfo`).  A block is the unit of writing, of
resuming and of splitting work across workers: a writer writes one whole block at a
time, records it in the manifest only once its data is on disk, and on resume every
block that is not in the manifest is written again from scratch.

Every output folder has an ``info.json`` (:mod:`datagen.writers.info`) at its root,
written before anything else, a ``manifest/`` folder (:mod:`datagen.writers.manifest`)
and the format's own data files.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datagen.errors import ConfigError, DatagenError, arg
from datagen.fsutil import TMP_PREFIX, fsync_path, temp_name, write_exclusive
from datagen.writers.info import INFO_FILE, DatasetInfo, check_shard, info_document, load_info
from datagen.writers.instances import instance_maps
from datagen.writers.lock import LOCK_DIR, OutputLock
from datagen.writers.manifest import (
    MANIFEST_DIR,
    FileRecord,
    ManifestEntry,
    ManifestWriter,
    blocks_left,
    read_manifest,
    sample_sha256,
)
from datagen.writers.verify import check_block

#: Names starting with this are datagen's own housekeeping (temporary files, locks), not data.
HIDDEN_PREFIX = ".datagen-"


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
    probe = temp_name(path / "probe")
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
        #: Prefix of this writer's temporary files (see :func:`shard_tmp_prefix`).
        self.tmp_prefix = shard_tmp_prefix(shard_index)
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
        check_shard(shard_index, num_shards)
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
                doc = info_document(info, cls.format)
                made = write_exclusive(info_file, (json.dumps(doc, indent=2) + "\n").encode(),
                                       prefix=shard_tmp_prefix(shard_index))
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
            done = read_manifest(path, info).completed_blocks()
            if done & set(info.shard_blocks(shard_index, num_shards)):
                raise DatagenError(
                    f"{path} already contains data ({len(done)} of {info.num_blocks} blocks complete); "
                    f"resume the run ({arg('resume', True)}) or choose another output directory"
                )

    @abstractmethod
    def _init_store(self) -> None:
        """Create (idempotently and race-safely) the format's metadata; open handles for writing."""

    @abstractmethod
    def _write_data(self, block: int, images: np.ndarray, masks: np.ndarray,
                    instances: np.ndarray | None = None) -> dict[str, FileRecord]:
        """Write one whole block's data durably (fsynced if self.fsync), replacing whatever was there
        atomically (never leaving the block without files); return ``{relative path: (size, sha256)}``
        of the files written.  ``instances``: the block's instance maps, when ``info.instances``."""

    @abstractmethod
    def block_files(self, block: int) -> list[str]:
        """The data files of ``block``, relative to the output folder."""

    @abstractmethod
    def open_reader(self) -> DatasetReader:
        """A reader of this writer's output (for verifying recorded blocks)."""

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
        return list(self.info.shard_blocks(self.shard_index, self.num_shards))

    def pending_blocks(self) -> list[int]:
        """This shard's blocks that are not complete yet, in order."""
        return blocks_left(self.info, self.completed_blocks(), shard_index=self.shard_index,
                           num_shards=self.num_shards)

    def allow_rewrite(self, blocks: Any) -> None:
        """Let :meth:`write_block` replace these recorded blocks (they failed verification)."""
        self._rewrite.update(int(b) for b in blocks)

    def verify_blocks(self, blocks: Any, *, full: bool = False) -> dict[int, str]:
        """Check recorded blocks against the manifest: ``{block: problem}`` for those that fail.

        Checks that each block's files exist and have the recorded size and sha256
        (blocks recorded without file checksums, by older versions, are decoded and
        hashed); ``full`` also decodes every sample and compares its manifest sha256.
        """
        manifest = read_manifest(self.path, self.info)
        reader = self.open_reader()
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

        With ``info.instances`` the block's instance maps are derived from the masks
        (:func:`~datagen.writers.instances.instance_map`) and written beside them.
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
        instances = instance_maps(masks, self.info.ignore_index) if self.info.instances else None
        files = self._write_data(block, images, masks, instances)
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

    @abstractmethod
    def read_instances(self, index: int) -> np.ndarray:
        """The instance map (H,W) uint32 of sample ``index`` (only when ``info.instances``)."""

    @abstractmethod
    def read_block_instances(self, block: int) -> np.ndarray:
        """The instance maps (B,H,W) of ``block`` as stored (only when ``info.instances``)."""

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


def shard_tmp_prefix(shard_index: int) -> str:
    """Prefix of the temporary files of the writer of shard ``shard_index``: shard-tagged, so a
    clean-up by another shard's writer never takes a file this one is still writing."""
    return f"{TMP_PREFIX}w{shard_index}-"
