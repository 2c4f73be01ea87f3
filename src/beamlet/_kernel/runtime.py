"""The runtime: the process table, names, aliases, timers, and the plug-in points.

Theory of operation
-------------------
One :class:`Runtime` runs per OS process (``beamlet.run``). It owns the table
``process number -> Process``, the registry of names, the table of active
aliases, the timer service (receive/sleep timeouts, ``send_after``), the pool
behind ``blocking()``, and -- through :class:`~beamlet._kernel.scheduler.Scheduling`,
which it inherits -- the scheduler threads and their run queue. The rules that
move signals between processes are in signals.py; the traps a process waits
in are in traps.py; api.py is the public surface.

Plug-in points: another layer extends the kernel by setting an object on the
runtime, never by patching methods. ``rt.distribution`` (a
:class:`Distribution`) carries what is addressed to another node; the default,
:class:`NoDistribution`, answers as an unreachable node does (a link gets
``noconnection``, a message is dropped). beamlet.distribution installs a node there.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any, Protocol

from beamlet._kernel import signals
from beamlet._kernel.context import current_scheduler
from beamlet._kernel.kill import (
    CLEARED,
    Cleared,
    TraceKiller,
    clear_async_exc,
    consume_cleared,
    make_killer,
)
from beamlet._kernel.parker import GIL, counter
from beamlet._kernel.poller import Poller
from beamlet._kernel.pool import DEFAULT_THREADS as DEFAULT_BLOCKING_THREADS
from beamlet._kernel.pool import BlockingPool
from beamlet._kernel.process import (
    EXITING,
    RUNNABLE,
    WAITING,
    BadArg,
    Process,
)
from beamlet._kernel.scheduler import Scheduler, Scheduling, default_schedulers
from beamlet._kernel.signals import KILL, NOCONNECTION, NORMAL, DownSig, ExitSig
from beamlet._kernel.signals import MonitorSig as _MonitorSig
from beamlet._kernel.sysmon import Sysmon
from beamlet._kernel.table import PID_BLOCK, ProcessTable, make_table
from beamlet._kernel.throttle import Throttle, TraceThrottle
from beamlet._kernel.timers import PENDING, Timer, TimerService
from beamlet.terms import Atom, Pid, Ref

logger = logging.getLogger("beamlet")

NONODE: Atom = Atom("nonode@nohost")


class Distribution(Protocol):
    """What the kernel needs from a distribution layer (``rt.distribution``).

    Items are messages or signals (signals.py); ``sender`` is the local sending
    process, or None. None of these may block or raise: an unreachable node
    answers as :class:`NoDistribution` does.
    """

    def node_name(self) -> Atom:
        """This node's name (``nonode@nohost`` when not distributed)."""
        ...

    def route(self, pid: Pid, item: Any, sender: Process | None) -> None:
        """A message or signal for a pid on another node."""
        ...

    def route_named(self, name: Any, node: Any, item: Any, sender: Process | None) -> None:
        """A message, monitor or demonitor for the name ``name`` on ``node``."""
        ...

    def route_alias(self, ref: Ref, item: Any, sender: Process | None) -> None:
        """A message to an alias of a process on another node."""
        ...


class NoDistribution:
    """The runtime's distribution when none is started: every other node is
    unreachable (a link or monitor gets ``noconnection``, a message is dropped)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def node_name(self) -> Atom:
        return NONODE

    def route(self, pid: Pid, item: Any, sender: Process | None) -> None:
        signals.answer_dead(self.rt, pid, item, NOCONNECTION)

    def route_named(self, name: Any, node: Any, item: Any, sender: Process | None) -> None:
        if type(item) is _MonitorSig:
            signals.deliver(self.rt, item.sender, DownSig((name, node), item.ref, NOCONNECTION))

    def route_alias(self, ref: Ref, item: Any, sender: Process | None) -> None:
        pass


class Runtime(Scheduling):
    """One beamlet runtime: at most one runs per OS process at a time."""

    # The rules of signals.py, as methods (the distribution calls them too).
    deliver = signals.deliver
    answer_dead = signals.answer_dead
    finish = signals.finish
    exit_pending = signals.exit_pending

    def __init__(
        self,
        schedulers: int | None = None,
        blocking_threads: int = DEFAULT_BLOCKING_THREADS,
        max_threads: int | None = None,
    ) -> None:
        self.init_scheduling(
            schedulers if schedulers is not None else default_schedulers(), max_threads
        )
        self.table: ProcessTable = make_table(sharded=not GIL)
        self.names: dict[Any, Pid] = {}
        self.names_lock = threading.Lock()
        self.sysmon = Sysmon(self)
        self.loop_code = Scheduler.loop.__code__
        self.killer = make_killer(current_scheduler)
        self.async_kills = self.killer.asynchronous
        turns: dict[str, Any] = {
            "stop_at": Scheduler.loop.__code__,
            "adopt": self.adopt_runaway,
            "queued": self.queued,
            "slots": self.n_schedulers,  # without the GIL: runaways on as many cores
        }
        if isinstance(self.killer, TraceKiller) and os.environ.get("BEAMLET_TRACE_THROTTLE") == "1":
            # 3.11: turns by trace function, opt-in (BEAMLET_TRACE_THROTTLE=1).
            # On by default for a day, it made a process that spawns a
            # thousand runaways and kills them from one loop take 15 s to
            # minutes in ~1 run in 4 on a loaded machine (the waiters' lock
            # convoy behind the GIL; docs/process-model.md); off, ~10 ms.
            self.throttle: Throttle = TraceThrottle(self.killer.trampoline, self.killer, **turns)
        else:
            self.throttle = Throttle(killer=self.killer, **turns)
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)
        self.pool = BlockingPool(blocking_threads)
        self.stopping = False
        self.timers = TimerService(self._timer_error)
        # Pid numbers: one counter under the GIL; without it, blocks of
        # PID_BLOCK numbers that each scheduler takes for its own spawns, so a
        # spawn takes no shared lock (_spawn, _outside_pid).
        self.next_pid = counter(1) if GIL else self._outside_pid
        self.next_pid_block = counter(1)
        self.outside_pids = [0, 0]  # [next, end] of the block spawns off schedulers take from
        self.pid_lock = threading.Lock()  # guards outside_pids
        self.next_ref = counter(1)
        self.aliases: dict[Ref, Pid] = {}  # active alias -> its owner
        self.send_timers: dict[Ref, SendTimer] = {}  # send_after timers by their ref
        self._fire_send_callback = self._fire_send
        self.wake_timeout_callback = self.wake_timeout  # one bound method for all receives
        self.send_timers_lock = threading.Lock()
        self.distribution: Distribution = NoDistribution(self)
        # I/O readiness (beamlet.net registers sockets): the schedulers poll it.
        self.poller = Poller()
        self.ports: dict[int, Any] = {}  # open sockets by id (beamlet.net)
        # Bytes in and out of the sockets released so far (beamlet.observer's totals).
        self.io_released = [0, 0]
        self.shutdown_hooks: list[Callable[[], None]] = []  # at_shutdown
        self.main_pid: Pid | None = None
        self.main_done = threading.Event()
        self.main_outcome: tuple[bool, Any] = (False, None)
        self.empty = threading.Condition()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.killer.start()
        self.timers.start()
        for s in self.schedulers:
            s.start()
        self.sysmon.start()

    def shutdown(self, grace: float = 5.0) -> list[Pid]:
        """Kill every process, stop the threads. Returns pids that would not die."""
        self.stopping = True
        self.divert_ok = False  # no more diverting
        while self.diverted:
            self.schedule(self.diverted.popleft())
        for proc in list(self.table.values()):
            self.deliver(proc.pid, ExitSig(None, KILL, False))
        deadline = time.monotonic() + grace
        with self.empty:
            self.empty.wait_for(lambda: not self.table, grace)
        # Processes declared dead while their code ran on (sysmon.py) are out
        # of the table already: sysmon keeps aiming the kill at them until
        # their code stops; give them the rest of the grace period for it.
        while self.killing and time.monotonic() < deadline:
            time.sleep(self.sysmon.tick)
        stuck = [p.pid for p in list(self.table.values())]
        with self.idle_lock, self.sched_lock:
            self.stopped = True
            self.idle.clear()
        self.sysmon.stop()
        self.throttle.stop()
        self.killer.stop()
        for s in self.schedulers:
            s.parker.unpark()
        # One deadline for all: a thread still running the code of a process
        # declared dead would otherwise cost 5 s each.
        joined_by = time.monotonic() + (0 if stuck or self.killing else 5.0)
        for s in self.schedulers:
            if s.thread is not None and s.thread is not threading.current_thread():
                s.thread.join(max(0.0, joined_by - time.monotonic()))
        for fn in reversed(self.shutdown_hooks):
            try:
                fn()
            except Exception:
                logger.exception("beamlet: shutdown hook %r failed", fn)
        self.timers.stop()
        self.pool.shutdown()
        for port in list(self.ports.values()):
            port.release()  # closed ones still flushing (beamlet.net's linger)
        self.poller.close()
        return stuck

    def at_shutdown(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` as the runtime shuts down, once every process is dead
        and the scheduler threads have stopped (last registered, first
        called). A plug-in point: beamlet.aio stops its asyncio loop there."""
        self.shutdown_hooks.append(fn)

    def reset_distribution(self) -> None:
        """The distribution stopped: every other node is unreachable again."""
        self.distribution = NoDistribution(self)

    def _timer_error(self, e: BaseException) -> None:
        logger.error("beamlet timer callback failed", exc_info=e)

    # ------------------------------------------------------------------ processes

    def make_ref(self) -> Ref:
        return Ref._local(self.next_ref())

    def spawn(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        parent: Process | None,
        link: bool = False,
        monitor: bool = False,
        is_main: bool = False,
    ) -> tuple[Pid, Ref | None]:
        if self.stopping:
            raise RuntimeError("the beamlet runtime is shutting down")
        sched = current_scheduler()
        if sched is not None and sched.ident != threading.get_ident():
            sched = None  # a thread running in a context copied from a scheduler's
        if sched is None or parent is None:
            return self._spawn(fn, args, parent, link, monitor, is_main, None)
        # Masked: a kill must not leave a half-made process (kill.py; as in
        # traps.settle, inline: both are hot).
        sched.masked_depth += 1
        try:
            if self.async_kills and (sched.kill_pending or not GIL):
                with sched.kill_lock:
                    try:  # (kill.CLEARED: inline, a C call first)
                        clear_async_exc(sched.ident, CLEARED)
                        consume_cleared()
                    except Cleared:
                        pass
            if GIL or not sched.handed_off:
                return self._spawn(fn, args, parent, link, monitor, is_main, sched)
            # A runaway's thread, free-threaded: the spawn does not count
            # against its turn (Throttle.credit).
            t0 = time.perf_counter()
            try:
                return self._spawn(fn, args, parent, link, monitor, is_main, sched)
            finally:
                self.throttle.credit(sched.ident, time.perf_counter() - t0)
        finally:
            sched.masked_depth -= 1

    def _spawn(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        parent: Process | None,
        link: bool,
        monitor: bool,
        is_main: bool,
        sched: Scheduler | None,
    ) -> tuple[Pid, Ref | None]:
        coro = make_coroutine(fn, args)
        if sched is None or GIL:
            n = self.next_pid()
        else:
            n = sched.pid_next
            if n == sched.pid_end:
                n = self.next_pid_block() * PID_BLOCK
                sched.pid_end = n + PID_BLOCK
            sched.pid_next = n + 1
        pid = Pid(n)
        proc = Process(pid, coro)
        if not GIL:
            # A weak reference, made once and dropped, marks the record as
            # "may have weak references": other threads can then take a
            # reference to it with an atomic add. Without the mark, a record
            # whose owner thread held the only references made every lookup
            # from another scheduler (the table's, on each send) lock the
            # dict (CPython 3.13t's fallback, _Py_TryIncRefShared): skynet
            # 1M with two schedulers spent 4-6 % of its samples spinning there.
            weakref.ref(proc)
        proc.initial_call = fn  # formatted by introspection.initial_call() when asked
        ref = None
        if parent is not None:
            if link:
                proc.links = {parent.pid}
                if parent.links is None:
                    parent.links = set()
                parent.links.add(pid)
            if monitor:
                ref = self.make_ref()
                proc.monitored_by = {ref: parent.pid}
                if parent.monitors is None:
                    parent.monitors = {}
                parent.monitors[ref] = pid
        elif link or monitor:
            coro.close()
            raise RuntimeError("spawn_link/spawn_monitor must be called from a beamlet process")
        self.table[n] = proc
        if is_main:
            self.main_pid = pid
        self.schedule(proc)
        return pid, ref

    def _outside_pid(self) -> int:
        """A pid number for a spawn off the schedulers, free-threaded."""
        with self.pid_lock:
            block = self.outside_pids
            n = block[0]
            if n == block[1]:
                n = self.next_pid_block() * PID_BLOCK
                block[1] = n + PID_BLOCK
            block[0] = n + 1
        return n

    def lookup(self, pid: Pid) -> Process | None:
        """The record of a live local process, or None."""
        if pid.node is not None:
            return None
        return self.table.get(pid.id)

    def processes(self) -> list[Process]:
        return list(self.table.values())

    def forget(self, proc: Process, reason: Any) -> None:
        """signals.finish, last: the process leaves the table."""
        pid = proc.pid
        self.table.pop(pid.id, None)
        if pid == self.main_pid:
            if signals.is_atom(reason, NORMAL):
                self.main_outcome = (True, proc.result)
            else:
                self.main_outcome = (False, reason)
            self.main_done.set()
        if self.stopping and not self.table:
            with self.empty:
                self.empty.notify_all()

    # ------------------------------------------------------------------ names

    def register(self, name: str, pid: Pid) -> None:
        if not isinstance(name, str) or not name:
            raise BadArg(f"a registered name must be a non-empty string, got {name!r}")
        if name == "undefined":
            raise BadArg("'undefined' cannot be registered")
        with self.names_lock:
            if name in self.names:
                raise BadArg(f"{name!r} is already registered to {self.names[name]!r}")
            proc = self.lookup(pid) if type(pid) is Pid else None
            if proc is None:
                raise BadArg(f"cannot register {name!r}: {pid!r} is not a live local process")
            with proc.lock:
                if proc.state >= EXITING:
                    raise BadArg(f"cannot register {name!r}: {pid!r} is not alive")
                if proc.name is not None:
                    raise BadArg(f"{pid!r} is already registered as {proc.name!r}")
                proc.name = name
            self.names[name] = pid

    def unregister(self, name: str) -> None:
        with self.names_lock:
            pid = self.names.pop(name, None)
            if pid is None:
                raise BadArg(f"{name!r} is not registered")
            proc = self.lookup(pid)
            if proc is not None:
                with proc.lock:
                    proc.name = None

    def whereis(self, name: Any) -> Pid | None:
        return self.names.get(name)

    def registered(self) -> list[str]:
        with self.names_lock:
            return list(self.names)

    def release_name(self, name: str, pid: Pid) -> None:
        """A dying process's name goes (if it is still its)."""
        with self.names_lock:
            if self.names.get(name) == pid:
                del self.names[name]

    # ------------------------------------------------------------------ timers

    def wake_timeout(self, timer: Timer) -> None:
        """Timer callback for receive/sleep: wake the process if it still waits
        and its deadline has come. A timer a receive left armed may go off
        before the deadline of a later wait (or during a wait without one):
        it is armed again for that deadline (or forgotten)."""
        proc: Process = timer.arg
        lock = proc.lock
        lock.acquire()
        if proc.state == WAITING and proc.timer is timer:
            deadline = proc.deadline
            if deadline is None:
                lock.release()
                return
            if deadline > time.monotonic():
                try:
                    proc.timer = self.timers.add_at(deadline, self.wake_timeout_callback, proc)
                finally:
                    lock.release()
                return
            proc.state = RUNNABLE
            lock.release()
            self.schedule(proc)
        else:
            lock.release()

    def idle_timer(self, timer: Timer) -> bool:
        """A timer a receive left armed, while its process does not wait on it
        (statistics() does not count it)."""
        if timer.callback is not self.wake_timeout_callback:
            return False
        proc = timer.arg
        return proc is not None and proc.deadline is None

    def send_after(self, seconds: float, dest: Any, msg: Any, ref: Ref) -> None:
        """Arm a timer that sends ``msg`` to ``dest`` (a pid, or a name resolved
        when it fires). One aimed at a local pid goes with that process: it is
        cancelled if the process is not alive, or when it exits (TIMER-1)."""
        t = SendTimer(time.monotonic() + max(0.0, seconds))
        t.callback = self._fire_send_callback  # one bound method for all
        t.arg = dest
        t.msg = msg
        t.ref = ref
        t.state = PENDING
        with self.send_timers_lock:
            self.send_timers[ref] = t
        if type(dest) is Pid and dest.node is None:
            proc = self.table.get(dest.id)
            if proc is not None:
                with proc.lock:  # finish() takes the refs under this lock
                    if proc.state < EXITING:
                        _remember_timer(proc, ref)
                        self.timers.add_timer(t)
                        return
            with self.send_timers_lock:
                self.send_timers.pop(ref, None)
            return
        self.timers.add_timer(t)

    def _pop_send_timer(self, ref: Ref) -> SendTimer | None:
        with self.send_timers_lock:
            t = self.send_timers.pop(ref, None)
            if not self.send_timers:
                self.send_timers = {}  # a dict keeps its table when emptied
        return t

    def _fire_send(self, t: SendTimer) -> None:
        ref, dest, msg = t.ref, t.arg, t.msg
        t.msg = t.arg = t.ref = None
        if ref is None:
            return  # cancelled as it fired
        self._pop_send_timer(ref)
        if type(dest) is Pid:
            self._forget_timer(dest, ref)
        else:
            dest = self.names.get(dest)
        if dest is not None:
            self.deliver(dest, msg)

    def cancel_send_timer(self, ref: Ref) -> float | None:
        """Cancel a send_after timer: the seconds it had left, or None if it had
        fired, been cancelled, or went with its process."""
        t = self._pop_send_timer(ref)
        if t is None:
            return None
        dest = t.arg
        left = self.timers.cancel(t)
        if left is not None:  # (None: it is firing now, and delivers its message)
            t.msg = t.ref = None
        if type(dest) is Pid:
            self._forget_timer(dest, ref)
        return left

    def _forget_timer(self, pid: Pid, ref: Ref) -> None:
        proc = self.table.get(pid.id) if pid.node is None else None
        if proc is None:
            return
        with proc.lock:
            held = proc.send_timers
            if held is None:
                return
            if type(held) is dict:
                held.pop(ref, None)
            elif ref in held:
                held.remove(ref)
            if not held:
                proc.send_timers = None

    def cancel_timers_of(self, proc: Process, send_timers: Any) -> None:
        """A process died: its wait timer goes, and the send_after timers aimed
        at it (``send_timers``, taken from it under its lock) go with it (TIMER-1)."""
        timer = proc.timer
        if timer is not None:
            proc.timer = None
            self.timers.cancel(timer)
        if send_timers:
            for ref in list(send_timers):
                t = self._pop_send_timer(ref)
                if t is not None:
                    self.timers.cancel(t)
                    t.msg = t.ref = None


class SendTimer(Timer):
    """A send_after timer: ``arg`` is the destination; 80 bytes."""

    __slots__ = ("msg", "ref")

    msg: Any
    ref: Ref | None


#: A process's send_after refs are a list up to this many, then a dict.
_TIMER_LIST_MAX = 16


def _remember_timer(proc: Process, ref: Ref) -> None:
    held = proc.send_timers
    if held is None:
        proc.send_timers = [ref]
    elif type(held) is dict:
        held[ref] = None
    elif len(held) < _TIMER_LIST_MAX:
        held.append(ref)
    else:
        proc.send_timers = dict.fromkeys(held)
        proc.send_timers[ref] = None


def make_coroutine(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Create the coroutine of a new process, refusing anything that is not async."""
    if type(fn) is FunctionType and fn.__code__.co_flags & CO_COROUTINE:
        return fn(*args)  # the common case, checked cheaply
    if not callable(fn):
        raise TypeError(f"spawn needs an async function, got {fn!r}")
    if not (
        inspect.iscoroutinefunction(fn)
        or (
            not inspect.isfunction(fn)
            and not inspect.ismethod(fn)
            and inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
        )
    ):
        raise TypeError(
            f"spawn needs an async function (async def), got {getattr(fn, '__qualname__', fn)!r}"
        )
    coro = fn(*args)
    if not inspect.iscoroutine(coro):
        raise TypeError(f"{fn!r} did not return a coroutine")
    return coro


__all__ = ["Distribution", "NoDistribution", "Runtime"]
