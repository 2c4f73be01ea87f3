"""Timers: one thread, one heap, lazy cancellation.

Every ``receive`` with a timeout, every ``sleep`` and every ``send_after`` adds a
:class:`Timer` to a heap ordered by deadline (``time.monotonic``). A single
thread sleeps until the earliest deadline and fires what is due; it is woken
early only when a new timer becomes the earliest, so a steady stream of
``call``s (each arming a 5 s timeout and cancelling it) does not wake it.
Cancelling only marks the timer; the heap is rebuilt when more than half of it
is cancelled timers. With no timers, the thread blocks: zero CPU when idle.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from beamlet._kernel.parker import Parker, counter

PENDING = 0
FIRED = 1
CANCELLED = 2


class Timer:
    __slots__ = ("arg", "callback", "deadline", "state")

    def __init__(self, deadline: float, callback: Callable[[Timer], None], arg: Any) -> None:
        self.deadline = deadline
        self.callback = callback
        self.arg = arg
        self.state = PENDING

    @property
    def fired(self) -> bool:
        return self.state == FIRED


class TimerService:
    def __init__(self, on_error: Callable[[BaseException], None]) -> None:
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = counter()
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

    def add(self, seconds: float, callback: Callable[[Timer], None], arg: Any) -> Timer:
        t = Timer(time.monotonic() + seconds, callback, arg)
        wake = False
        with self._lock:
            heapq.heappush(self._heap, (t.deadline, self._seq(), t))
            if t.deadline < self._wake_at:
                self._wake_at = t.deadline
                wake = True
        if wake:
            self._parker.unpark()
        return t

    def cancel(self, t: Timer) -> float | None:
        """Cancel ``t``; the seconds it had left, or None if it already fired."""
        with self._lock:
            if t.state != PENDING:
                return None
            t.state = CANCELLED
            self._cancelled += 1
            if self._cancelled > 1024 and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2].state == PENDING]
                heapq.heapify(self._heap)
                self._cancelled = 0
        return max(0.0, t.deadline - time.monotonic())

    def pending(self) -> int:
        with self._lock:
            return len(self._heap) - self._cancelled

    def _loop(self) -> None:
        heap = self._heap
        while self._running:
            due: list[Timer] = []
            with self._lock:
                heap = self._heap
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    t = heapq.heappop(heap)[2]
                    if t.state == PENDING:
                        t.state = FIRED
                        due.append(t)
                    else:
                        self._cancelled -= 1
                self._wake_at = heap[0][0] if heap else float("inf")
                wait = self._wake_at - now
            for t in due:
                try:
                    t.callback(t)
                except BaseException as e:  # a timer must never kill the timer thread
                    self._on_error(e)
            if due:
                continue
            self._parker.park(wait if wait != float("inf") else -1)
