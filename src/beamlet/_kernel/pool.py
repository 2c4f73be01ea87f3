"""The thread pool behind ``blocking()`` (the BEAM's dirty I/O schedulers).

A process that calls ``await blocking(fn, ...)`` waits like in ``receive``
(without holding a scheduler) while a pool thread runs ``fn``; the thread
sends the process a wake-up signal when it is done.

* Threads start on demand, up to ``max_threads`` (``run(blocking_threads=)``,
  default 64), and end after ``IDLE_TIMEOUT`` seconds without work. Past the
  limit, work waits in a FIFO queue (logged once per runtime, and visible in
  ``statistics()``): 70 readers blocked in ``sock.recv`` hold 64 threads and
  make every other ``blocking()`` call wait.
* Threads are daemons: when ``run()`` returns the program can exit. Work not
  started yet is cancelled; work still running is abandoned (its thread ends
  with the interpreter; its result is dropped). So a process left reading a
  socket through ``blocking()`` does not keep the program alive after ``run()``
  returns or after Ctrl-C (concurrent.futures' threads would: they are joined
  at exit).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from beamlet._kernel.parker import Parker

logger = logging.getLogger("beamlet")

IDLE_TIMEOUT = 30.0
DEFAULT_THREADS = 64

PENDING = 0
RUNNING = 1
DONE = 2
CANCELLED = 3


class Job:
    """One piece of blocking work."""

    __slots__ = ("args", "error", "fn", "kwargs", "on_done", "result", "state")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Callable[[Job], None],
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.on_done = on_done
        self.state = PENDING
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        """The value ``fn`` returned, or raise what it raised."""
        if self.error is not None:
            error, self.error = self.error, None  # no reference cycle via the traceback
            raise error
        return self.result


class BlockingPool:
    def __init__(self, max_threads: int = DEFAULT_THREADS) -> None:
        if max_threads < 1:
            raise ValueError("blocking_threads must be at least 1")
        self.max_threads = max_threads
        self.lock = threading.Lock()
        self.queue: collections.deque[Job] = collections.deque()
        self.idle: list[Parker] = []  # parked workers, each waiting on its own parker
        self.threads = 0
        self.busy = 0
        self.stopped = False
        self.warned = False
        self._names = 0

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Callable[[Job], None],
    ) -> Job:
        job = Job(fn, args, kwargs, on_done)
        start = False
        warn = False
        with self.lock:
            if self.stopped:
                raise RuntimeError("the beamlet runtime is shutting down")
            self.queue.append(job)
            if self.idle:
                self.idle.pop().unpark()
            elif self.threads < self.max_threads:
                self.threads += 1
                self._names += 1
                start = True
            elif not self.warned:
                self.warned = warn = True
        if start:
            t = threading.Thread(
                target=self._work, name=f"beamlet-blocking-{self._names}", daemon=True
            )
            try:
                t.start()
            except BaseException:
                with self.lock:
                    self.threads -= 1
                    if job in self.queue:
                        self.queue.remove(job)
                raise
        if warn:
            logger.warning(
                "beamlet: all %d blocking() threads are busy; further blocking() work waits "
                "for one (raise it with run(..., blocking_threads=N))",
                self.max_threads,
            )
        return job

    def cancel(self, job: Job) -> bool:
        """Drop ``job`` if it has not started; True if it was dropped."""
        with self.lock:
            if job.state != PENDING:
                return False
            job.state = CANCELLED
            try:
                self.queue.remove(job)
            except ValueError:
                pass
            return True

    def _work(self) -> None:
        parker = Parker()
        while True:
            with self.lock:
                job = self.queue.popleft() if self.queue else None
                if job is None:
                    if self.stopped:
                        self.threads -= 1
                        return
                    self.idle.append(parker)
                else:
                    job.state = RUNNING
                    self.busy += 1
            if job is None:
                parker.park(IDLE_TIMEOUT)
                with self.lock:
                    if parker in self.idle:  # nobody handed us work: time out
                        self.idle.remove(parker)
                        self.threads -= 1
                        return
                continue
            try:
                job.result = job.fn(*job.args, **job.kwargs)
            except BaseException as e:
                job.error = e
            job.fn = job.args = job.kwargs = None  # type: ignore[assignment]
            with self.lock:
                self.busy -= 1
                job.state = DONE
            try:
                job.on_done(job)
            except BaseException:
                logger.exception("beamlet: a blocking() completion failed")

    def statistics(self) -> tuple[int, int, int]:
        """(threads, busy, queued)."""
        with self.lock:
            return self.threads, self.busy, len(self.queue)

    def shutdown(self) -> None:
        """Cancel work not started; let idle threads end. Running work is abandoned."""
        with self.lock:
            self.stopped = True
            for job in self.queue:
                job.state = CANCELLED
            self.queue.clear()
            idle, self.idle = self.idle, []
        for p in idle:
            p.unpark()
