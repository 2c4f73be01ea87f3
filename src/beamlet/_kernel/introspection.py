"""Looking at processes without stopping them: process_info and its parts
(stacks, initial call, memory), statistics, and crash reports.

Everything here reads state other threads may be changing: containers are
copied with a retry (:func:`snapshot`), a running process's stack is read
from its thread's frame as it is at the moment of the call.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from types import CoroutineType, GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from beamlet._kernel.parker import GIL
from beamlet._kernel.process import DEAD, NOTHING, RUNNING, STATUS_NAMES, WAITING, Process
from beamlet._kernel.signals import SIGNALS
from beamlet._kernel.throttle import Throttle, TraceThrottle

if TYPE_CHECKING:
    from beamlet._kernel.runtime import Runtime

logger = logging.getLogger("beamlet")

T = TypeVar("T")

_BEAMLET_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


# ---------------------------------------------------------------------- crash reports


def log_crash(proc: Process, exc: BaseException) -> None:
    name = f" ({proc.name})" if proc.name is not None else ""
    logger.error(
        "process %r%s crashed: %s: %s",
        proc.pid,
        name,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, user_traceback(exc.__traceback__)),
    )


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from its first frame outside beamlet's own code: a crash report
    starts at the user's code (as Elixir's do), not at the scheduler loop's
    ``proc.coro.send(None)`` or a behaviour's loop. Frames of beamlet the user's
    code called stay. All of ``tb`` if every frame is beamlet's. The exception's
    own ``__traceback__`` is left as it is."""
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_BEAMLET_DIR):
        first = first.tb_next
    return tb if first is None else first


# ---------------------------------------------------------------------- stacks


def initial_call(fn: Any) -> tuple[str, str, int]:
    """(module, qualified name, number of positional parameters) of a process's function."""
    target = fn
    while hasattr(target, "func"):  # functools.partial
        target = target.func
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    code = getattr(target, "__code__", None)
    if code is None:
        code = getattr(type(target).__call__, "__code__", None)
    arity = code.co_argcount if code is not None else 0
    if inspect.ismethod(target) and arity:
        arity -= 1
    return (module, name, arity)


def awaited(obj: Any) -> Any:
    """What the coroutine or generator ``obj`` is suspended in (its ``await``
    or ``yield from``), else None: also while it executes.

    CPython finds it on the frame's value stack (``_PyGen_yf``), which is only
    valid while the frame is suspended: while it executes the stack top is not
    stored (3.11 keeps -1 there), and the instruction after the one it executes
    may lie past its code; ``cr_await`` of a coroutine another thread runs then
    takes garbage for an object (seen: observer.top segfaulting 2 runs in 40
    while it sized a runaway's coroutine). With the GIL the test and the read
    here are one step, two attribute loads with no eval-breaker check between
    them, so the owner cannot resume it in between; on a free-threaded build
    the callers read only a waiting process's, under its lock
    (:func:`look_at_coroutine`).
    """
    t = type(obj)
    if t is CoroutineType:
        return obj.cr_await if obj.cr_suspended else None
    if t is GeneratorType:
        return obj.gi_yieldfrom if obj.gi_suspended else None
    return None


def format_stack(coro: Any) -> list[traceback.FrameSummary]:
    """The stack of a suspended coroutine, outermost call first."""
    frames = []
    obj = coro
    while obj is not None:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            break
        frames.append(
            traceback.FrameSummary(
                frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, line=None
            )
        )
        obj = awaited(obj)
    return frames


def process_stack(rt: Runtime, proc: Process, state: int) -> list[traceback.FrameSummary]:
    """process_info's ``current_stacktrace`` of ``proc``, seen in ``state``:
    where it waits, or the frames its thread executes now (with the GIL; see
    :func:`look_at_coroutine` for a free-threaded build)."""
    if GIL and state == RUNNING:
        return running_stack(rt, proc)
    return look_at_coroutine(proc, format_stack, _code_only_stack)


def look_at_coroutine(proc: Process, look: Callable[[Any], T], otherwise: Callable[[Any], T]) -> T:
    """``look(proc.coro)`` where its frames can be read safely, else ``otherwise(proc.coro)``.

    With the GIL, always (the coroutine may be running, but not while this
    runs). On a free-threaded build, reading the frames of a coroutine that
    another thread may be running at that moment is a use-after-free (CPython
    gh-118680): only a WAITING process's, under its lock (nothing can wake it
    meanwhile). ``proc.coro`` may be None (a finished process).
    """
    if GIL:
        coro = proc.coro
        return look(coro) if coro is not None else otherwise(None)
    with proc.lock:
        coro = proc.coro
        if proc.state == WAITING and coro is not None:
            return look(coro)
    return otherwise(coro)


def _code_only_stack(coro: Any) -> list[traceback.FrameSummary]:
    code = getattr(coro, "cr_code", None)
    if code is None:
        return []
    return [traceback.FrameSummary(code.co_filename, code.co_firstlineno, code.co_name, line=None)]


#: The throttle's entry points (a JUMP callback; 3.11's trace functions).
_THROTTLE_CODES = frozenset(
    {
        Throttle._on_jump.__code__,
        TraceThrottle._local_trace.__code__,
        TraceThrottle._global_trace.__code__,
    }
)


def running_stack(rt: Runtime, proc: Process) -> list[traceback.FrameSummary]:
    """The stack of a process running on some thread right now, outermost first."""
    for s in list(rt.schedulers):
        if s.current is proc:
            frame = sys._current_frames().get(s.ident)
            break
    else:
        return []
    loop_code = rt.loop_code
    frames: list[traceback.FrameSummary] = []
    while frame is not None and frame.f_code is not loop_code:
        if frame.f_code in _THROTTLE_CODES:
            # sysmon's brake, not the process's code: neither it nor what it
            # called (a runaway parked for its turn waits in Parker.park)
            frames.clear()
            frame = frame.f_back
            continue
        frames.append(
            traceback.FrameSummary(
                frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, line=None
            )
        )
        frame = frame.f_back
    if frame is None:
        return []  # it stopped running while we looked
    frames.reverse()
    return frames


# ---------------------------------------------------------------------- process_info


def snapshot(get: Callable[[], T]) -> T:
    """``get()``, retried while another thread mutates what it copies."""
    for _ in range(100):
        try:
            return get()
        except RuntimeError:
            continue
    return get()


def settled(proc: Process, get: Callable[[], T]) -> T:
    """``get()``, read while no drain of ``proc``'s inbox was under way.

    :func:`signals.drain` takes the inbox's messages out before it puts them on
    the queue, and a count taken from another thread in between misses them
    (a sender then finds fewer than it sent). ``proc.batch`` is the list being
    moved, emptied once moved, a new list for each drain: a seqlock that costs
    the owner one store and a clear. A drain that stops half-way for good (its
    thread killed), or drains that keep coming (a busy receiver of a long
    queue), get the last read after a bounded wait.
    """
    reads = 0
    for attempt in range(SETTLE_TRIES):
        moving = proc.batch
        if not moving:
            value: T = snapshot(get)
            if proc.batch is moving:
                return value
            reads += 1
            if reads == SETTLE_READS:
                return value
        if attempt:
            time.sleep(0)  # (under the GIL the owner needs it to finish)
    return snapshot(get)


#: How often :func:`settled` looks, and reads at most, before it takes what it finds.
SETTLE_TRIES = 200
SETTLE_READS = 8


def process_info(rt: Runtime, proc: Process) -> dict[str, Any] | None:
    """The snapshot :func:`beamlet.process_info` returns (its docstring has the keys)."""
    with proc.lock:
        state = proc.state
    if state >= DEAD:
        return None
    links = snapshot(lambda: sorted(proc.links or ()))
    monitors = snapshot(lambda: list((proc.monitors or {}).values()))
    monitored_by = snapshot(lambda: list((proc.monitored_by or {}).values()))
    stack = process_stack(rt, proc, state)
    ports = snapshot(lambda: list(proc.ports or ()))
    return {
        "status": STATUS_NAMES[state],
        "message_queue_len": message_queue_len(proc),
        "reductions": proc.reductions,
        "runtime": proc.runtime,
        "memory": memory(proc),
        "links": links,
        "monitors": monitors,
        "monitored_by": [w[0] if isinstance(w, tuple) else w for w in monitored_by],
        "registered_name": proc.name,
        "trap_exit": proc.trap_exit,
        "initial_call": initial_call(proc.initial_call),
        "current_stacktrace": stack,
        "sockets": [p.info() for p in ports],
    }


def message_queue_len(proc: Process) -> int:
    """Messages waiting for ``proc``: its queue, the message that woke it if
    it has not run since (``handoff``), and the messages (not the signals)
    still in its inbox; none counted twice or missed while its owner moves
    them (:func:`settled`)."""

    def count() -> int:
        # (A drain between these reads moves messages past them: settled()
        # throws such a count away.)
        box = proc.inbox
        inbox = box.copy() if box else ()
        woke = proc.handoff
        q = proc.queue
        n = len(q) if q else 0
        if woke is not NOTHING and type(woke) not in SIGNALS:
            n += 1
        return n + sum(1 for it in inbox if type(it) not in SIGNALS)

    return settled(proc, count)


def memory(proc: Process) -> int:
    """Bytes, an estimate: the record, coroutine frames, mailbox containers and
    the shallow size of each queued message."""
    size = sys.getsizeof(proc) + sys.getsizeof(proc.pid)
    size += look_at_coroutine(proc, _coroutine_size, lambda c: 0 if c is None else sys.getsizeof(c))
    for c in (proc.queue, proc.inbox, proc.links, proc.monitors, proc.monitored_by):
        if c is not None:
            size += sys.getsizeof(c)

    def mailbox() -> int:
        woke = proc.handoff
        n = 0 if woke is NOTHING else sys.getsizeof(woke)
        for box in (proc.inbox, proc.queue):
            if box:
                n += sum(map(sys.getsizeof, list(box)))  # (deque.copy() is ~25 µs an item on 3.13t)
        return n

    return size + settled(proc, mailbox)


def _coroutine_size(obj: Any) -> int:
    size = 0
    while obj is not None:
        size += sys.getsizeof(obj)
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is not None:
            size += sys.getsizeof(frame)
        obj = awaited(obj)
    return size


# ---------------------------------------------------------------------- statistics


@dataclasses.dataclass(frozen=True)
class Statistics:
    """A snapshot of the runtime's schedulers (see :func:`beamlet.statistics`)."""

    schedulers: int  #: configured number of schedulers (N)
    threads: int  #: scheduler threads that exist: active + held by runaways + spare
    active: int  #: threads taking work from the run queue
    held_by_runaways: int  #: threads a stuck process keeps (handed off by sysmon)
    spare: int  #: parked threads ready to replace a stuck scheduler
    idle: int  #: active schedulers parked for lack of work
    run_queue: int  #: runnable processes waiting for a scheduler
    processes: int  #: live processes
    hand_offs: int  #: times sysmon replaced a stuck scheduler, since start
    steals: int  #: times a scheduler out of work took processes from another's queue
    kills_pending: int  #: killed processes whose code has not stopped yet
    utilization: float  #: busy scheduler time / (N x elapsed), sampled by sysmon
    switch_interval: float  #: the GIL switch interval now (lowered while a runaway runs)
    max_threads: int  #: cap on scheduler threads, runaways' included (run(max_threads=))
    blocking_limit: int  #: threads the blocking() pool may start (run(blocking_threads=))
    blocking_threads: int  #: blocking() pool threads that exist now
    blocking_busy: int  #: blocking() pool threads running work now
    blocking_queued: int  #: blocking() calls waiting for a pool thread
    timers: int  #: armed timers: receive/sleep timeouts and send_after timers


def statistics(rt: Runtime) -> Statistics:
    scheds = list(rt.schedulers)
    held = sum(1 for s in scheds if s.handed_off)
    mon = rt.sysmon
    pool_threads, pool_busy, pool_queued = rt.pool.statistics()
    return Statistics(
        schedulers=rt.n_schedulers,
        threads=len(scheds),
        active=rt.active,
        held_by_runaways=held,
        spare=len(rt.spares),
        idle=len(rt.idle),
        run_queue=rt.queued() + len(rt.diverted),
        processes=len(rt.table),
        hand_offs=mon.hand_offs,
        steals=sum(s.steals for s in scheds),
        kills_pending=len(rt.killing),
        utilization=mon.busy_time / mon.sampled_time if mon.sampled_time else 0.0,
        switch_interval=sys.getswitchinterval(),
        max_threads=rt.max_threads,
        blocking_limit=rt.pool.max_threads,
        blocking_threads=pool_threads,
        blocking_busy=pool_busy,
        blocking_queued=pool_queued,
        timers=rt.timers.pending(rt.idle_timer),
    )
