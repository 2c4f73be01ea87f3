"""The kernel's public functions, re-exported by :mod:`beamlet`.

Everything that can block is ``async`` and is a schedule point (traps.py);
everything else is a plain function that returns at once (as in Erlang, where
only ``receive`` waits). Each resolves the calling process and calls one rule
of the runtime (runtime.py, signals.py, introspection.py). Semantics are
Erlang's; docs/semantics.md has the rules.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

from beamlet._kernel import context, introspection, signals
from beamlet._kernel.context import (
    current_process,
    current_process_or_none,
    current_runtime,
    current_scheduler,
)
from beamlet._kernel.copying import _leaves, copy_message
from beamlet._kernel.introspection import Statistics
from beamlet._kernel.pool import DEFAULT_THREADS as DEFAULT_BLOCKING_THREADS
from beamlet._kernel.process import EXITING, RUNNABLE, WAITING, BadArg, ProcessExit
from beamlet._kernel.runtime import Runtime
from beamlet._kernel.traps import blocking, flush_down, receive, sleep
from beamlet.terms import Atom, Pid, Ref

logger = logging.getLogger("beamlet")

_get_ident = threading.get_ident

# ---------------------------------------------------------------------- running


#: Python's cyclic GC thresholds while a runtime runs (see docs/process-model.md):
#: with the defaults (700, 10, 10) a million processes cost 16 full collections
#: of up to 0.8 s each while they are spawned; with these, one or two.
GC_THRESHOLDS: tuple[int, int, int] = (50_000, 20, 100)
#: While a runtime runs, the first threshold also grows with the processes
#: alive: at least this many allocations per live process between
#: collections (see :func:`_scale_gc`).
GC_PER_PROCESS = 8


def _scale_gc(rt: Runtime, base: tuple[int, int, int], now: int) -> int:
    """A collection costs time in proportion to what is alive (all of it on a
    free-threaded build, which has one generation, and the old generations'
    on a GIL build), so with a fixed threshold a node of a million processes
    spends its time collecting: skynet 1M on 3.13t made 17 collections, 3.8 s
    of its 15.6 s, every scheduler stopped. Give the first generation a
    threshold that grows with the live processes (as Go's GOGC sizes the heap
    to the live data): collections then cost amortised constant time per
    allocation. Called ten times a second by ``run``'s thread; returns the
    threshold in force (changed only when off by more than a quarter)."""
    want = max(base[0], GC_PER_PROCESS * len(rt.table))
    if abs(want - now) * 4 > now:
        gc.set_threshold(want, base[1], base[2])
        return want
    return now


def run(
    main: Callable[..., Any],
    *args: Any,
    schedulers: int | None = None,
    gc_thresholds: tuple[int, int, int] | None = GC_THRESHOLDS,
    blocking_threads: int = DEFAULT_BLOCKING_THREADS,
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
    context.install(rt)
    old_thresholds = gc.get_threshold()
    if gc_thresholds is not None:
        gc.set_threshold(*gc_thresholds)
    try:
        rt.start()
        rt.spawn(main, args, None, is_main=True)
        # A timed wait: a signal (Ctrl-C) that the OS hands to another thread
        # only reaches Python's handler when the main thread wakes up.
        threshold = gc_thresholds[0] if gc_thresholds is not None else 0
        while not rt.main_done.wait(0.1):
            if gc_thresholds is not None:
                threshold = _scale_gc(rt, gc_thresholds, threshold)
        ok, value = rt.main_outcome
    except BaseException:
        rt.shutdown(grace=1.0)
        context.uninstall(rt)
        gc.set_threshold(*old_thresholds)
        raise
    stuck = rt.shutdown()
    context.uninstall(rt)
    gc.set_threshold(*old_thresholds)
    if stuck:
        logger.warning("beamlet.run: %d process(es) did not die at shutdown: %r", len(stuck), stuck)
    if ok:
        return value
    if isinstance(value, BaseException):
        raise value
    raise ProcessExit(value)


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
    s = current_scheduler()  # current_process_or_none, inlined
    proc = s.current if s is not None and s.ident == _get_ident() else None
    if proc is None:
        raise RuntimeError("self() called outside a beamlet process")
    return proc.pid


# ---------------------------------------------------------------------- messages


def _resolve(rt: Runtime, dest: Any) -> Pid | tuple[Any, Any]:
    """The local pid ``dest`` names, or ``(name, node)`` for a name on another node."""
    if type(dest) is Pid:
        return dest
    if isinstance(dest, str):
        pid = rt.whereis(dest)
        if pid is None:
            raise BadArg(f"no process is registered as {dest!r}")
        return pid
    if isinstance(dest, tuple) and len(dest) == 2:
        name, node = dest
        if node is None or node == rt.distribution.node_name():
            return _resolve(rt, name)
        return (name, node)
    raise BadArg(f"not a pid, a registered name or a (name, node) pair: {dest!r}")


def send(dest: Any, msg: Any) -> Any:
    """Send ``msg`` to a pid, a registered name, ``(name, node)`` or an alias;
    returns ``msg``.

    The receiver gets a copy (immutable values are shared). Sending to a dead
    pid is not an error (the message is dropped); to an unregistered name it is.
    """
    rt = context.runtime
    if rt is None:
        raise RuntimeError("send() needs a running beamlet runtime")
    item = msg if type(msg) in _leaves else copy_message(msg)
    if type(dest) is Pid:
        pid = dest
    elif type(dest) is Ref:
        # An alias: its owner drops the message if the alias is no longer active.
        owner = rt.aliases.get(dest)
        if owner is not None:
            signals.send_to_alias(rt, owner, dest, item)
        elif dest.node is not None:
            rt.distribution.route_alias(dest, item, current_process_or_none())
        return msg
    else:
        found = _resolve(rt, dest)
        if isinstance(found, tuple):
            rt.distribution.route_named(found[0], found[1], item, current_process_or_none())
            return msg
        pid = found
    if pid.node is None:
        # signals.send_message, inlined: the hot path. A process that is not
        # waiting takes the message without a lock (see send_message).
        proc = rt.table.get(pid.id)
        if proc is not None:
            inbox = proc.inbox
            if inbox is not None and proc.state != WAITING:
                inbox.append(item)
                if proc.state == WAITING:
                    signals.wake(rt, proc)
            else:
                with proc.lock:
                    state = proc.state
                    if state == WAITING:
                        if inbox is not None and inbox:
                            inbox.append(item)
                        else:
                            proc.handoff = item
                        proc.state = RUNNABLE
                        # The pushing scheduler's queue (Scheduling.schedule);
                        # looked up here, only when needed: a send is hot.
                        s = current_scheduler()
                        if s is not None and s.ident != _get_ident():
                            s = None  # a context copied from a scheduler's (asyncio)
                        q = rt.runq if s is None else s.pushq
                        q.append(proc)
                    elif state < EXITING:
                        if proc.inbox is None:
                            proc.inbox = [item]
                        else:
                            proc.inbox.append(item)
                if state == WAITING and (rt.idle or s is None):
                    rt.pushed(q, s)
        # A message to a dead process is dropped; a message never kills, so
        # there is no running process to stop (signals.exit_running).
        return msg
    rt.deliver(pid, item)
    return msg


def make_ref() -> Ref:
    """A new unique reference."""
    ref = current_runtime().make_ref()
    proc = current_process_or_none()
    if proc is not None:
        signals.set_mark(proc, ref)
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
    signals.link(current_runtime(), proc, pid)


def unlink(pid: Pid) -> None:
    """Remove the link; afterwards it has no effect on the caller."""
    proc = current_process()
    if type(pid) is not Pid:
        raise BadArg(f"unlink needs a pid, got {pid!r}")
    signals.unlink(current_runtime(), proc, pid)


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
    return signals.monitor(current_runtime(), current_process(), target, alias)


def demonitor(ref: Ref, flush: bool = False) -> bool:
    """Turn a monitor off. Returns True if it was active.

    After this returns, no ``Down`` for ``ref`` will be queued; one may already be
    queued, and ``flush=True`` removes it.
    """
    proc = current_process()
    was_active = signals.demonitor(current_runtime(), proc, ref)
    # A Down still in the inbox is dropped when drained (the monitor is gone);
    # flush removes one already queued. Draining a DOWN queues it and removes
    # its monitor in one step, so a monitor still active had none queued: no
    # scan of the mailbox then (a call with 10,000 messages waiting).
    if flush and not was_active:
        flush_down(proc, ref)
    return was_active


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
    signals.set_mark(proc, ref)
    signals.activate_alias(rt, proc, ref)
    return ref


def unalias(ref: Ref) -> bool:
    """Deactivate an alias of the calling process; True if it was active."""
    return signals.drop_alias(current_runtime(), current_process(), ref)


def exit(pid: Pid, reason: Any) -> None:
    """Send an exit signal with ``reason`` to ``pid``.

    ``"kill"`` cannot be trapped and kills with reason ``"killed"``; ``"normal"`` is
    ignored by a process that does not trap exits (unless it is the caller);
    a process trapping exits receives ``Exit(sender, reason)``. Sent to the
    caller itself, the exit takes effect at once.
    """
    rt = current_runtime()
    if type(pid) is not Pid:
        raise BadArg(f"exit needs a pid, got {pid!r}")
    signals.exit_signal(rt, current_process_or_none(), pid, reason)


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
    current_runtime().register(name, pid)


def unregister(name: str) -> None:
    """Remove a registered name. BadArg if it is not registered."""
    current_runtime().unregister(name)


def whereis(name: str) -> Pid | None:
    """The pid registered as ``name``, or None."""
    return current_runtime().whereis(name)


def registered() -> list[str]:
    """All registered names."""
    return current_runtime().registered()


# ---------------------------------------------------------------------- introspection


def node() -> Atom:
    """The name of this node (``nonode@nohost`` unless distribution is started)."""
    return current_runtime().distribution.node_name()


def is_alive(pid: Pid) -> bool:
    """True if ``pid`` is a local process that has not exited."""
    if type(pid) is not Pid:
        raise BadArg(f"is_alive needs a pid, got {pid!r}")
    if pid.node is not None:
        raise BadArg(f"is_alive only answers for local pids, got {pid!r}")
    proc = current_runtime().lookup(pid)
    return proc is not None and proc.state < EXITING


def processes() -> list[Pid]:
    """The pids of all live processes."""
    return [p.pid for p in current_runtime().processes()]


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
    * ``sockets``: the beamlet.net sockets it owns, as ``net.sockets()``
      lists them (id, kind, owner, local and peer address, mode, bytes in and
      out, bytes queued).
    """
    if type(pid) is not Pid:
        raise BadArg(f"process_info needs a pid, got {pid!r}")
    rt = current_runtime()
    proc = rt.lookup(pid)
    if proc is None:
        return None
    return introspection.process_info(rt, proc)


def statistics() -> Statistics:
    """Scheduler statistics: utilisation, hand-offs, threads held by runaways."""
    return introspection.statistics(current_runtime())


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
