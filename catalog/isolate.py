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


def _worker(conn, memory_mb: int) -> None:
    import resource

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
        try:
            conn.send(("ok", fn(*args)))
        except QueryError as e:
            conn.send(("query", str(e)))
        except CatalogError as e:
            conn.send(("catalog", str(e)))
        except MemoryError:
            conn.send(("query", f"the query needed more than {memory_mb} MB and was stopped; simplify it"))
        except Exception as e:  # noqa: BLE001 - reported to the caller as one line
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "Out of Memory" in msg or "bad_alloc" in msg or "Allocation failure" in msg:
                msg = f"the query needed more than {memory_mb} MB and was stopped; simplify it"
                conn.send(("query", msg))
            else:
                conn.send(("query", f"query failed: {msg[:300]}"))


class _Proc:
    def __init__(self, ctx, memory_mb: int):
        self.conn, child = ctx.Pipe()
        self.p = ctx.Process(target=_worker, args=(child, memory_mb), daemon=True, name="de-query-worker")
        self.p.start()
        child.close()

    def kill(self) -> None:
        self.p.kill()
        self.p.join(timeout=5)
        self.conn.close()


class QueryWorkers:
    """`run(fn, args, timeout)` on one of `n` worker processes (started lazily, replaced when
    killed). Jobs beyond `n` wait for a free worker, within their own deadline."""

    def __init__(self, n: int = 2, memory_mb: int = DEFAULT_MEMORY_MB):
        self.n, self.memory_mb = n, memory_mb
        self._ctx = mp.get_context("spawn")  # never fork a threaded server
        self._idle: queue.Queue = queue.Queue()
        self._started = 0
        self._lock = threading.Lock()
        self.killed = 0

    def _take(self, deadline: float) -> _Proc:
        with self._lock:
            if self._idle.empty() and self._started < self.n:
                self._started += 1
                return _Proc(self._ctx, self.memory_mb)
        try:
            return self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise QueryError("the server is busy with other filters; try again") from None

    def run(self, fn, args: tuple, timeout: float):
        deadline = time.monotonic() + timeout
        w = self._take(deadline)
        try:
            w.conn.send((fn, args))
            if not w.conn.poll(max(0.0, deadline - time.monotonic()) + 1.0):  # 1 s for the reply itself
                raise TimeoutError
            kind, value = w.conn.recv()
        except (TimeoutError, EOFError, OSError, BrokenPipeError) as e:
            w.kill()
            with self._lock:
                self._started -= 1
                self.killed += 1
            if isinstance(e, TimeoutError):
                raise QueryError(f"the query ran longer than {timeout:g} s and was stopped; simplify it") from None
            raise QueryError(f"the query stopped its worker ({type(e).__name__}); simplify it") from None
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
