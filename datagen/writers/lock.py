"""One writer per output shard: OS-level locks (``flock``) that the kernel releases when the holder dies.

Every writer of an output holds, for as long as it is open,

* an exclusive lock on ``OUT/.datagen-locks/shard-<K>.lock`` (its shard index ``K``): a
  second process with the same shard index -- a second plain run, or a ``--resume``
  started while the first run still writes -- is refused with a message naming the
  holder (pid, host, start time, command);
* a shared lock on ``OUT/.datagen-locks/output.lock``.  A writer that gets it
  *exclusively* is the only one at work on the output and may remove every leftover
  temporary file; otherwise it removes only its own shard's.

Writers of one sharded run (``--shard-index K --num-shards M``) hold different shard
locks and write side by side.  A writer whose ``num_shards`` differs from a live
holder's is refused too (its blocks would overlap the other's).

The locks are advisory ``flock`` locks: the kernel drops them when the process exits
or is killed, so a crashed run never blocks the next one.  Lock files are never
deleted (deleting a lock file that someone holds would let a third process lock a
new file of the same name).  On Linux NFS (v4, or v3 with lockd) ``flock`` is
forwarded to the server's byte-range locks, so the lock also holds across hosts on a
shared file system; where the file system has no locks at all a warning is given
and the run goes on unlocked.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError, arg

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs unlocked (documented)
    fcntl = None  # type: ignore[assignment]

LOCK_DIR = ".datagen-locks"
OUTPUT_LOCK = "output.lock"


class OutputLockedError(DatagenError):
    """Another live process writes the same output (same shard, or an overlapping one)."""


def shard_lock_name(shard_index: int) -> str:
    return f"shard-{shard_index:05d}.lock"


def _holder_text(doc: dict[str, Any] | None) -> str:
    if not doc:
        return "another process (it has not written its details yet)"
    parts = [f"pid {doc.get('pid', '?')} on host {doc.get('host', '?')}"]
    if doc.get("started"):
        parts.append(f"started {doc['started']}")
    if doc.get("num_shards", 1) != 1 or doc.get("shard_index", 0) != 0:
        parts.append(f"shard {doc.get('shard_index')} of {doc.get('num_shards')}")
    if doc.get("command"):
        cmd = str(doc["command"])
        parts.append(f"command: {cmd[:200] + ('...' if len(cmd) > 200 else '')}")
    return ", ".join(parts)


def _read_doc(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        doc = json.loads(data) if data.strip() else None
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def _unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, getattr(errno, "ENOTSUP", -1))


class OutputLock:
    """The locks of one writer (shard ``shard_index`` of ``num_shards``) on the output at ``path``.

    :meth:`acquire` raises :class:`OutputLockedError` when another live process holds
    the shard (or writes the output with another ``num_shards``); :meth:`release` (or
    process death) gives everything back.
    """

    def __init__(self, path: Path, shard_index: int = 0, num_shards: int = 1) -> None:
        self.path = Path(path)
        self.dir = self.path / LOCK_DIR
        self.shard_index = shard_index
        self.num_shards = num_shards
        self._shard_fd: int | None = None
        self._output_fd: int | None = None
        self.alone = False  #: True when this writer held the output-wide lock exclusively when it started
        self.unlocked = False  #: True when the file system has no locks (ran unlocked, with a warning)

    @property
    def held(self) -> bool:
        return self._shard_fd is not None

    def acquire(self) -> OutputLock:
        if fcntl is None:  # pragma: no cover
            self.unlocked = True
            return self
        self.dir.mkdir(exist_ok=True)
        fd = os.open(self.dir / shard_lock_name(self.shard_index), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_doc(fd)
            os.close(fd)
            raise OutputLockedError(self._busy_message(holder)) from None
        except OSError as exc:
            os.close(fd)
            if not _unsupported(exc):
                raise
            warnings.warn(f"{self.path}: the file system does not support locks ({exc.strerror}); writing without "
                          "a lock: make sure no other run writes this output", stacklevel=3)
            self.unlocked = True
            return self
        self._shard_fd = fd
        try:
            doc = {"pid": os.getpid(), "host": platform.node(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "shard_index": self.shard_index,
                   "num_shards": self.num_shards, "command": " ".join(sys.argv)}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(doc).encode())
            self._check_other_shards()
            self._take_output_lock()
        except BaseException:
            self.release()
            raise
        return self

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        what = "this output" if self.num_shards == 1 else f"shard {self.shard_index} of this output"
        return (f"{self.path}: {what} is being written by {_holder_text(holder)}. "
                "Only one run may write an output (or one shard of it) at a time: wait for that run to finish, "
                f"stop it, or choose another {arg('out')}. The lock goes away by itself when that process exits.")

    def _check_other_shards(self) -> None:
        """Refuse when a live writer of this output splits it into another number of shards."""
        assert fcntl is not None
        mine = shard_lock_name(self.shard_index)
        for file in sorted(self.dir.glob("shard-*.lock")):
            if file.name == mine:
                continue
            try:
                fd = os.open(file, os.O_RDONLY)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:  # held: somebody is writing that shard right now
                    doc = _read_doc(fd)
                    if doc is None or doc.get("num_shards") != self.num_shards:
                        raise OutputLockedError(
                            f"{self.path}: it is being written by {_holder_text(doc)}, which splits the output into "
                            f"{(doc or {}).get('num_shards', '?')} shard(s); this run uses {self.num_shards}, so their "
                            f"blocks would overlap. Wait for that run to finish or use the same {arg('num_shards')}."
                        ) from None
                else:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _take_output_lock(self) -> None:
        assert fcntl is not None
        fd = os.open(self.dir / OUTPUT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.alone = True
        except BlockingIOError:  # other writers are at work: share the output with them
            self.alone = False
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while someone cleans up (start or end of a run)
            except OSError:
                os.close(fd)
                raise
        except OSError:
            os.close(fd)
            raise
        self._output_fd = fd

    def share(self) -> None:
        """After the start-up clean-up: let other shards' writers in (exclusive -> shared)."""
        if fcntl is not None and self._output_fd is not None:
            fcntl.flock(self._output_fd, fcntl.LOCK_SH)

    def try_exclusive(self) -> bool:
        """At the end: release the shared output lock and try to get it alone (True: no other writer is at work)."""
        if fcntl is None or self._output_fd is None:
            return False
        fcntl.flock(self._output_fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(self._output_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def release(self) -> None:
        for name in ("_output_fd", "_shard_fd"):
            fd = getattr(self, name)
            if fd is not None:
                try:
                    if name == "_shard_fd":
                        os.ftruncate(fd, 0)  # a stale holder description would only confuse
                except OSError:
                    pass
                os.close(fd)  # closing the descriptor drops its flock
                setattr(self, name, None)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(path: str | os.PathLike, shard_index: int = 0) -> str | None:
    """A description of the live process holding shard ``shard_index`` of the output at ``path``, or None."""
    if fcntl is None:  # pragma: no cover
        return None
    file = Path(path) / LOCK_DIR / shard_lock_name(shard_index)
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder_text(_read_doc(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
