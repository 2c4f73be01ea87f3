"""Timers: one thread, one heap of timers that are their own deadlines.

Every ``receive`` with a timeout, every ``sleep`` and every ``send_after`` adds a
:class:`Timer` to a heap ordered by deadline (``time.monotonic``). A timer *is*
its deadline (a ``float`` subclass with three slots, 64 bytes), so the heap
compares floats in C and needs no (deadline, sequence, timer) tuple per entry.
A single thread sleeps until the earliest deadline and fires what is due; it is
woken early only when a new timer becomes the earliest. A receive's timer is
kept by its process for its next receive (traps.receive, Runtime.wake_timeout),
so a steady stream of ``call``s arms one timer per timeout period, not one
per call.

Cancelling marks the timer and drops what it holds (its callback and argument:
for ``send_after``, the message) at once; the 64-byte shell leaves the heap
when its deadline comes or when the heap is rebuilt, which happens as soon as
more than half of it (and over 1,024 entries) are cancelled shells. With no
timers, the thread blocks: zero CPU when idle.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from beamlet._kernel.parker import Parker

_monotonic = time.monotonic
_heappush = heapq.heappush

PENDING = 0
FIRED = 1
CANCELLED = 2


class Timer(float):
    """A timer: its value is its deadline (``time.monotonic()`` seconds)."""

    __slots__ = ("arg", "callback", "state")

    arg: Any
    callback: Callable[[Any], None] | None
    state: int

    @property
    def deadline(self) -> float:
        return float(self)

    @property
    def fired(self) -> bool:
        return self.state == FIRED


class TimerService:
    def __init__(self, on_error: Callable[[BaseException], None]) -> None:
        self._lock = threading.Lock()
        self._heap: list[Timer] = []
        self._cancelled = 0
        self._wake_at = float("inf")
        self._parker = Parker()
        self._running = False
        self._thread: threading.Thread | None = None
        self._on_error = on_error

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="beamlet-timers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        self._parker.unpark()
        if self._thread is not None:
            self._thread.join(5.0)

    def add(self, seconds: float, callback: Callable[[Any], None], arg: Any) -> Timer:
        return self.add_at(_monotonic() + seconds, callback, arg)

    def add_at(self, deadline: float, callback: Callable[[Any], None], arg: Any) -> Timer:
        """Arm a timer firing at ``deadline`` (``time.monotonic()`` seconds)."""
        t = Timer(deadline)
        t.callback = callback
        t.arg = arg
        t.state = PENDING
        # add_timer, inlined: every receive with a timeout (every call) comes here.
        with self._lock:
            _heappush(self._heap, t)
            wake = t < self._wake_at
            if wake:
                self._wake_at = float(t)
        if wake:
            self._parker.unpark()
        return t

    def add_timer(self, t: Timer) -> None:
        """Arm a timer built by the caller (a subclass with more slots)."""
        wake = False
        with self._lock:
            heapq.heappush(self._heap, t)
            if t < self._wake_at:
                self._wake_at = float(t)
                wake = True
        if wake:
            self._parker.unpark()

    def cancel(self, t: Timer) -> float | None:
        """Cancel ``t``; the seconds it had left, or None if it already fired."""
        with self._lock:
            if t.state != PENDING:
                return None
            t.state = CANCELLED
            t.callback = t.arg = None  # what it holds goes now, not at its deadline
            n = self._cancelled = self._cancelled + 1
            if n > 1024 and n * 2 > len(self._heap):
                self._compact()
        return max(0.0, t - _monotonic())

    def discard(self, t: Timer) -> None:
        """:meth:`cancel` without the time left (a receive's or sleep's timer)."""
        with self._lock:
            if t.state != PENDING:
                return
            t.state = CANCELLED
            t.callback = t.arg = None
            n = self._cancelled = self._cancelled + 1
            if n > 1024 and n * 2 > len(self._heap):
                self._compact()

    def _compact(self) -> None:
        """Drop the cancelled shells (more than half of the heap). Holds the lock."""
        self._heap = [e for e in self._heap if e.state == PENDING]
        heapq.heapify(self._heap)
        self._cancelled = 0

    def pending(self, idle: Callable[[Timer], bool] | None = None) -> int:
        """Armed timers; with ``idle``, not counting those for which it is true
        (a scan of the heap)."""
        with self._lock:
            if idle is None:
                return len(self._heap) - self._cancelled
            heap = list(self._heap)
        return sum(1 for t in heap if t.state == PENDING and not idle(t))

    def _loop(self) -> None:
        while self._running:
            due: list[Timer] = []
            with self._lock:
                heap = self._heap
                now = time.monotonic()
                while heap and heap[0] <= now:
                    t = heapq.heappop(heap)
                    if t.state == PENDING:
                        t.state = FIRED
                        due.append(t)
                    else:
                        self._cancelled -= 1
                self._wake_at = float(heap[0]) if heap else float("inf")
                wait = self._wake_at - now
            t_fired = bool(due)
            for t in due:
                callback = t.callback
                try:
                    if callback is not None:
                        callback(t)
                except BaseException as e:  # a timer must never kill the timer thread
                    self._on_error(e)
            heap = due = []  # hold no timer while parked (a rebuilt heap's old list)
            if t_fired:
                continue
            self._parker.park(wait if wait != float("inf") else -1)
