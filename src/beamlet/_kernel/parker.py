"""Thread parking and counters that stay correct without the GIL."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable


class Parker:
    """A binary semaphore: ``park`` blocks until ``unpark`` (or the timeout).

    An ``unpark`` that comes first makes the next ``park`` return at once; any
    number of ``unpark`` calls before a ``park`` count as one.
    """

    __slots__ = ("_lock", "_mutex", "_pending")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._mutex = threading.Lock()
        self._pending = False

    def park(self, timeout: float = -1) -> None:
        got = self._lock.acquire(True, timeout)
        with self._mutex:
            if not got and self._pending:
                # The unpark raced with our timeout: consume it (the lock is free now).
                self._lock.acquire()
            self._pending = False

    def unpark(self) -> None:
        with self._mutex:
            if not self._pending:
                self._pending = True
                self._lock.release()


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


#: Whether this interpreter has a GIL (False on free-threaded builds).
GIL: bool = _gil_enabled()


def counter(start: int = 1) -> Callable[[], int]:
    """A function returning start, start+1, ... safely from any thread.

    With the GIL, ``itertools.count.__next__`` is atomic and fastest; on a
    free-threaded build it is not guaranteed to be, so a lock guards a plain int.
    """
    if _gil_enabled():
        return itertools.count(start).__next__
    lock = threading.Lock()
    state = [start]

    def next_value() -> int:
        with lock:
            n = state[0]
            state[0] = n + 1
        return n

    return next_value
