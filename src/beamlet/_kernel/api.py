"""The kernel's public functions, re-exported by :mod:`beamlet`.

Everything that can block is ``async`` and is a schedule point; everything else
is a plain function that returns at once (as in Erlang, where only ``receive``
waits). Semantics are Erlang's; docs/semantics.md has the rules.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import sys
import threading
import types
from collections.abc import Callable, Generator
from itertools import islice
from typing import Any

from beamlet._kernel import process as P
from beamlet._kernel import runtime as R
from beamlet._kernel.copying import _leaves, copy_message
from beamlet._kernel.matching import matches, mentions
from beamlet._kernel.pool import DONE
from beamlet._kernel.process import NOTHING, BadArg, Process, Sig
from beamlet._kernel.runtime import (
    KILL,
    KILLED,
    NOPROC,
    NORMAL,
    Runtime,
    current_process,
    current_process_or_none,
    current_runtime,
    is_atom,
)
from beamlet._kernel.timers import FIRED, PENDING, Timer
from beamlet.terms import Atom, Pid, Ref

_current_scheduler = R.current_scheduler
_SIG_ALIAS_MSG = P.SIG_ALIAS_MSG
_WAITING = P.WAITING
_RUNNABLE = P.RUNNABLE
_WAIT = P.WAIT
_YIELD = P.YIELD
_DIE = P.DIE


# ---------------------------------------------------------------------- running


#: Python's cyclic GC thresholds while a runtime runs (see docs/process-model.md):
#: with the defaults (700, 10, 10) a million processes cost 16 full collections
#: of up to 0.8 s each while they are spawned; with these, one or two.
GC_THRESHOLDS: tuple[int, int, int] = (50_000, 20, 100)


def run(
    main: Callable[..., Any],
    *args: Any,
    schedulers: int | None = None,
    gc_thresholds: tuple[int, int, int] | None = GC_THRESHOLDS,
    blocking_threads: int = R.DEFAULT_BLOCKING_THREADS,
    max_threads: int | None = None,
) -> Any:
    """Start a runtime, run ``main(*args)`` as its first process, return its result.

    ``schedulers``: scheduler threads (default: one per CPU on free-threaded
    CPython, one under the GIL, where more only contend for it; sysmon adds a
    thread whenever a process holds one).
    ``gc_thresholds``: ``gc.set_threshold`` values while the runtime runs
    (restored afterwards); ``None`` leaves the collector alone.
    ``blocking_threads``: threads of the pool that runs :func:`blocking` work
    (default 64).
    ``max_threads``: cap on scheduler threads, those that runaway processes
    keep included (default 2048): past it, queued processes wait until a
    runaway yields or dies.

    When ``main`` ends, every other process is killed and the scheduler threads
    stop; ``blocking()`` work still running is abandoned (the pool's threads are
    daemons, so it does not keep the program alive). If ``main`` raised, ``run``
    raises the same exception; if it was killed by an exit signal, ``run`` raises
    ``ProcessExit(reason)`` (or the exception that was the reason).
    """
    rt = Runtime(schedulers, blocking_threads=blocking_threads, max_threads=max_threads)
    R.install(rt)
    old_thresholds = gc.get_threshold()
    if gc_thresholds is not None:
        gc.set_threshold(*gc_thresholds)
    try:
        rt.start()
        rt.spawn(main, args, None, is_main=True)
        # A timed wait: a signal (Ctrl-C) that the OS hands to another thread
        # only reaches Python's handler when the main thread wakes up.
        while not rt.main_done.wait(0.1):
            pass
        ok, value = rt.main_outcome
    except BaseException:
        rt.shutdown(grace=1.0)
        R.uninstall(rt)
        gc.set_threshold(*old_thresholds)
        raise
    stuck = rt.shutdown()
    R.uninstall(rt)
    gc.set_threshold(*old_thresholds)
    if stuck:
        R.logger.warning(
            "beamlet.run: %d process(es) did not die at shutdown: %r", len(stuck), stuck
        )
    if ok:
        return value
    if isinstance(value, BaseException):
        raise value
    raise P.ProcessExit(value)


# ---------------------------------------------------------------------- processes


def spawn(fn: Callable[..., Any], *args: Any) -> Pid:
    """Start ``fn(*args)`` (an async function) as a new process."""
    return current_runtime().spawn(fn, args, current_process_or_none())[0]


def spawn_link(fn: Callable[..., Any], *args: Any) -> Pid:
    """Spawn and link atomically: the link exists before the child runs."""
    return current_runtime().spawn(fn, args, current_process(), link=True)[0]


def spawn_monitor(fn: Callable[..., Any], *args: Any) -> tuple[Pid, Ref]:
    """Spawn and monitor atomically; returns ``(pid, monitor_ref)``."""
    pid, ref = current_runtime().spawn(fn, args, current_process(), monitor=True)
    assert ref is not None
    return pid, ref


def self() -> Pid:
    """The pid of the calling process."""
    proc = current_process_or_none()
    if proc is None:
        raise RuntimeError("self() called outside a beamlet process")
    return proc.pid


def _resolve(rt: Runtime, dest: Any) -> Pid | _Remote:
    """The local pid ``dest`` names, or a :class:`_Remote` for a name on another node."""
    if type(dest) is Pid:
        return dest
    if isinstance(dest, str):
        pid = rt.names.get(dest)
        if pid is None:
            raise BadArg(f"no process is registered as {dest!r}")
        return pid
    if isinstance(dest, tuple) and len(dest) == 2:
        name, node = dest
        if node is None or node == rt.local_node():
            return _resolve(rt, name)
        return _Remote(name, node)
    raise BadArg(f"not a pid, a registered name or a (name, node) pair: {dest!r}")


class _Remote:
    __slots__ = ("name", "node")

    def __init__(self, name: Any, node: Any) -> None:
        self.name = name
        self.node = node


def send(dest: Any, msg: Any) -> Any:
    """Send ``msg`` to a pid, a registered name, ``(name, node)`` or an alias;
    returns ``msg``.

    The receiver gets a copy (immutable values are shared). Sending to a dead
    pid is not an error (the message is dropped); to an unregistered name it is.
    """
    rt = R._current_runtime
    if rt is None:
        raise RuntimeError("send() needs a running beamlet runtime")
    item = msg if type(msg) in _leaves else copy_message(msg)
    if type(dest) is Pid:
        pid = dest
    elif type(dest) is Ref:
        # An alias: the owner drops the message if the alias is no longer active.
        owner = rt.aliases.get(dest)
        if owner is not None:
            rt.deliver(owner, Sig(P.SIG_ALIAS_MSG, None, dest, item))
        elif dest.node is not None:
            rt.remote_alias(dest, item, current_process_or_none())
        return msg
    else:
        found = _resolve(rt, dest)
        if isinstance(found, _Remote):
            rt.remote_named(found.name, found.node, item, current_process_or_none())
            return msg
        pid = found
    if pid.node is None:
        # Runtime.deliver for a local message, inlined: the hot path.
        # (``with`` and C-level appends only: see Runtime.deliver.)
        proc = rt.table.get(pid.id)
        if proc is not None:
            with proc.lock:
                state = proc.state
                if state == 2:  # WAITING
                    proc.handoff = item
                    proc.state = 0  # RUNNABLE
                    rt.runq.append(proc)
                elif state < 3:  # not EXITING: queue it
                    inbox = proc.inbox
                    if inbox is None:
                        proc.inbox = [item]
                    else:
                        inbox.append(item)
            if state == 2 and (rt.idle or _current_scheduler() is None):
                rt.pushed()
        # A message to a dead process is dropped; a message never kills, so
        # there is no running process to stop (Runtime.exit_running).
        return msg
    rt.deliver(pid, item)
    return msg


def _cannot_wait(name: str, sched: Any) -> RuntimeError:
    if sched is not None and sched.closing and sched.current is not None:
        proc = sched.current
        return RuntimeError(
            f"{name}() called while process {proc.pid!r} is being killed ({proc.doom!r}): "
            "the finally blocks of a killed process run, but it cannot wait any more"
        )
    return RuntimeError(f"{name}() called outside a beamlet process")


def _take(proc: Process, q: collections.deque[Any], i: int) -> Any:
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
    sched = _current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        raise _cannot_wait("receive", sched)
    proc: Process = sched.current
    q = proc.queue
    if not patterns and q and proc.inbox is None and proc.handoff is NOTHING:
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
                if type(h) is not Sig and proc.inbox is None:
                    proc.handoff = NOTHING
                    return h
                break
            if proc.inbox is not None or proc.queue is not None:
                break  # (the scheduler drains an inbox before resuming: Scheduler.doomed)
            yield _WAIT
    rt = sched.rt
    pos = 0
    mark = proc.mark_ref
    if mark is not None and patterns:
        for p in patterns:
            if not mentions(p, mark):
                mark = None
                break
        else:
            pos = proc.mark_pos
    timer: Timer | None = None
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
                if type(h) is Sig:
                    active = h.kind == _SIG_ALIAS_MSG and proc.aliases and h.a in proc.aliases
                    m = h.b if active else NOTHING
                if m is not NOTHING and (not patterns or _matches_any(patterns, m)):
                    proc.handoff = NOTHING
                    if mark is not None:
                        proc.mark_ref = None
                    return m
            if proc.inbox is not None or proc.handoff is not NOTHING:
                rt.drain(proc)
                if proc.doom is not None:
                    yield _DIE
            q = proc.queue
            if q is not None:
                if not patterns:
                    if q:
                        return _take(proc, q, 0)
                else:
                    i = _find(q, pos, patterns)
                    if i >= 0:
                        if mark is not None:
                            proc.mark_ref = None
                        return _take(proc, q, i)
                    pos = len(q)
            if timeout is not None:
                if timer is None:
                    if timeout <= 0:
                        raise TimeoutError("receive timed out")
                    timer = proc.timer = rt.timers.add(timeout, rt.wake_timeout, proc)
                elif timer.state == FIRED:
                    raise TimeoutError(f"receive timed out after {timeout} s")
            yield _WAIT
    finally:
        if timer is not None:
            proc.timer = None
            if timer.state == PENDING:
                rt.timers.cancel(timer)


@types.coroutine
def sleep(seconds: float) -> Generator[int, None, None]:
    """Suspend the calling process for ``seconds``; ``sleep(0)`` just yields."""
    sched = _current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        raise _cannot_wait("sleep", sched)
    proc: Process = sched.current
    rt = R._current_runtime
    assert rt is not None
    if seconds <= 0:
        yield _YIELD
        if proc.inbox is not None or proc.handoff is not NOTHING:
            rt.drain(proc)
            if proc.doom is not None:
                yield _DIE
        return
    timer = proc.timer = rt.timers.add(seconds, rt.wake_timeout, proc)
    try:
        while timer.state != FIRED:
            yield _WAIT
            if proc.inbox is not None or proc.handoff is not NOTHING:
                rt.drain(proc)
                if proc.doom is not None:
                    yield _DIE
    finally:
        proc.timer = None
        if timer.state == PENDING:
            rt.timers.cancel(timer)


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
    sched = _current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        raise _cannot_wait("blocking", sched)
    proc: Process = sched.current
    rt = sched.rt
    pid = proc.pid
    wake = Sig(P.SIG_WAKE, None)
    job = rt.pool.submit(fn, args, kwargs, lambda _job: rt.deliver(pid, wake))
    try:
        while job.state < DONE:
            yield _WAIT
            if proc.inbox is not None or proc.handoff is not NOTHING:
                rt.drain(proc)
                if proc.doom is not None:
                    yield _DIE
        return job.outcome()
    finally:
        if job.state < DONE:
            rt.pool.cancel(job)


# ---------------------------------------------------------------------- refs


def _set_mark(proc: Process, ref: Ref) -> None:
    q = proc.queue
    proc.mark_ref = ref
    proc.mark_pos = len(q) if q is not None else 0
    if proc.inbox is not None:
        # Messages still in the inbox predate the ref too: drop a marker after them.
        with proc.lock:
            inbox = proc.inbox
            if inbox is not None:
                inbox.append(Sig(P.SIG_MARK, None, ref))


def make_ref() -> Ref:
    """A new unique reference."""
    ref = current_runtime().make_ref()
    proc = current_process_or_none()
    if proc is not None:
        _set_mark(proc, ref)
    return ref


# ---------------------------------------------------------------------- links & monitors


def link(pid: Pid) -> None:
    """Link the caller and ``pid`` (bidirectional; at most one link per pair).

    If ``pid`` is a local process that does not exist, a caller that does not
    trap exits fails at once with ``ProcessExit("noproc")`` (Erlang's link/1
    fails with ``noproc``); one that traps exits receives ``Exit(pid,
    "noproc")``. A process that dies while the link is being set up, or a
    remote one, answers with an exit signal: ``noproc``, or ``noconnection``
    when its node cannot be reached.
    """
    proc = current_process()
    if type(pid) is not Pid:
        raise BadArg(f"link needs a pid, got {pid!r}")
    if pid == proc.pid:
        return
    if not proc.trap_exit and pid.node is None:
        target = current_runtime().lookup(pid)
        if target is None or target.state >= P.EXITING:
            raise P.ProcessExit(NOPROC)
    if proc.links is None:
        proc.links = set()
    elif pid in proc.links:
        return
    proc.links.add(pid)
    current_runtime().deliver(pid, Sig(P.SIG_LINK, proc.pid), proc)


def unlink(pid: Pid) -> None:
    """Remove the link; afterwards it has no effect on the caller."""
    proc = current_process()
    if type(pid) is not Pid:
        raise BadArg(f"unlink needs a pid, got {pid!r}")
    if proc.links is None or pid not in proc.links:
        return
    proc.links.discard(pid)
    current_runtime().deliver(pid, Sig(P.SIG_UNLINK, proc.pid), proc)


def monitor(target: Any, *, alias: bool | str = False) -> Ref:
    """Monitor a pid (or a registered name); returns the monitor's Ref.

    When the target dies, the caller receives ``Down(ref, pid, reason)``; if it is
    already dead, at once with reason ``noproc``. With ``alias`` the Ref is also
    an alias of the caller (see :func:`alias`), as Erlang's ``monitor/3`` with
    ``{alias, Mode}``: a server can reply to it, and once the alias is inactive
    a late reply is dropped. ``alias=True`` or ``"explicit_unalias"``: active
    until :func:`unalias`; ``"demonitor"``: also deactivated when the monitor
    goes (``demonitor``, or its ``Down`` is delivered).
    """
    if alias is True or alias == "explicit_unalias":
        with_monitor = False
    elif alias == "demonitor":
        with_monitor = True
    elif alias is not False:
        raise BadArg(f"monitor alias must be a bool, 'explicit_unalias' or 'demonitor': {alias!r}")
    proc = current_process()
    rt = current_runtime()
    ref = rt.make_ref()
    _set_mark(proc, ref)
    if alias is not False:
        _activate_alias(rt, proc, ref, with_monitor)
    if proc.monitors is None:
        proc.monitors = {}
    if type(target) is Pid:
        proc.monitors[ref] = target
        if target.node is not None:
            rt.deliver(target, Sig(P.SIG_MONITOR, proc.pid, ref), proc)
        elif not rt.add_monitor(target, ref, proc.pid):
            rt.deliver(proc.pid, Sig(P.SIG_DOWN, target, ref, NOPROC))
        return ref
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str):
        name, node = target
        if node is None or node == rt.local_node():
            target = name
        else:
            proc.monitors[ref] = (name, node)
            rt.remote_named(name, node, Sig(P.SIG_MONITOR, proc.pid, ref, (name, node)), proc)
            return ref
    if isinstance(target, str):
        pid = rt.names.get(target)
        proc.monitors[ref] = pid if pid is not None else target
        if pid is None or not rt.add_monitor(pid, ref, (proc.pid, target)):
            rt.deliver(proc.pid, Sig(P.SIG_DOWN, target, ref, NOPROC))
        return ref
    rt.drop_alias(proc, ref)  # not a target: take the alias back
    raise BadArg(f"monitor needs a pid, a registered name or (name, node), got {target!r}")


def _activate_alias(rt: Runtime, proc: Process, ref: Ref, with_monitor: bool = False) -> None:
    # proc.aliases: active alias -> whether it goes when its monitor goes.
    if proc.aliases is None:
        proc.aliases = {}
    proc.aliases[ref] = with_monitor
    rt.aliases[ref] = proc.pid


def alias() -> Ref:
    """A new alias of the calling process: a Ref that ``send`` can address.

    Messages sent to an alias reach the process only while the alias is active;
    once :func:`unalias` has returned, none does (Erlang's ``alias/0``). A call
    replies to an alias so that a reply arriving after a timeout is dropped
    instead of staying in the caller's mailbox.
    """
    proc = current_process()
    rt = current_runtime()
    ref = rt.make_ref()
    _set_mark(proc, ref)
    _activate_alias(rt, proc, ref)
    return ref


def unalias(ref: Ref) -> bool:
    """Deactivate an alias of the calling process; True if it was active."""
    return current_runtime().drop_alias(current_process(), ref)


def demonitor(ref: Ref, flush: bool = False) -> bool:
    """Turn a monitor off. Returns True if it was active.

    After this returns, no ``Down`` for ``ref`` will be queued; one may already be
    queued, and ``flush=True`` removes it.
    """
    proc = current_process()
    rt = current_runtime()
    target = proc.monitors.pop(ref, None) if proc.monitors else None
    if target is not None and proc.aliases:
        rt.drop_alias(proc, ref, only_with_monitor=True)
    if type(target) is Pid:
        if target.node is None:
            rt.remove_monitor(target, ref)
        else:
            rt.deliver(target, Sig(P.SIG_DEMONITOR, proc.pid, ref), proc)
    elif type(target) is tuple:
        rt.remote_named(target[0], target[1], Sig(P.SIG_DEMONITOR, proc.pid, ref), proc)
    # A DOWN signal still in the inbox is dropped when drained (the monitor is
    # gone); flush removes one that was already queued.
    if flush and proc.queue is not None:
        q = proc.queue
        for i, m in enumerate(q):
            if type(m) is P.Down and m.ref == ref:
                _take(proc, q, i)
                break
    return target is not None


def exit(pid: Pid, reason: Any) -> None:
    """Send an exit signal with ``reason`` to ``pid``.

    ``"kill"`` cannot be trapped and kills with reason ``"killed"``; ``"normal"`` is
    ignored by a process that does not trap exits (unless it is the caller);
    a process trapping exits receives ``Exit(sender, reason)``. Sent to the
    caller itself, the exit takes effect at once.
    """
    rt = current_runtime()
    proc = current_process_or_none()
    if type(pid) is not Pid:
        raise BadArg(f"exit needs a pid, got {pid!r}")
    if proc is not None and pid == proc.pid:
        if is_atom(reason, KILL):
            proc.doom = KILLED
        elif proc.trap_exit:
            rt.deliver(pid, Sig(P.SIG_EXIT, pid, reason, False), proc)
            return
        else:
            proc.doom = reason
        raise P.ProcessExit(proc.doom)
    rt.deliver(pid, Sig(P.SIG_EXIT, proc.pid if proc is not None else None, reason, False), proc)


def process_flag(flag: str, value: Any) -> Any:
    """Set a flag of the calling process; returns the old value. Flags: ``trap_exit``."""
    proc = current_process()
    if flag == "trap_exit":
        old = proc.trap_exit
        proc.trap_exit = bool(value)
        return old
    raise BadArg(f"unknown process flag {flag!r}")


# ---------------------------------------------------------------------- names


def register(name: str, pid: Pid) -> None:
    """Register ``pid`` under ``name``. BadArg if the name is taken, the process is
    dead, or it already has a name. The name is released when the process dies."""
    rt = current_runtime()
    if not isinstance(name, str) or not name:
        raise BadArg(f"a registered name must be a non-empty string, got {name!r}")
    if name == "undefined":
        raise BadArg("'undefined' cannot be registered")
    with rt.names_lock:
        if name in rt.names:
            raise BadArg(f"{name!r} is already registered to {rt.names[name]!r}")
        proc = rt.lookup(pid) if type(pid) is Pid else None
        if proc is None:
            raise BadArg(f"cannot register {name!r}: {pid!r} is not a live local process")
        with proc.lock:
            if proc.state >= P.EXITING:
                raise BadArg(f"cannot register {name!r}: {pid!r} is not alive")
            if proc.name is not None:
                raise BadArg(f"{pid!r} is already registered as {proc.name!r}")
            proc.name = name
        rt.names[name] = pid


def unregister(name: str) -> None:
    """Remove a registered name. BadArg if it is not registered."""
    rt = current_runtime()
    with rt.names_lock:
        pid = rt.names.pop(name, None)
        if pid is None:
            raise BadArg(f"{name!r} is not registered")
        proc = rt.lookup(pid)
        if proc is not None:
            with proc.lock:
                proc.name = None


def whereis(name: str) -> Pid | None:
    """The pid registered as ``name``, or None."""
    return current_runtime().names.get(name)


def registered() -> list[str]:
    """All registered names."""
    rt = current_runtime()
    with rt.names_lock:
        return list(rt.names)


# ---------------------------------------------------------------------- introspection


def node() -> Atom:
    """The name of this node (``nonode@nohost`` unless distribution is started)."""
    return current_runtime().local_node()


def is_alive(pid: Pid) -> bool:
    """True if ``pid`` is a local process that has not exited."""
    if type(pid) is not Pid:
        raise BadArg(f"is_alive needs a pid, got {pid!r}")
    if pid.node is not None:
        raise BadArg(f"is_alive only answers for local pids, got {pid!r}")
    proc = current_runtime().lookup(pid)
    return proc is not None and proc.state < P.EXITING


def processes() -> list[Pid]:
    """The pids of all live processes."""
    return [p.pid for p in list(current_runtime().table.values())]


def _snapshot(get: Callable[[], Any]) -> Any:
    # Another thread may mutate a set/dict while we copy it: retry.
    for _ in range(100):
        try:
            return get()
        except RuntimeError:
            continue
    return get()


def process_info(pid: Pid) -> dict[str, Any] | None:
    """A snapshot of a process, or None if it is not alive.

    Keys:

    * ``status``: "running", "runnable", "waiting" or "exiting".
    * ``message_queue_len``: messages queued, including ones not drained yet.
    * ``reductions``: how many times the process has been scheduled (resumed).
      Not Erlang's unit of work: a process that loops without awaiting shows 1.
      Rank by ``runtime`` to find what hogs the CPU.
    * ``runtime``: CPU seconds spent running it, read by sysmon from its
      thread's CPU clock every millisecond (every 16 ms for a runaway that
      holds its own thread) and charged to the process running then: exact for
      a process that runs for long stretches, a sample for short runs. A
      process blocked in ``time.sleep`` or a socket read is charged nothing.
    * ``memory``: bytes, an estimate: the process record, its coroutine frames,
      its mailbox containers and the shallow size of each queued message
      (``sys.getsizeof``; not what those messages or its variables refer to).
    * ``links``, ``monitors`` (pids or names it monitors), ``monitored_by``
      (pids), ``registered_name``, ``trap_exit``.
    * ``initial_call``: (module, qualified name, number of positional parameters).
    * ``current_stacktrace``: a list of ``traceback.FrameSummary``, outermost
      first: where it waits, or, while it runs, the frames its thread is
      executing at the moment of the call. On a free-threaded build, where
      another thread's running frames cannot be read safely, a process that
      is not waiting shows its coroutine's function only (and ``memory``
      leaves out its frames).
    """
    if type(pid) is not Pid:
        raise BadArg(f"process_info needs a pid, got {pid!r}")
    proc = current_runtime().lookup(pid)
    if proc is None:
        return None
    with proc.lock:
        state = proc.state
        inbox = list(proc.inbox) if proc.inbox is not None else []
    if state >= P.DEAD:
        return None
    q = proc.queue
    queued = _snapshot(lambda: len(q)) if q is not None else 0
    pending = sum(1 for it in inbox if type(it) is not Sig)
    links = _snapshot(lambda: sorted(proc.links or ()))
    monitors = _snapshot(lambda: list((proc.monitors or {}).values()))
    monitored_by = _snapshot(lambda: list((proc.monitored_by or {}).values()))
    stack = R.process_stack(current_runtime(), proc, state)
    return {
        "status": P.STATUS_NAMES[state],
        "message_queue_len": queued + pending,
        "reductions": proc.reductions,
        "runtime": proc.runtime,
        "memory": _memory(proc),
        "links": links,
        "monitors": monitors,
        "monitored_by": [w[0] if isinstance(w, tuple) else w for w in monitored_by],
        "registered_name": proc.name,
        "trap_exit": proc.trap_exit,
        "initial_call": R.initial_call(proc.initial_call),
        "current_stacktrace": stack,
    }


def _memory(proc: Process) -> int:
    size = sys.getsizeof(proc) + sys.getsizeof(proc.pid)
    size += R.look_at_coroutine(
        proc, _coroutine_size, lambda c: 0 if c is None else sys.getsizeof(c)
    )
    for c in (proc.queue, proc.inbox, proc.links, proc.monitors, proc.monitored_by):
        if c is not None:
            size += sys.getsizeof(c)
    for box in (proc.queue, proc.inbox):
        if box:
            size += sum(map(sys.getsizeof, _snapshot(box.copy)))
    return size


def _coroutine_size(obj: Any) -> int:
    size = 0
    while obj is not None:
        size += sys.getsizeof(obj)
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is not None:
            size += sys.getsizeof(frame)
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    return size


@dataclasses.dataclass(frozen=True)
class Statistics:
    """A snapshot of the runtime's schedulers (see :func:`statistics`)."""

    schedulers: int  #: configured number of schedulers (N)
    threads: int  #: scheduler threads that exist: active + held by runaways + spare
    active: int  #: threads taking work from the run queue
    held_by_runaways: int  #: threads a stuck process keeps (handed off by sysmon)
    spare: int  #: parked threads ready to replace a stuck scheduler
    idle: int  #: active schedulers parked for lack of work
    run_queue: int  #: runnable processes waiting for a scheduler
    processes: int  #: live processes
    hand_offs: int  #: times sysmon replaced a stuck scheduler, since start
    kills_pending: int  #: killed processes whose code has not stopped yet
    utilization: float  #: busy scheduler time / (N x elapsed), sampled by sysmon
    switch_interval: float  #: the GIL switch interval now (lowered while a runaway runs)
    max_threads: int  #: cap on scheduler threads, runaways' included (run(max_threads=))
    blocking_limit: int  #: threads the blocking() pool may start (run(blocking_threads=))
    blocking_threads: int  #: blocking() pool threads that exist now
    blocking_busy: int  #: blocking() pool threads running work now
    blocking_queued: int  #: blocking() calls waiting for a pool thread
    timers: int  #: armed timers: receive/sleep timeouts and send_after timers


def statistics() -> Statistics:
    """Scheduler statistics: utilisation, hand-offs, threads held by runaways."""
    rt = current_runtime()
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
        run_queue=len(rt.runq) + len(rt.diverted),
        processes=len(rt.table),
        hand_offs=mon.hand_offs,
        kills_pending=len(rt.killing),
        utilization=mon.busy_time / mon.sampled_time if mon.sampled_time else 0.0,
        switch_interval=sys.getswitchinterval(),
        max_threads=rt.max_threads,
        blocking_limit=rt.pool.max_threads,
        blocking_threads=pool_threads,
        blocking_busy=pool_busy,
        blocking_queued=pool_queued,
        timers=rt.timers.pending(),
    )


# ---------------------------------------------------------------------- timers


def send_after(seconds: float, dest: Any, msg: Any) -> Ref:
    """Send ``msg`` to ``dest`` (a pid or a name, resolved when the timer fires)
    after ``seconds``. Returns a Ref for :func:`cancel_timer`.

    A timer aimed at a pid is cancelled if that process is not alive, or when it
    exits (Erlang's ``erlang:send_after/3``). A timer costs ~170 bytes of kernel
    bookkeeping plus its Ref and the message, all freed when it fires, is
    cancelled, or its process exits.
    """
    rt = current_runtime()
    if type(dest) is not Pid and not isinstance(dest, str):
        raise BadArg(f"send_after needs a pid or a registered name, got {dest!r}")
    ref = rt.make_ref()
    rt.send_after(seconds, dest, copy_message(msg), ref)
    return ref


def cancel_timer(ref: Ref) -> float | None:
    """Cancel a ``send_after`` timer: the seconds it had left, or None if it had
    already fired, been cancelled, or its destination process has exited."""
    return current_runtime().cancel_send_timer(ref)


__all__ = [
    "BadArg",
    "Statistics",
    "alias",
    "blocking",
    "cancel_timer",
    "demonitor",
    "exit",
    "is_alive",
    "link",
    "make_ref",
    "monitor",
    "node",
    "process_flag",
    "process_info",
    "processes",
    "receive",
    "register",
    "registered",
    "run",
    "self",
    "send",
    "send_after",
    "sleep",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "statistics",
    "unalias",
    "unlink",
    "unregister",
    "whereis",
]

_ = (threading, Atom, NORMAL)  # re-exported names used by type checkers only
