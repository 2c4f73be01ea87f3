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

    __slots__ = ("_lock", "_mutex", "_pending", "_waker")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._mutex = threading.Lock()
        self._pending = False
        self._waker: Callable[[], None] | None = None

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
            waker = self._waker
        if waker is not None:
            waker()

    def wait_in(self, wait: Callable[[], None], waker: Callable[[], None]) -> bool:
        """Park in ``wait()`` (an ``epoll_wait``, say) instead of on the lock:
        an ``unpark`` meanwhile calls ``waker()``, which must make ``wait``
        return. Returns True if it was unparked (the unpark is consumed), False
        if ``wait`` returned on its own.

        The waker is published and ``pending`` read under one mutex, as
        ``unpark`` sets the one and reads the other: an unpark either comes
        first (seen here: no wait) or sees the waker (and calls it).
        """
        with self._mutex:
            if not self._pending:
                self._waker = waker
        if self._waker is waker:
            try:
                wait()
            finally:
                with self._mutex:
                    self._waker = None
        with self._mutex:
            if self._pending:
                self._lock.acquire()  # released by that unpark: consume it
                self._pending = False
                return True
        return False


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
