"""Crash-safe file writes: a reader sees the old file or the whole new one, never half of one.

Every file datagen writes in place (library sidecars, vectors, checkpoints, reports, canvases,
dataset blocks and metadata) goes through :func:`atomic_path`: the content is written under a
temporary name in the same folder and renamed over the target, so an interrupted run, a full
disk or a killed process leaves no partial file behind. Temporary names all start with
:data:`TMP_PREFIX`, so a later run (or a person) can tell them apart from real output and
sweep them up.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".datagen-tmp-"


def temp_name(path: str | os.PathLike, *, prefix: str = TMP_PREFIX) -> Path:
    """A fresh temporary path beside ``path`` (same folder, so the final rename is atomic)."""
    path = Path(path)
    return path.parent / f"{prefix}{path.name}.{uuid.uuid4().hex[:12]}"


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file (or a folder, where the OS allows it); silently does nothing where it cannot."""
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


@contextmanager
def atomic_path(path: str | os.PathLike, *, prefix: str = TMP_PREFIX, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    ``fsync``: flush the file to disk before the rename (for data that must survive a power cut,
    such as dataset blocks), at some cost in speed. The temporary may be a file or a folder.
    """
    target = Path(path)
    tmp = temp_name(target, prefix=prefix)
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, target)
        if fsync:
            fsync_path(target.parent)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_exclusive(path: str | os.PathLike, data: bytes, *, prefix: str = TMP_PREFIX) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True if this call created it.

    The exclusive-create twin of :func:`atomic_write_bytes`, for files several processes may
    race to create (an output's info.json and zarr metadata): the content is written and
    fsynced under a temporary name, then hard-linked into place, so a reader never sees a
    partial file and exactly one racer wins without overwriting the others.
    """
    target = Path(path)
    tmp = temp_name(target, prefix=prefix)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        except OSError:  # file systems without hard links: exclusive create + write
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "TMP_PREFIX",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_path",
    "temp_name",
    "write_exclusive",
]
