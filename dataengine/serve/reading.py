"""How `de serve` reads the catalog: connections shared by the requests of a moment and closed
between them (SharedReader), a user's SQL run in a worker process (page_job, summary_job), and
the per-filter summaries computed in the background (Summaries)."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from contextlib import contextmanager

from catalog.grid import Filter, page_rows, summarize


_READERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_readers() -> None:
    """Close lingering connections before the interpreter tears down (not from a timer thread)."""
    for r in list(_READERS):
        r.close()


class SharedReader:
    """The in-process readers' one sandboxed connection, and the writer's exclusion.

    Readers run at once, each on its own cursor of one sandboxed connection that the first reader
    opens. It stays open `linger` s after the last reader leaves, so a curator's next click finds
    DuckDB's buffers warm (at 1M clips, reopening cost 15-40 ms a page), but never once it has been
    open `max_hold` s: a writer in another process waits for the file at most that long while
    pages keep coming (`de caption` waits up to $DE_LOCK_WAIT, 10 s). Under a steady stream of
    overlapping requests the readers never all leave, so once the connection has been open
    `max_hold` s new readers wait for it to close and then for `yield_s` more: the file is free
    long enough for a writer's retry (catalog.db backs off to 0.5 s) to land. Without that window
    a grid reloading every 60 ms held the file for good and `de caption` gave up "busy".
    (Separate connections cannot overlap: the sandbox locks the configuration of DuckDB's shared
    instance, and a second connect then sees "a different configuration".) A write waits for the
    readers and excludes them: DuckDB refuses a read-write connection beside read-only ones in one
    process. `with reader:` is the writer's side (tests hold it to read the catalog in-process)."""

    def __init__(self, catalog, linger: float = 1.0, max_hold: float = 2.0, yield_s: float = 0.7):
        self.catalog = catalog
        self.linger, self.max_hold, self.yield_s = linger, max_hold, yield_s
        self._free_until = 0.0  # readers wait until then: the file is left to other processes' writers
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._con = None
        self._opened = 0.0
        self._gen = 0  # bumped by every leave: a pending close is for the latest idle spell only
        _READERS.add(self)

    def _may_read(self) -> bool:
        """(Under the condition.) Whether a new reader may start now; False while a writer holds
        the file here, while the connection drains after max_hold, or during the writers' window."""
        now = time.monotonic()
        if self._writer or now < self._free_until:
            return False
        return not (self._readers and self._opened and now - self._opened >= self.max_hold)

    def _wait_turn(self) -> None:
        while not self._may_read():
            wait = self._free_until - time.monotonic()
            self._cond.wait(timeout=max(0.01, wait) if wait > 0 else 0.05)

    @contextmanager
    def holding(self):
        """Count as a reader without a cursor (a worker process reads the file meanwhile)."""
        with self._cond:
            self._wait_turn()
            self._opened = self._opened or time.monotonic()  # the reading spell starts with its first reader
            self._readers += 1
        try:
            yield
        finally:
            self._leave()

    @contextmanager
    def cursor(self):
        from catalog.query import open_sandboxed

        with self._cond:
            self._wait_turn()
            if self._con is None:
                self._con = open_sandboxed(self.catalog)
            self._opened = self._opened or time.monotonic()
            self._readers += 1
            try:
                cur = self._con.cursor()
            except BaseException:
                self._readers -= 1
                raise
        try:
            yield cur
        finally:
            cur.close()
            self._leave()

    def _leave(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._gen += 1
                held = time.monotonic() - self._opened
                if self._con is not None and self.linger > 0 and held < self.max_hold:
                    t = threading.Timer(self.linger, self._expire, (self._gen,))
                    t.daemon = True
                    t.start()
                else:
                    self._close()
                    if held >= self.max_hold:  # readers held the file that long: give writers a turn
                        self._free_until = time.monotonic() + self.yield_s
                    self._opened = 0.0
                self._cond.notify_all()

    def _expire(self, gen: int) -> None:
        with self._cond:
            if gen == self._gen and self._readers == 0:
                self._close()
                self._opened = 0.0

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def close(self) -> None:
        """Let go of the file now (the server is stopping)."""
        with self._cond:
            self._gen += 1
            if self._readers == 0:
                self._close()

    def __enter__(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writer = True
            self._gen += 1
            self._close()  # a lingering read-only connection would refuse the write
        return self

    def __exit__(self, *exc):
        with self._cond:
            self._writer = False
            self._cond.notify_all()
        return False


@contextmanager
def _own_connection(catalog):
    from catalog.query import open_sandboxed

    con = open_sandboxed(catalog)
    try:
        yield con
    finally:
        con.close()


def read_catalog(connection, timeout: float, fn, *args):
    """fn(con, *args) on the connection the context manager `connection` gives, interrupted at
    `timeout`, with DuckDB's errors as QueryError."""
    from catalog.timeouts import query_deadline

    with connection as con, query_deadline(con, timeout):
        return fn(con, *args)


# -- jobs for a worker process (the user's SQL runs there) --------------------------------------
def page_job(catalog: str, timeout: float, f: Filter, span, first_page: bool) -> list[dict]:
    return read_catalog(_own_connection(catalog), timeout, page_rows, f, span, first_page)


def summary_job(catalog: str, timeout: float, f: Filter) -> dict:
    return read_catalog(_own_connection(catalog), timeout, summarize, f)


class Busy(Exception):
    """The server's user-SQL capacity is full: answered at once (503), never queued."""

    status = 503


class Summaries:
    """Per-filter summaries (total, facets, page plan), each computed once per catalog version
    on a background thread and kept for the most recent filters. A failed one is not kept: the
    next request tries again.

    Nobody waits on work nobody wants: a summary whose page stopped asking for it (the page's
    script asks every fraction of a second while it shows "counting") for `abandon_after` s is
    skipped when its turn comes, and at most `max_pending` wait for a thread: the oldest waiting
    one is cancelled to make room, so thirty abandoned filters cannot hold every user's filter
    behind them."""

    def __init__(self, compute, max_entries: int = 64, threads: int = 2, abandon_after: float = 5.0,
                 max_pending: int = 4):
        from collections import OrderedDict
        from concurrent.futures import ThreadPoolExecutor

        self._compute = compute
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="de-serve-summary")
        self._lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()  # Filter -> (catalog version, Future)
        self._asked: dict = {}  # Filter -> when a request last asked for it (monotonic)
        self._waiters: dict = {}  # Filter -> requests blocked in result() on it now
        self.max_entries, self.abandon_after, self.max_pending = max_entries, abandon_after, max_pending
        self.computed = 0  # summaries started (tests read it)
        self.abandoned = 0  # skipped because no request asked for them any more (tests read it)

    def _run(self, f):
        with self._lock:
            idle = time.monotonic() - self._asked.get(f, 0.0)
            waited_on = self._waiters.get(f, 0) > 0
        if idle > self.abandon_after and not waited_on:
            with self._lock:
                self.abandoned += 1
            raise Busy("nobody is waiting for this summary any more")
        return self._compute(f)

    def get(self, f: Filter, version):
        with self._lock:
            self._asked[f] = time.monotonic()
            hit = self._entries.get(f)
            if hit and hit[0] == version and not (hit[1].done() and hit[1].exception() is not None):
                self._entries.move_to_end(f)
                return hit[1]
            waiting = [(k, v[1]) for k, v in self._entries.items() if not v[1].done() and not v[1].running()]
            while len(waiting) >= self.max_pending:
                k, fut = waiting.pop(0)  # the oldest request that has not started: cancelled, not queued
                if fut.cancel():
                    self._entries.pop(k, None)
            fut = self._pool.submit(self._run, f)
            self.computed += 1
            self._entries[f] = (version, fut)
            self._entries.move_to_end(f)
            while len(self._entries) > self.max_entries:
                old, _ = self._entries.popitem(last=False)
                self._asked.pop(old, None)
            return fut

    def peek(self, f: Filter, version) -> dict | None:
        """The summary if it is already computed for this version (nothing is started)."""
        with self._lock:
            hit = self._entries.get(f)
        if hit and hit[0] == version and hit[1].done() and not hit[1].cancelled() and hit[1].exception() is None:
            return hit[1].result()
        return None

    def result(self, f: Filter, version, wait: float | None) -> dict | None:
        """The summary, waiting up to `wait` s (None: until done); None if it is not ready."""
        from concurrent.futures import CancelledError
        from concurrent.futures import TimeoutError as FutureTimeout

        fut = self.get(f, version)
        with self._lock:
            self._waiters[f] = self._waiters.get(f, 0) + 1
        try:
            return fut.result(timeout=wait)
        except (FutureTimeout, CancelledError):
            return None
        finally:
            with self._lock:
                self._waiters[f] -= 1
                if not self._waiters[f]:
                    del self._waiters[f]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
