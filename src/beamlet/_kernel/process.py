"""The process record, its states, the trap codes, and the messages the kernel delivers.

A process is an ``async def`` coroutine plus a :class:`Process` record. What
others can do to it arrives as signals in its ``inbox`` (signals.py); what it
waits in are traps (traps.py); a scheduler (scheduler.py) runs it.

The record uses ``__slots__`` and allocates its containers lazily: a blocked
process that has nothing queued holds no list, deque, set or dict.
"""

from __future__ import annotations

import threading
from typing import Any, Final, NamedTuple

from beamlet._kernel.parker import GIL
from beamlet.terms import Pid, Ref

# Process states. A sender may only move WAITING -> RUNNABLE (under the lock);
# the scheduler owns every other transition.
RUNNABLE: Final = 0
RUNNING: Final = 1
WAITING: Final = 2
EXITING: Final = 3
DEAD: Final = 4

STATUS_NAMES: Final = ("runnable", "running", "waiting", "exiting", "exiting")

# Traps: what a process yields to its scheduler.
WAIT: Final = 1  # block until a signal arrives or the wait timer fires
YIELD: Final = 2  # go to the back of the run queue
DIE: Final = 3  # the process must die now (reason in ``doom``)

_N_STRIPES: Final = 256
_STRIPES: Final = tuple(threading.Lock() for _ in range(_N_STRIPES))


if GIL:

    def stripe_lock(n: int) -> threading.Lock:
        """The lock guarding the inbox and state of the process numbered ``n``.

        Locks are striped: a per-process lock would cost ~100 bytes on CPython
        < 3.13, and the kernel never holds two process locks at once, so
        sharing is safe.
        """
        return _STRIPES[n % _N_STRIPES]

else:

    def stripe_lock(n: int) -> threading.Lock:
        """A lock of its own for each process on a free-threaded build: a lock
        is a one-byte mutex there, and a shared one is a reference count that
        every scheduler's thread updates (cross-core traffic on each spawn)."""
        return threading.Lock()


class _Nothing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTHING"


#: "No value" where None is a valid message.
NOTHING: Final = _Nothing()


class Process:
    """The kernel's record of one process."""

    __slots__ = (
        "aliases",
        "batch",
        "coro",
        "deadline",
        "doom",
        "handoff",
        "inbox",
        "initial_call",
        "links",
        "lock",
        "mark_pos",
        "mark_ref",
        "monitored_by",
        "monitors",
        "name",
        "pid",
        "ports",
        "queue",
        "reductions",
        "result",
        "runtime",
        "send_timers",
        "signals",
        "state",
        "timer",
        "trap_exit",
        "zombie",
    ) + (() if GIL else ("__weakref__",))  # (see Runtime.spawn)

    def __init__(self, pid: Pid, coro: Any) -> None:
        self.pid = pid
        self.coro = coro
        self.lock = stripe_lock(pid.id)
        self.state = RUNNABLE
        self.inbox: list[Any] | None = None
        self.signals = 0  # signals in the inbox (not messages): drain's shortcut
        self.handoff: Any = NOTHING  # the signal that woke the process (see signals.deliver)
        self.queue: Any = None  # collections.deque of messages, allocated lazily
        # What signals.drain last moved from the inbox to the queue; emptied once
        # moved (a count from another thread looks again while it is not).
        self.batch: list[Any] | None = None
        self.links: set[Pid] | None = None
        self.monitors: dict[Ref, Any] | None = None  # refs this process holds -> target
        # refs held on this process -> watcher (or (watcher, name) for a monitor by name)
        self.monitored_by: dict[Ref, Any] | None = None
        self.trap_exit = False
        self.name: str | None = None
        self.doom: Any = None  # exit reason decided while the process cannot be stopped yet
        # The timer that will look at this process: the current receive's or
        # sleep's, or one a receive left armed for the next (Runtime.wake_timeout).
        self.timer: Any = None
        self.deadline: float | None = None  # time.monotonic() at which the current wait ends
        # Refs of send_after timers aimed at this process (cancelled when it
        # exits): None, a short list, or a dict once there are many.
        self.send_timers: Any = None
        self.mark_ref: Ref | None = None
        self.mark_pos = 0
        self.reductions = 0
        self.runtime = 0.0
        self.initial_call: Any = None
        self.result: Any = None
        self.aliases: dict[Ref, bool] | None = None  # active alias -> goes with its monitor
        self.zombie = False  # declared dead while its code still ran (sysmon)
        # What it owns outside the runtime (beamlet.net's sockets): each has
        # ``owner_exited(pid, reason)``, called as it finishes (signals.finish).
        self.ports: list[Any] | None = None


class Exit(NamedTuple):
    """The message a process trapping exits receives for an exit signal."""

    pid: Pid | None
    reason: Any


class Down(NamedTuple):
    """The message a monitor delivers when its target dies."""

    ref: Ref
    pid: Any
    reason: Any


class ProcessExit(BaseException):
    """Raise ``ProcessExit(reason)`` to end the current process with ``reason``.

    Like ``SystemExit``, it is a ``BaseException`` so ``except Exception`` does not
    swallow it. Ending this way is not a crash: nothing is logged.
    """

    def __init__(self, reason: Any = "normal") -> None:
        super().__init__(reason)
        self.reason = reason


class BadArg(ValueError):
    """An argument the kernel cannot act on (Erlang's ``badarg``)."""


class _Any:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"

    def __reduce__(self) -> str:
        return "ANY"


#: In a receive template, matches any value.
ANY: Final = _Any()
