"""Local worker processes: the blocks of one ``generate`` run rendered by several processes of this machine.

On a CPU, N single-threaded processes that each render whole blocks use N cores better
than one process with N torch threads: threads meet at a barrier after every operation,
so each waits for the slowest (and for any other work on the machine), while processes
never wait for each other (2 cores, 256-px batches of 8: 7.5 against 5.7 img/s once
running; docs/performance.md, "Processes and threads"). Each process pays to start,
though, so small runs stay in one process (:func:`plan_processes`).

Who does what
-------------
* The parent (:func:`datagen.generate.generate`) checks everything (:func:`~datagen.generate.prepare`),
  opens the one writer (output lock, manifest), hands out blocks, augments and writes the
  blocks that come back (on its writer thread, as a single-process run does) and keeps the
  progress bar. It never renders, so it never fits the ``mask: rendered`` classifier.
* Each worker (a fresh interpreter with ``threads`` torch threads) builds the same job once
  (``prepare`` without the separability check the parent already ran; its fingerprint is
  compared with the parent's) and then renders whole blocks: sample indices in, images and
  masks out (layouts, paint plans, forward passes and masks, :meth:`Renderer.pairs`). A
  sample depends only on the recipe, the seed and its index (not on the thread count), and
  every worker fits the identical ``mask: rendered`` classifier (its own random streams,
  fitted on one thread), so the output equals a single-process run bit for bit.

Blocks come back in any order. The writer writes each whole and records it in the
manifest only after its data is on disk, so an interrupted run keeps every written block
and ``resume`` renders the rest:

* an error in a worker is raised in the parent as the same exception (a
  :class:`~datagen.errors.DatagenError` keeps its message, parameter and file; the
  worker's traceback is attached as the cause); the other workers are stopped;
* a worker that dies (killed, out of memory) is a DatagenError naming its exit code;
* Ctrl-C: workers run in their own session (and ignore SIGINT); the parent stops them, lets
  the writer finish the blocks it already has and re-raises KeyboardInterrupt;
* the parent killed (``kill -9``): each worker sees its lifeline pipe close and exits at once.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn

from ..errors import DatagenError, UsageError

#: Fewest blocks, and fewest megapixels of output, each worker should get before another worker pays for
#: itself. A worker's start (a new interpreter, torch, the model, its own ``mask: rendered`` fit) costs
#: about 3-4 s more than rendering in the calling process; on 2 cores two single-threaded workers
#: save ~0.04 s per 256-px sample over one process with 2 threads, so they break even at ~100 samples.
MIN_BLOCKS_PER_WORKER = 2
MIN_MEGAPIXELS_PER_WORKER = 4.0  # 64 samples of 256 x 256 px
#: Memory one worker needs besides its batch (torch, the model, a block in flight), bytes.
WORKER_BASE_BYTES = 600 << 20

#: Environment variables of the thread pools a worker's libraries start (set before they are imported).
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. ``taskset``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on every platform
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ProcessPlan:
    """How a run renders: ``workers`` processes (1: the calling process) of ``threads`` torch threads
    each (None: the calling process keeps its own setting)."""

    workers: int
    threads: int | None


def check_workers(workers: int | str) -> int | str:
    """``workers`` as given to :func:`datagen.generate.generate`: a whole number >= 1 or ``"auto"``."""
    if isinstance(workers, str):
        if workers.strip().lower() == "auto":
            return "auto"
        try:
            workers = int(workers)
        except ValueError:
            raise UsageError(f"must be a whole number of processes or 'auto', got {workers!r}",
                             param="workers") from None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"must be at least 1 or 'auto', got {workers!r}", param="workers")
    return workers


def check_threads(threads: int | None) -> int | None:
    """``threads`` as given to :func:`datagen.generate.generate`: None or a whole number >= 1."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"must be at least 1, got {threads!r}", param="threads")
    return threads


def plan_processes(workers: int | str, threads: int | None, *, device_type: str, blocks: int,
                   megapixels: float = float("inf"), cores: int | None = None, worker_bytes: int | None = None,
                   memory: int | None = None) -> ProcessPlan:
    """The processes and threads that render ``blocks`` blocks of ``megapixels`` in all (neither changes a pixel).

    ``workers="auto"``:

    * a GPU (any device but the CPU), or not a POSIX system: the calling process;
    * the CPU: one worker per available core, but no more than give each worker
      :data:`MIN_BLOCKS_PER_WORKER` blocks and :data:`MIN_MEGAPIXELS_PER_WORKER` of output,
      and no more than fit in 80 % of ``memory`` at ``worker_bytes`` each; fewer than two:
      the calling process.

    ``threads`` (torch threads per rendering process): by default ``cores // workers`` with
    several workers (1 when there is a worker per core); the calling process keeps its own
    setting (torch's default: one per core; ``OMP_NUM_THREADS``; ``torch.set_num_threads``),
    which was the fastest single-process setting on an idle 2-core machine
    (docs/performance.md, "Processes and threads").
    """
    cores = cores or available_cores()
    check_threads(threads)
    if workers != "auto":
        n = int(workers)
        if n > 1 and os.name != "posix":
            raise UsageError("worker processes need Linux or macOS here; use 1", param="workers")
    elif device_type != "cpu" or os.name != "posix":
        n = 1
    else:
        n = min(cores, blocks // MIN_BLOCKS_PER_WORKER)
        if megapixels < n * MIN_MEGAPIXELS_PER_WORKER:
            n = int(megapixels // MIN_MEGAPIXELS_PER_WORKER)
        if memory and worker_bytes:
            n = min(n, int(memory * 0.8) // max(1, worker_bytes))
    n = max(1, min(n, blocks))
    if n == 1:
        return ProcessPlan(1, threads)
    return ProcessPlan(n, threads or max(1, cores // n))


# ---- the worker side -------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the parent's job (the arguments of :func:`datagen.generate.prepare`)."""

    recipe_path: str
    num: int
    seed: int
    device: str
    block_size: int
    batch_size: int
    trust_pickles: bool
    instances: bool
    threads: int
    precision: str = "auto"


def _portable(e: BaseException) -> tuple[BaseException, str]:
    """``e`` (or, if it does not pickle, a RuntimeError saying what it was) and its formatted traceback."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 - any exception that cannot cross the pipe as it is
        return RuntimeError(f"{type(e).__name__}: {e}"), tb
    return e, tb


def _exit_with_parent(lifeline: int) -> None:
    """Exit at once when the parent is gone: its end of the ``lifeline`` pipe closes (also on kill -9)."""
    def watch() -> None:
        try:
            while os.read(lifeline, 1):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def worker_main(conn_fd: int, lifeline: int) -> None:
    """A worker: receive the :class:`WorkerSpec`, build the job, then render blocks until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent(lifeline)
    conn = Connection(conn_fd)
    try:
        spec: WorkerSpec = conn.recv()
        import torch

        torch.set_num_threads(spec.threads)
        from ..generate import prepare

        job = prepare(spec.recipe_path, num=spec.num, seed=spec.seed, device=spec.device, block_size=spec.block_size,
                      batch_size=spec.batch_size, trust_pickles=spec.trust_pickles, instances=spec.instances,
                      precision=spec.precision, check_separability=False)
        conn.send(("ready", job.info.to_dict()))
        while (task := conn.recv()) is not None:
            block, start, stop = task
            images, masks = job.renderer.pairs(range(start, stop), batch_size=spec.batch_size)
            conn.send(("done", block, images, masks))
    except (EOFError, OSError) as e:  # the parent is gone (or hung up): nothing to report to
        if not isinstance(e, (EOFError, BrokenPipeError, ConnectionError)):
            _report(conn, e)
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the parent
        _report(conn, e)


def _report(conn: Connection, e: BaseException) -> None:
    err, tb = _portable(e)
    try:
        conn.send(("error", err, tb))
    except OSError:
        pass


#: The command line of a worker: this interpreter, the parent's import path, then :func:`worker_main`.
_WORKER_CODE = ("import sys; sys.path[:] = sys.argv[3:]; "
                "from datagen.engines.processes import worker_main; worker_main(int(sys.argv[1]), int(sys.argv[2]))")


# ---- the parent side ---------------------------------------------------------------------

class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (attached as the parent exception's cause)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


@dataclass
class _Worker:
    name: str
    process: subprocess.Popen[bytes]
    conn: Connection
    lifeline: int  # the parent's end: closing it ends the worker
    block: int | None = None  # the block it is rendering
    stopped: bool = False


class RenderPool:
    """``workers`` processes of one job; :meth:`render` hands out blocks and yields them as they come back.

    Workers are fresh interpreters (``python -c``, the parent's import path), not ``multiprocessing``
    children: nothing of the calling script runs again in them, so a script needs no
    ``if __name__ == "__main__"`` guard. Each runs in its own session, so a terminal's Ctrl-C reaches
    only the parent, which stops them."""

    def __init__(self, spec: WorkerSpec, workers: int, expected_info: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.expected_info = expected_info
        self.workers: list[_Worker] = []
        env = {**os.environ, **{var: str(spec.threads) for var in _THREAD_VARS}}
        try:
            for k in range(workers):
                mine, theirs = socket.socketpair()
                life_r, life_w = os.pipe()
                try:
                    argv = [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno()), str(life_r), *sys.path]
                    p = subprocess.Popen(argv, pass_fds=(theirs.fileno(), life_r), env=env, start_new_session=True)
                except BaseException:
                    mine.close()
                    os.close(life_w)
                    raise
                finally:
                    theirs.close()
                    os.close(life_r)
                w = _Worker(f"datagen-render-{k}", p, Connection(mine.detach()), life_w)
                self.workers.append(w)
                w.conn.send(spec)
        except BaseException:
            self.terminate()
            raise

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]

    def render(self, blocks: list[tuple[int, int, int]]) -> Iterator[tuple[int, Any, Any]]:
        """(block, images, masks) of every ``(block, start, stop)``, in the order they finish."""
        todo = deque(blocks)
        for w in self.workers:
            self._next(w, todo)
        while any(w.block is not None for w in self.workers):
            busy = [w for w in self.workers if w.block is not None]
            ready = wait([w.conn for w in busy])
            for w in busy:
                if w.conn not in ready:
                    continue
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    self._died(w)
                if msg[0] == "ready":
                    self._check_ready(w, msg[1])
                elif msg[0] == "error":
                    exc, tb = msg[1], msg[2]
                    exc.__cause__ = _RemoteTraceback(tb)
                    raise exc
                else:
                    _, block, images, masks = msg
                    self._next(w, todo)
                    yield block, images, masks

    def _next(self, w: _Worker, todo: deque[tuple[int, int, int]]) -> None:
        """Hand ``w`` its next block, or let it go when none is left."""
        if todo:
            block, start, stop = todo.popleft()
            w.block = block
            try:
                w.conn.send((block, start, stop))
            except OSError:  # it died after its last block
                self._died(w)
        else:
            w.block = None
            self._stop(w)

    def _check_ready(self, w: _Worker, info_doc: dict[str, Any]) -> None:
        if self.expected_info is None:
            return
        from ..writers import DatasetInfo

        mine, theirs = DatasetInfo.from_dict(self.expected_info), DatasetInfo.from_dict(info_doc)
        if mine.fingerprint() != theirs.fingerprint():
            raise DatagenError(f"render worker {w.name} sees different inputs than the main process: "
                               + "; ".join(mine.differences(theirs))
                               + " (were the recipe, model or library changed while the run started?)")

    def _died(self, w: _Worker) -> NoReturn:
        try:
            code = w.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        how = (f"was killed by signal {-code}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
               if code is not None and code < 0 else f"exited with status {code}" if code is not None
               else "stopped answering")
        raise DatagenError(f"render worker {w.name} (pid {w.process.pid}) {how} while rendering block "
                           f"{w.block}; completed blocks are kept")

    def _stop(self, w: _Worker) -> None:
        if not w.stopped:
            w.stopped = True
            try:
                w.conn.send(None)
            except OSError:
                pass

    def close(self) -> None:
        """Let every worker exit (they have no work left); stop those that do not."""
        for w in self.workers:
            self._stop(w)
        for w in self.workers:
            try:
                w.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.terminate()

    def terminate(self) -> None:
        """Stop every worker now (work in progress is lost; none of it was written)."""
        for w in self.workers:
            if w.process.poll() is None:
                w.process.terminate()
        for w in self.workers:
            try:
                w.process.wait(5)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()
            if not w.conn.closed:
                w.conn.close()
            if w.lifeline >= 0:
                os.close(w.lifeline)
                w.lifeline = -1

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()


__all__ = ["MIN_BLOCKS_PER_WORKER", "MIN_MEGAPIXELS_PER_WORKER", "ProcessPlan", "RenderPool", "WorkerSpec",
           "available_cores", "check_threads", "check_workers", "plan_processes", "worker_main"]
