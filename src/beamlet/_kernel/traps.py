"""Traps: the only code that yields to a scheduler.

A process suspends only here. Each trap is a generator-based coroutine
(``types.coroutine``) that yields one of the trap codes of
:mod:`beamlet._kernel.process` to the scheduler loop (scheduler.py):

* ``WAIT``: park until a signal arrives or the wait's timer fires;
* ``YIELD``: go to the back of the run queue (``sleep(0)``);
* ``DIE``: the process must die now (its ``doom`` is set): the scheduler
  closes the coroutine, so ``finally`` blocks run.

Every trap, after it is resumed, does the same step: if signals are pending,
drain them (:func:`settle`); if one of them dooms the process, yield ``DIE``.
"""

from __future__ import annotations

import collections
import time
import types
from collections.abc import Callable, Generator
from itertools import islice
from typing import TYPE_CHECKING, Any

from beamlet._kernel.context import current_scheduler
from beamlet._kernel.kill import CLEARED, Cleared, clear_async_exc, consume_cleared
from beamlet._kernel.matching import matches, mentions
from beamlet._kernel.parker import GIL
from beamlet._kernel.pool import DONE
from beamlet._kernel.process import DIE, NOTHING, WAIT, YIELD, Down, Process, ProcessExit
from beamlet._kernel.signals import AliasMsg, WakeSig, drain
from beamlet._kernel.timers import FIRED, PENDING

if TYPE_CHECKING:
    from beamlet._kernel.scheduler import Scheduler

_WAIT = WAIT
_YIELD = YIELD
_DIE = DIE
_monotonic = time.monotonic


#: A receive past the fast paths counts a reduction; every RECEIVE_BUDGET-th
#: one yields first (a power of two).
RECEIVE_BUDGET = 256
_BUDGET_MASK = RECEIVE_BUDGET - 1


def settle(proc: Process) -> bool:
    """The step after every resume, once signals are pending (the caller checks
    ``proc.inbox or proc.handoff is not NOTHING``, cheaply, first): apply them
    (signals.drain). True if one of them dooms the process (the caller then
    yields ``DIE``). Masked: a kill must not cut the rules in half (kill.py).

    The scheduler is looked up here, not passed from before a wait: a process
    may resume on another scheduler's thread than the one it waited on (work
    stealing), and masking or clearing a kill on that one would act on a
    thread that runs somebody else."""
    sched: Scheduler = current_scheduler()  # type: ignore[assignment]  # (in a process)
    sched.masked_depth += 1
    try:
        if sched.rt.async_kills and (sched.kill_pending or not GIL):
            with sched.kill_lock:
                try:  # (kill.CLEARED: inline, a C call first)
                    clear_async_exc(sched.ident, CLEARED)
                    consume_cleared()
                except Cleared:
                    pass
        drain(sched.rt, proc)
    finally:
        sched.masked_depth -= 1
    return proc.doom is not None


def cannot_wait(name: str, sched: Any) -> RuntimeError:
    if sched is not None and sched.closing and sched.current is not None:
        proc = sched.current
        return RuntimeError(
            f"{name}() called while process {proc.pid!r} is being killed ({proc.doom!r}): "
            "the finally blocks of a killed process run, but it cannot wait any more"
        )
    return RuntimeError(f"{name}() called outside a beamlet process")


def take(proc: Process, q: collections.deque[Any], i: int) -> Any:
    """Remove and return the ``i``-th queued message, keeping the receive
    marker's position right."""
    if i == 0:
        m = q.popleft()
    else:
        m = q[i]
        del q[i]
    if proc.mark_ref is not None and i < proc.mark_pos:
        proc.mark_pos -= 1
    if not q:
        proc.queue = None
    return m


def flush_down(proc: Process, ref: Any) -> None:
    """Remove the ``Down`` of monitor ``ref`` if one is queued (demonitor's flush)."""
    q = proc.queue
    if q is not None:
        for i, m in enumerate(q):
            if type(m) is Down and m.ref == ref:
                take(proc, q, i)
                break


def arm_timer(rt: Any, proc: Process, deadline: float) -> None:
    """Make sure ``proc``'s timer goes off by ``deadline``, the deadline of
    the wait it starts (``proc.deadline``). A process's timer outlives its
    receive: one that is still armed and goes off no later is kept (a call
    every few us arms one timer per timeout period, not one per call); one
    that goes off earlier is armed again for the deadline, by the receive or
    by Runtime.wake_timeout."""
    timer = proc.timer
    if timer is None or timer.state != PENDING or timer > deadline:
        if timer is not None and timer.state == PENDING:
            rt.timers.discard(timer)
        proc.timer = rt.timers.add_at(deadline, rt.wake_timeout_callback, proc)


def _matches_any(patterns: tuple[Any, ...], m: Any) -> bool:
    for p in patterns:
        if matches(p, m):
            return True
    return False


def _find(q: collections.deque[Any], start: int, patterns: tuple[Any, ...]) -> int:
    """Index of the first message at or after ``start`` matching any pattern, or -1."""
    n = len(q)
    if start >= n:
        return -1
    if start == 0:
        it: Any = q
    elif start * 2 > n:
        # Near the tail, indexing from the right is cheap.
        for i in range(start, n):
            m = q[i]
            for p in patterns:
                if matches(p, m):
                    return i
        return -1
    else:
        it = islice(q, start, None)
    i = start
    if len(patterns) == 1:
        p0 = patterns[0]
        for m in it:
            if matches(p0, m):
                return i
            i += 1
        return -1
    for m in it:
        for p in patterns:
            if matches(p, m):
                return i
        i += 1
    return -1


@types.coroutine
def receive(*patterns: Any, timeout: float | None = None) -> Generator[int, None, Any]:
    """Wait for and remove the oldest message matching any of ``patterns``.

    With no patterns, the oldest message. Messages that do not match stay in
    the mailbox in order. ``timeout`` (seconds) raises ``TimeoutError`` when
    nothing matched in time; ``timeout=0`` only looks at what is there.
    A receive whose every pattern mentions the Ref most recently made by this
    process (``make_ref()``, ``monitor()``) only scans messages that arrived
    after that Ref was made (Erlang's receive marker).
    """
    sched = current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        raise cannot_wait("receive", sched)
    proc: Process = sched.current
    q = proc.queue
    if not patterns and q and not proc.inbox and proc.handoff is NOTHING:
        # Fast path: take the oldest queued message (no signal is pending).
        m = q.popleft()
        if proc.mark_ref is not None and proc.mark_pos:
            proc.mark_pos -= 1
        if not q:
            proc.queue = None
        return m
    if not patterns and timeout is None and q is None:
        # Fast path: nothing queued; wait for the message a sender hands over.
        while True:
            h = proc.handoff
            if h is not NOTHING:
                if type(h) is not AliasMsg and not proc.inbox:
                    proc.handoff = NOTHING
                    return h
                break
            if proc.inbox or proc.queue is not None:
                break  # (the scheduler drains an inbox before resuming: Scheduler.doomed)
            yield _WAIT
    # Past the fast paths: patterns, a timeout, or messages that came while
    # it ran. A process that keeps finding such messages never waits; as the
    # BEAM preempts one that has spent its reductions, it goes to the back of
    # the run queue now and then, so that what is queued behind it runs.
    # (Not on the fast paths, which a process reaches after waiting, or
    # draining what was queued before it ran: a fan-in receiver paid 6 %.)
    r = proc.reductions + 1
    proc.reductions = r
    if not r & _BUDGET_MASK:
        yield _YIELD
    rt = sched.rt
    pos = 0
    mark = proc.mark_ref
    if mark is not None and patterns:
        if q is None and not proc.inbox:
            # Nothing queued nor pending: the marker stands at 0, where the
            # scan starts anyway (a call's receive, its reply yet to come), so
            # the ``mentions`` walk is skipped; the marker stays for later.
            mark = None
        else:
            for p in patterns:
                if not mentions(p, mark):
                    mark = None
                    break
            else:
                pos = proc.mark_pos
    deadline: float | None = None
    try:
        while True:
            h = proc.handoff
            if h is not NOTHING and (proc.queue is None or pos >= len(proc.queue)):
                # No queued message is a candidate (none queued, or all older
                # than the receive marker or already tested): the handed-over
                # message is the oldest candidate. Test it where it is, without
                # queueing it (the reply of a call; sent to an alias: let in only
                # while the alias is active).
                m = h
                if type(h) is AliasMsg:
                    m = h.msg if proc.aliases and h.ref in proc.aliases else NOTHING
                if m is not NOTHING and (not patterns or _matches_any(patterns, m)):
                    proc.handoff = NOTHING
                    if mark is not None:
                        proc.mark_ref = None
                    return m
            if (proc.inbox or proc.handoff is not NOTHING) and settle(proc):
                yield _DIE
            q = proc.queue
            if q is not None:
                if not patterns:
                    if q:
                        return take(proc, q, 0)
                else:
                    i = _find(q, pos, patterns)
                    if i >= 0:
                        if mark is not None:
                            proc.mark_ref = None
                        return take(proc, q, i)
                    pos = len(q)
            if timeout is not None:
                # The process's timer outlives the receive (arm_timer). If it
                # went off before this deadline, it is armed again for it.
                if deadline is None:
                    if timeout <= 0:
                        raise TimeoutError("receive timed out")
                    deadline = proc.deadline = _monotonic() + timeout
                    arm_timer(rt, proc, deadline)
                else:
                    timer = proc.timer
                    if timer is None or timer.state != PENDING:
                        if _monotonic() >= deadline:
                            raise TimeoutError(f"receive timed out after {timeout} s")
                        proc.timer = rt.timers.add_at(deadline, rt.wake_timeout_callback, proc)
            yield _WAIT
    finally:
        if deadline is not None:
            proc.deadline = None  # its timer stays armed, for the next receive


@types.coroutine
def sleep(seconds: float) -> Generator[int, None, None]:
    """Suspend the calling process for ``seconds``; ``sleep(0)`` just yields."""
    sched = current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        raise cannot_wait("sleep", sched)
    proc: Process = sched.current
    if seconds <= 0:
        yield _YIELD
        if (proc.inbox or proc.handoff is not NOTHING) and settle(proc):
            yield _DIE
        return
    rt = sched.rt
    old = proc.timer
    if old is not None and old.state == PENDING:
        rt.timers.discard(old)  # one a receive left armed
    timer = proc.timer = rt.timers.add(seconds, rt.wake_timeout_callback, proc)
    proc.deadline = float(timer)
    try:
        while timer.state != FIRED:
            yield _WAIT
            if (proc.inbox or proc.handoff is not NOTHING) and settle(proc):
                yield _DIE
    finally:
        proc.timer = proc.deadline = None
        if timer.state == PENDING:
            rt.timers.discard(timer)


@types.coroutine
def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Generator[int, None, Any]:
    """Run blocking ``fn(*args, **kwargs)`` on a thread pool; wait for its result.

    The BEAM's dirty schedulers: the process waits like in ``receive`` (without
    holding a scheduler) while the pool thread works, and gets the return value,
    or the exception ``fn`` raised. If the process is killed while waiting, work
    that has not started is cancelled; work already running finishes on its
    thread and its result is dropped.

    The pool has ``run(blocking_threads=)`` threads (default 64); past that,
    work waits for a thread (``statistics().blocking_queued``). Its threads are
    daemons: when ``run`` returns, work still running is abandoned and does not
    keep the program alive.
    """
    sched = current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        raise cannot_wait("blocking", sched)
    proc: Process = sched.current
    rt = sched.rt
    pid = proc.pid
    wake = WakeSig()
    job = rt.pool.submit(fn, args, kwargs, lambda _job: rt.deliver(pid, wake))
    try:
        while job.state < DONE:
            yield _WAIT
            if (proc.inbox or proc.handoff is not NOTHING) and settle(proc):
                yield _DIE
        return job.outcome()
    finally:
        if job.state < DONE:
            rt.pool.cancel(job)


class Ready:
    """What a process waits for in :func:`wait_ready`: the waker sets
    ``ready`` and then delivers :data:`WAKE` to ``pid`` (beamlet.net's
    readiness handlers)."""

    __slots__ = ("pid", "ready")

    def __init__(self, pid: Any) -> None:
        self.pid = pid
        self.ready = False


#: The signal that wakes a process from :func:`wait_ready` (one for all).
WAKE = WakeSig()


@types.coroutine
def wait_ready(cell: Ready, timeout: float | None = None) -> Generator[int, None, bool]:
    """Wait (without holding a scheduler) until ``cell.ready`` or ``timeout``
    seconds pass. True if ready. Exit signals act as in ``receive``."""
    sched = current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        raise cannot_wait("wait", sched)
    proc: Process = sched.current
    if cell.ready:
        return True
    rt = sched.rt
    timer = None
    if timeout is not None:
        if timeout <= 0:
            return False
        old = proc.timer
        if old is not None and old.state == PENDING:
            rt.timers.discard(old)  # one a receive left armed
        timer = proc.timer = rt.timers.add(timeout, rt.wake_timeout_callback, proc)
        proc.deadline = float(timer)
    try:
        while not cell.ready:
            if timer is not None and timer.state == FIRED:
                return False
            yield _WAIT
            if (proc.inbox or proc.handoff is not NOTHING) and settle(proc):
                yield _DIE
        return True
    finally:
        if timer is not None:
            proc.timer = proc.deadline = None
            if timer.state == PENDING:
                rt.timers.discard(timer)


def take_messages(predicate: Callable[[Any], bool]) -> list[Any]:
    """Remove and return, in order, the calling process's messages for which
    ``predicate`` is true (beamlet.net's ``controlling_process`` moves a
    socket's messages to its new owner). Messages still in flight to it are
    moved into its queue first when no signal is pending with them; one that
    dooms the process ends it here, as at its next wait."""
    sched = current_scheduler()
    if sched is None or sched.current is None:
        raise cannot_wait("take_messages", sched)
    proc: Process = sched.current
    if (proc.inbox or proc.handoff is not NOTHING) and proc.signals == 0:
        if settle(proc):
            raise ProcessExit(proc.doom)
    q = proc.queue
    if not q:
        return []
    taken = []
    i = 0
    while i < len(q):
        if predicate(q[i]):
            taken.append(take(proc, q, i))
            if proc.queue is None:
                break
        else:
            i += 1
    return taken
