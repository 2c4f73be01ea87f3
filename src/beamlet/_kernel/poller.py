"""I/O readiness, polled by the schedulers themselves (the runtime's ``rt.poller``).

Theory of operation
-------------------
A socket layer (beamlet.net) registers a file descriptor with a handler and
*arms* it for the events it wants next: every registration is one-shot
(``EPOLLONESHOT``), so an event is reported once, to one thread, and nothing
more is reported for that descriptor until its owner asks again (trio's
reasons: no thundering herd, no events for data nobody asked for, and flow
control falls out -- a socket in ``active=once`` mode is simply not re-armed).

Nobody else owns the epoll set. The schedulers poll it:

* an idle scheduler, when descriptors are registered, waits in ``epoll_wait``
  instead of on its :class:`~beamlet._kernel.parker.Parker` (one at a time:
  the *waiter*; the others park as before). Its parker's ``unpark`` writes to
  an eventfd (a pipe where there is none) in the same set, so a wake-up from
  another thread still reaches it (:meth:`Parker.wait_in`);
* a busy scheduler polls with timeout 0 once every ``GLOBAL_EVERY`` processes it
  runs (scheduler.py), if nobody is waiting in the set already;
* when nobody has for ``POLL_EVERY`` seconds (every scheduler busy with long
  turns), sysmon sets ``due`` and the next scheduler to pick a process polls
  first. (Not sysmon itself: its handlers' syscalls would each hand the GIL to a
  scheduler and cost sysmon a switch interval to get it back -- a 5 ms convoy
  per event; measured: HTTP p99 160 ms instead of 19 ms.)

A handler runs on the polling thread between processes (never inside one): it
does non-blocking I/O and wakes or messages processes, and must not block. A
reported descriptor may have been closed and its number reused meanwhile (the
event was in flight): handlers are looked up at dispatch time and must treat
an event as a hint ("try the non-blocking call again"), never as a promise.

Cost: ``epoll_ctl`` per arm (~1 us), one ``epoll_wait(0)`` per 61 processes on
busy schedulers while descriptors are registered, none at all when none are.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("beamlet")

#: Event bits handlers are called with and arm with (epoll's values).
READ = 0x001
WRITE = 0x004
ERROR = 0x008 | 0x010  # EPOLLERR | EPOLLHUP: reported whatever was armed

#: sysmon has the next scheduler poll when no thread has for this long
#: (seconds). Measured (HTTP hello, h11, 64 connections, one saturated
#: scheduler): every 1 ms, p99 141 ms; every 5 ms, p99 12 ms and 11 % more
#: requests/s; never, p99 14-19 ms. Frequent small polls under saturation
#: made the tail worse (cause not pinned down: server-side time from
#: readiness to the process's receive stayed under 25 ms at p99).
POLL_EVERY = 0.005

#: Events taken per epoll_wait: more stay in the kernel for the next poll.
MAX_EVENTS = 256

Handler = Callable[[int], None]


class Poller:
    """The runtime's epoll set (or a ``selectors`` fallback)."""

    # Slots: the schedulers read ``due`` and ``count`` on every turn.
    __slots__ = (
        "_backend",
        "_busy",
        "_lock",
        "_role",
        "closed",
        "count",
        "due",
        "events",
        "handlers",
        "last_poll",
        "polls",
        "waiting",
    )

    def __init__(self) -> None:
        self.handlers: dict[int, Handler] = {}
        self.count = 0  # registered descriptors (0: schedulers park as before)
        self._lock = threading.Lock()  # guards handlers, count and creation
        self._busy = threading.Lock()  # held by the thread inside epoll_wait
        self._role = threading.Lock()  # held by the idle scheduler that waits
        self.waiting = False  # an idle scheduler is inside epoll_wait
        # Set by sysmon when nobody has polled for POLL_EVERY: the next
        # scheduler to pick a process polls first (a poll by sysmon itself
        # would run the handlers on its thread: under the GIL every syscall
        # in them hands the GIL back to a scheduler and costs sysmon a
        # switch interval to get it again, 5 ms a handler).
        self.due = False
        self.last_poll = 0.0  # time.monotonic() of the last poll that ended
        self.polls = 0
        self.events = 0
        self._backend: _Backend | None = None
        self.closed = False

    # ----------------------------------------------------------------- registry

    def _open(self) -> _Backend:
        backend = self._backend
        if backend is None:
            if self.closed:
                raise RuntimeError("the beamlet runtime is shutting down")
            backend = self._backend = _Epoll() if hasattr(select, "epoll") else _Select()
        return backend

    def register(self, fd: int, handler: Handler) -> None:
        """Watch ``fd`` (not armed yet): ``handler(events)`` runs on the
        polling thread when an armed event comes."""
        with self._lock:
            backend = self._open()
            if fd in self.handlers:
                raise ValueError(f"file descriptor {fd} is registered already")
            backend.register(fd)
            self.handlers[fd] = handler
            self.count += 1

    def arm(self, fd: int, events: int) -> None:
        """Report ``events`` (READ | WRITE) on ``fd`` once."""
        backend = self._backend
        if backend is not None:
            backend.arm(fd, events)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed)."""
        with self._lock:
            if self.handlers.pop(fd, None) is None:
                return
            self.count -= 1
            backend = self._backend
        if backend is not None:
            backend.unregister(fd)

    # ----------------------------------------------------------------- polling

    def poll(self) -> int:
        """Poll without waiting and run the handlers; 0 if another thread is
        polling (it reports what is ready). Returns the events handled."""
        backend = self._backend
        self.due = False
        if backend is None or not self._busy.acquire(False):
            return 0
        try:
            ready = backend.poll(0)
        finally:
            self._busy.release()
            self.last_poll = time.monotonic()
        self.polls += 1
        return self.dispatch(ready) if ready else 0

    def idle_wait(self, wait_in: Callable[[Callable[[], None], Callable[[], None]], bool]) -> Any:
        """An idle scheduler's park: if no other idle scheduler waits in the
        set, wait in it (``wait_in`` is the scheduler parker's
        :meth:`~beamlet._kernel.parker.Parker.wait_in`). Returns the events to
        dispatch (after the scheduler has left the idle list), or None if
        another scheduler is the waiter (park as usual)."""
        backend = self._backend
        if backend is None or not self._role.acquire(False):
            return None
        ready: list[tuple[int, int]] = []
        try:
            with self._busy:  # busy polls hold it for one epoll_wait(0) at most
                self.waiting = True
                try:
                    wait_in(lambda: ready.extend(backend.poll(-1)), backend.interrupt)
                finally:
                    self.waiting = False
                    self.last_poll = time.monotonic()
        finally:
            self._role.release()
        self.polls += 1
        return ready

    def dispatch(self, ready: list[tuple[int, int]]) -> int:
        handlers = self.handlers
        n = 0
        for fd, events in ready:
            handler = handlers.get(fd)
            if handler is None:
                continue  # the wake-up descriptor, or closed since
            n += 1
            try:
                handler(events)
            except Exception:
                logger.exception("beamlet: an I/O handler failed (fd %d)", fd)
        self.events += n
        return n

    def overdue(self, now: float) -> bool:
        """sysmon: descriptors are registered and nobody has looked at them
        for POLL_EVERY seconds (nor waits in the set now)."""
        return bool(self.count) and not self.waiting and now - self.last_poll > POLL_EVERY

    def close(self) -> None:
        with self._lock:
            self.closed = True
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()


class _Backend:
    def register(self, fd: int) -> None:
        raise NotImplementedError

    def arm(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def unregister(self, fd: int) -> None:
        raise NotImplementedError

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        raise NotImplementedError

    def interrupt(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _wakeup_fds() -> tuple[int, int]:
    """(read end, write end) of the descriptor that interrupts a wait."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


class _Epoll(_Backend):
    def __init__(self) -> None:
        self.ep = select.epoll()
        self.wake_r, self.wake_w = _wakeup_fds()
        self.ep.register(self.wake_r, select.EPOLLIN)

    def register(self, fd: int) -> None:
        self.ep.register(fd, select.EPOLLONESHOT)

    def arm(self, fd: int, events: int) -> None:
        try:
            self.ep.modify(fd, events | select.EPOLLONESHOT)
        except (OSError, ValueError):
            pass  # closed meanwhile: its closer unregisters it

    def unregister(self, fd: int) -> None:
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        try:
            ready = self.ep.poll(timeout, MAX_EVENTS)
        except (OSError, ValueError):
            return []  # closed at shutdown
        for fd, _ in ready:
            if fd == self.wake_r:
                _drain(fd)
                break
        return ready

    def interrupt(self) -> None:
        _poke(self.wake_w)

    def close(self) -> None:
        self.ep.close()
        os.close(self.wake_r)
        if self.wake_w != self.wake_r:
            os.close(self.wake_w)


class _Select(_Backend):
    """One-shot emulated with ``selectors`` (no epoll): an fd is in the set
    only while armed."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = _wakeup_fds()
        self.sel.register(self.wake_r, selectors.EVENT_READ)

    def register(self, fd: int) -> None:
        pass

    def arm(self, fd: int, events: int) -> None:
        mask = (selectors.EVENT_READ if events & READ else 0) | (
            selectors.EVENT_WRITE if events & WRITE else 0
        )
        with self.lock:
            try:
                self.sel.modify(fd, mask)
            except KeyError:
                self.sel.register(fd, mask)
            except (OSError, ValueError):
                pass
        self.interrupt()  # a select() under way does not see the change

    def unregister(self, fd: int) -> None:
        with self.lock:
            try:
                self.sel.unregister(fd)
            except (KeyError, OSError, ValueError):
                pass

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        try:
            ready = self.sel.select(None if timeout < 0 else timeout)
        except (OSError, ValueError):
            return []
        out = []
        for key, mask in ready:
            fd = key.fd
            if fd == self.wake_r:
                _drain(fd)
                continue
            self.unregister(fd)  # one-shot
            out.append(
                (
                    fd,
                    (READ if mask & selectors.EVENT_READ else 0)
                    | (WRITE if mask & selectors.EVENT_WRITE else 0),
                )
            )
        return out

    def interrupt(self) -> None:
        _poke(self.wake_w)

    def close(self) -> None:
        self.sel.close()
        os.close(self.wake_r)
        if self.wake_w != self.wake_r:
            os.close(self.wake_w)


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except (BlockingIOError, OSError):
        pass  # full (a wake-up is pending anyway) or closed at shutdown


def _drain(fd: int) -> None:
    try:
        os.read(fd, 4096)
    except (BlockingIOError, OSError):
        pass


__all__ = ["ERROR", "POLL_EVERY", "READ", "WRITE", "Poller"]
