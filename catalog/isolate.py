"""User SQL in a cage: a pool of worker processes, each with a memory ceiling, killed at the
deadline.

DuckDB's `interrupt()` is checked between vectors, and its `memory_limit` governs the buffer
manager, not a string function's own allocation: `lpad('a', 2000000000, 'b')` runs for tens of
seconds and takes gigabytes in one call, whatever the settings. So a long-lived process that
takes filters from others (`de serve`) runs them here: the worker's address space is capped
(RLIMIT_AS), and at the deadline the worker is killed (SIGKILL) and replaced. The server's own
memory and threads are never at the filter's mercy.

A job is a module-level function `fn(*args)` (picklable by reference) that returns picklable
values; its exceptions come back as the same class when it is a CatalogError/QueryError.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time

from .db import CatalogError
from .query import QueryError

DEFAULT_MEMORY_MB = 1536
RECYCLE_SHARE = 0.6  # a worker whose address space passes this share of its ceiling is replaced


def _limit_arenas() -> None:
    """At most two glibc malloc arenas. The ceiling is on address space, and every DuckDB thread
    of every job's connection would otherwise reserve an arena of its own (64 MB each), and a
    long-lived worker runs out of address space long before memory (benchmarks/README.md,
    "de serve at 1,000,005 clips")."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to limit


def statm_mb(field: int) -> float:
    """This process's /proc/self/statm field in MB (0: address space, 1: resident); 0.0 where
    there is no /proc."""
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[field]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _address_space_mb() -> float:
    return statm_mb(0)


def _worker(conn, memory_mb: int, recycle_share: float = RECYCLE_SHARE) -> None:
    import resource

    _limit_arenas()
    if memory_mb:
        lim = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    import duckdb  # noqa: F401 - imported once, before the first job

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        fn, args = job
        kind, value = _run(fn, args, memory_mb)
        retire = bool(memory_mb) and _address_space_mb() > recycle_share * memory_mb
        conn.send((kind, value, retire))
        if retire:
            return  # grown (fragmentation): the pool starts a fresh worker for the next job


def _run(fn, args, memory_mb: int) -> tuple[str, object]:
    try:
        return "ok", fn(*args)
    except QueryError as e:
        return "query", str(e)
    except CatalogError as e:
        return "catalog", str(e)
    except MemoryError:
        return "query", f"the query needed more than {memory_mb} MB and was stopped; simplify it"
    except Exception as e:  # noqa: BLE001 - reported to the caller as one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Out of Memory" in msg or "bad_alloc" in msg or "Allocation failure" in msg:
            return "query", f"the query needed more than {memory_mb} MB and was stopped; simplify it"
        return "query", f"query failed: {msg[:300]}"


class _Proc:
    def __init__(self, ctx, memory_mb: int, recycle_share: float):
        self.conn, child = ctx.Pipe()
        self.p = ctx.Process(target=_worker, args=(child, memory_mb, recycle_share), daemon=True,
                             name="de-query-worker")
        self.p.start()
        child.close()

    def kill(self) -> None:
        self.p.kill()
        self.p.join(timeout=5)
        self.conn.close()


class QueryWorkers:
    """`run(fn, args, timeout)` on one of `n` worker processes (started lazily, replaced when
    killed). Jobs beyond `n` wait for a free worker, within their own deadline."""

    def __init__(self, n: int = 2, memory_mb: int = DEFAULT_MEMORY_MB, recycle_share: float = RECYCLE_SHARE):
        self.n, self.memory_mb, self.recycle_share = n, memory_mb, recycle_share
        self._ctx = mp.get_context("spawn")  # never fork a threaded server
        self._idle: queue.Queue = queue.Queue()
        self._started = 0
        self._lock = threading.Lock()
        self.killed = 0
        self.retired = 0

    def _take(self, deadline: float) -> _Proc:
        with self._lock:
            if self._idle.empty() and self._started < self.n:
                self._started += 1
                try:
                    return _Proc(self._ctx, self.memory_mb, self.recycle_share)
                except BaseException:
                    self._started -= 1  # a worker that could not start holds no slot
                    raise
        try:
            return self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise QueryError("the server is busy with other filters; try again") from None

    def prestart(self) -> None:
        """Start the workers now, so the first filter does not wait for a process to start."""
        while True:
            with self._lock:
                if self._started >= self.n:
                    return
                self._started += 1
            try:
                self._idle.put(_Proc(self._ctx, self.memory_mb, self.recycle_share))
            except BaseException:
                with self._lock:
                    self._started -= 1
                raise

    def run(self, fn, args: tuple, timeout: float):
        deadline = time.monotonic() + timeout
        w = self._take(deadline)
        try:
            w.conn.send((fn, args))
            if not w.conn.poll(max(0.0, deadline - time.monotonic()) + 1.0):  # 1 s for the reply itself
                raise TimeoutError
            kind, value, retired = w.conn.recv()
        except (TimeoutError, EOFError, OSError, BrokenPipeError) as e:
            w.kill()
            with self._lock:
                self._started -= 1
                self.killed += 1
            if isinstance(e, TimeoutError):
                raise QueryError(f"the query ran longer than {timeout:g} s and was stopped; simplify it") from None
            raise QueryError(f"the query stopped its worker ({type(e).__name__}); simplify it") from None
        if retired:  # it exits after this job (see RECYCLE_SHARE); a fresh one takes its slot
            w.p.join(timeout=5)
            w.conn.close()
            with self._lock:
                self._started -= 1
                self.retired += 1
        else:
            self._idle.put(w)
        if kind == "ok":
            return value
        raise (CatalogError if kind == "catalog" else QueryError)(value)

    def close(self) -> None:
        while not self._idle.empty():
            w = self._idle.get_nowait()
            try:
                w.conn.send(None)
            except OSError:
                pass
            w.kill()
