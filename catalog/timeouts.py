"""The one timeout helper: stop work that runs past its time by calling what interrupts it.

DuckDB checks `interrupt()` between vectors, and a blocked socket read returns when the socket is
shut down; both are stopped from a timer thread. `query_deadline` adds the catalog's wording."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def after(timeout: float | None, interrupt: Callable[[], object]) -> Iterator[None]:
    """Call `interrupt()` once, from a daemon timer, if the block is still running after `timeout`
    seconds (None or 0: never). The timer is cancelled when the block ends, however it ends."""
    timer = threading.Timer(timeout, interrupt) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


@contextmanager
def query_deadline(con, timeout: float | None, what: str = "the query", hint: str = "simplify it") -> Iterator[None]:
    """Run DuckDB statements on `con` for at most `timeout` seconds; an interrupted or failed
    statement becomes a `QueryError` that says which (`what` ran longer than ..., `hint`)."""
    import duckdb

    from .db import QueryError

    with after(timeout, con.interrupt):
        try:
            yield
        except duckdb.InterruptException as e:
            raise QueryError(f"{what} ran longer than {timeout:g} s and was stopped; {hint}") from e
        except duckdb.Error as e:
            raise QueryError(f"{what.replace('the ', '', 1)} failed: {str(e).splitlines()[0][:300]}") from e
