"""The runtime: process table, run queue, scheduler threads, exits, shutdown.

Theory of operation
-------------------
``Runtime`` owns a table ``process number -> Process``, a registry of names and
one run queue shared by N scheduler threads (one per core by default). A
scheduler pops a runnable process, makes it the thread's current process and
resumes its coroutine with ``send(None)``; the coroutine runs until it reaches a
kernel trap (``receive``, ``sleep``, ...) which yields one of the trap codes of
:mod:`beamlet._kernel.process` back to the scheduler:

* ``WAIT``: block. Under the process's lock the scheduler parks it in state
  WAITING unless a signal (or its timer) arrived meanwhile, in which case it goes
  straight back on the run queue. A sender that finds a WAITING process makes it
  RUNNABLE and queues it: there are no lost wake-ups, because both sides decide
  under the same lock.
* ``YIELD``: back of the run queue.
* ``DIE``: the process received an exit signal it must die of; the scheduler
  closes its coroutine (``GeneratorExit`` at the await point, so ``finally``
  blocks run) and finishes it.

When the coroutine returns or raises, the scheduler *finishes* the process: it
is marked EXITING under its lock (from then on, senders see it as dead), the
signals still in its inbox are answered as a dead process answers them (a link
gets ``noproc``, a monitor a ``noproc`` DOWN), and exit signals go to its links
and DOWN signals to its monitors. Then the number is removed from the table.

Idle schedulers park on their own :class:`Parker`. A push wakes one idle
scheduler only when it would otherwise wait: when the pusher is not a scheduler
(the timer thread, another OS thread), or when the queue already holds work
beyond what the pushing scheduler is about to take itself. A token passed round
a ring therefore stays on one thread instead of bouncing between threads.

Remote pids (``pid.node is not None``) are handed to ``Runtime.remote``, a hook
the distribution layer installs; without it, a remote link or monitor gets
``noconnection`` at once and remote messages are dropped.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import inspect
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from inspect import CO_COROUTINE
from types import FunctionType, TracebackType
from typing import Any

from beamlet._kernel import process as P
from beamlet._kernel.kill import NO_EXC, clear_async_exc, make_killer, thread_state
from beamlet._kernel.parker import GIL, Parker, counter
from beamlet._kernel.pool import DEFAULT_THREADS as DEFAULT_BLOCKING_THREADS
from beamlet._kernel.pool import BlockingPool
from beamlet._kernel.process import NOTHING, Down, Exit, Process, ProcessExit, Sig
from beamlet._kernel.sysmon import Sysmon, thread_cpu_clock
from beamlet._kernel.throttle import Throttle
from beamlet._kernel.timers import PENDING, Timer, TimerService
from beamlet.terms import Atom, Pid, Ref

logger = logging.getLogger("beamlet")

#: OS priority (nice) of a thread while a runaway process holds it.
RUNAWAY_NICE = 19

#: Default cap on scheduler threads, the ones runaway processes keep included
#: (``run(max_threads=)``): each runaway holds a thread until it yields or dies.
DEFAULT_MAX_THREADS = 2048

NORMAL = Atom("normal")
KILL = Atom("kill")
KILLED = Atom("killed")
NOPROC = Atom("noproc")
NOCONNECTION = Atom("noconnection")
SHUTDOWN = Atom("shutdown")

# The scheduler running on this thread. A ContextVar rather than a
# threading.local: reading it costs a third as much, and the hot loop then only
# stores ``scheduler.current``. Each scheduler thread sets it once in its own
# context; other threads see None.
_scheduler_var: contextvars.ContextVar[Scheduler | None] = contextvars.ContextVar(
    "beamlet_scheduler", default=None
)
current_scheduler = _scheduler_var.get

_RUNNABLE = P.RUNNABLE
_RUNNING = P.RUNNING
_WAITING = P.WAITING
_EXITING = P.EXITING
_DEAD = P.DEAD
_WAIT = P.WAIT
_YIELD = P.YIELD
_DIE = P.DIE
_SIG_EXIT = P.SIG_EXIT
_SIG_LINK = P.SIG_LINK
_SIG_UNLINK = P.SIG_UNLINK
_SIG_MONITOR = P.SIG_MONITOR
_SIG_DEMONITOR = P.SIG_DEMONITOR
_SIG_DOWN = P.SIG_DOWN
_SIG_MARK = P.SIG_MARK
_SIG_ALIAS_MSG = P.SIG_ALIAS_MSG

_current_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def default_schedulers() -> int:
    """One scheduler per core where threads run in parallel (free-threaded
    CPython); one under the GIL, where a second scheduler thread only adds
    contention (measured: ping-pong 2.3 vs 3.5 µs, skynet 7.3 vs 8.7 s, spawn
    5.3 vs 6.7 µs) and sysmon's hand-off already supplies a thread whenever a
    process holds one."""
    return (os.cpu_count() or 1) if not GIL else 1


def current_runtime() -> Runtime:
    rt = _current_runtime
    if rt is None:
        raise RuntimeError("no beamlet runtime is running (start one with beamlet.run(main))")
    return rt


def current_process() -> Process:
    proc = current_process_or_none()
    if proc is None:
        raise RuntimeError("not called from a beamlet process")
    return proc


def current_process_or_none() -> Process | None:
    s = _scheduler_var.get()
    if s is None or s.ident != threading.get_ident():
        return None
    return s.current


class Scheduler:
    """One scheduler thread."""

    __slots__ = (
        "closing",
        "cpu_clock",
        "cpu_seen",
        "current",
        "first",
        "handed_off",
        "ident",
        "index",
        "kill_lock",
        "kill_pending",
        "masked",
        "native_id",
        "parker",
        "rt",
        "runaway_code",
        "seen",
        "seen_reductions",
        "stuck_for",
        "thread",
        "tstate",
    )

    def __init__(self, rt: Runtime, index: int) -> None:
        self.rt = rt
        self.index = index
        self.parker = Parker()
        self.thread: threading.Thread | None = None
        # The process it runs or ran last (sysmon: same process, same
        # reductions, still RUNNING = it has not yielded since).
        self.current: Process | None = None
        self.ident = 0
        self.tstate = 0  # its PyThreadState (kill.TraceKiller)
        self.cpu_clock: int | None = None  # its thread's CPU-time clock (sysmon charges it)
        self.cpu_seen = 0.0
        self.handed_off = False  # replaced by another thread while its process ran on
        self.first: Process | None = None  # a diverted process to run first (Runtime.divert)
        self.runaway_code: Any = None  # the code its runaway runs (Runtime.runaway_codes)
        # Killing the running process (kill.py): the killer holds kill_lock.
        self.kill_lock = threading.Lock()
        self.kill_pending = False
        self.masked = 0  # >0 while the process runs a kernel section that must not be cut
        self.closing = False  # running the finally blocks of a process that dies
        # sysmon's private bookkeeping
        self.seen: Process | None = None
        self.seen_reductions = 0
        self.stuck_for = 0.0

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.loop, name=f"beamlet-scheduler-{self.index}", daemon=True
        )
        self.thread.start()

    def loop(self) -> None:
        """Run processes until the runtime stops. The kernel's hot loop."""
        rt = self.rt
        popleft = rt.runq.popleft
        _scheduler_var.set(self)
        self.ident = threading.get_ident()
        self.native_id = threading.get_native_id()
        self.tstate = thread_state()
        self.cpu_clock = thread_cpu_clock(self.ident)
        finish = rt.finish
        schedule = rt.schedule
        asynchronous_kills = rt.killer.asynchronous
        runaway_codes = rt.runaway_codes
        runq = rt.runq
        free_threaded = not GIL
        kill_lock = self.kill_lock
        while True:
            proc = self.first
            if proc is not None:
                # Started (or woken as a spare) for a process that runs a known
                # runaway's code: it runs here as a runaway from the start.
                self.first = None
                rt.runaway_started(self)
            else:
                if self.handed_off:
                    if self.retire():
                        return
                    continue  # rejoined, or woken as a spare (maybe with a first process)
                try:
                    proc = popleft()
                except IndexError:
                    if self.idle():
                        return
                    continue
                if runaway_codes and runq and proc.coro.cr_code in runaway_codes and rt.divert_ok:
                    # It runs the code of a process that never yields, and work
                    # waits behind it: it gets a thread of its own (sysmon
                    # starts one) instead of holding this one.
                    rt.divert(proc)
                    continue
            self.current = proc
            proc.state = _RUNNING
            # Signals that came while it was queued (a kill sent before it first
            # ran) take effect before its code runs. Paired with the re-read of
            # the state in Runtime.deliver: one of the two sees the other.
            if (proc.inbox is not None or proc.doom is not None) and self.doomed(proc):
                continue
            proc.reductions += 1
            try:
                trap = proc.coro.send(None)
                exc = None
            except BaseException as e:
                trap = None
                exc = e
            # The process has stopped running on this thread. No Python frame
            # may be entered before a kill aimed at it is settled (kill.py): an
            # injected exception still pending would go off in it.
            if free_threaded:
                # Without the GIL, clearing ``current`` then reading
                # ``kill_pending`` could pass kill_running setting the one and
                # reading the other (store-load reordering): both would miss.
                # Under kill_lock, as there, one sees the other.
                with kill_lock:
                    self.current = None
                    pending = self.kill_pending
            else:
                self.current = None
                pending = self.kill_pending
            if pending:
                with self.kill_lock:
                    if asynchronous_kills:
                        clear_async_exc(self.ident, NO_EXC)  # a C call, no frame
                    self.kill_pending = False
                rt.killer.settle(self)
                if proc.state >= _EXITING:
                    rt.bury_zombie(proc, exc)
                    continue
            if exc is None:
                if trap == _WAIT:
                    lock = proc.lock
                    lock.acquire()
                    timer = proc.timer
                    if proc.inbox is None and (timer is None or timer.state == 0):
                        proc.state = _WAITING
                        lock.release()
                    else:
                        proc.state = _RUNNABLE
                        lock.release()
                        schedule(proc)
                elif trap == _YIELD:
                    proc.state = _RUNNABLE
                    schedule(proc)
                else:
                    self.close(proc, trap)
            elif type(exc) is StopIteration:
                if proc.pid == rt.main_pid:
                    proc.result = exc.value
                finish(proc, proc.doom if proc.doom is not None else NORMAL)
            elif proc.doom is not None:
                # Killed (an exit signal, or an AsyncKill aimed at it). The
                # kill may have fired just after the coroutine yielded, in
                # which case it is still suspended: close it.
                if proc.coro.cr_frame is not None:
                    self.close(proc, _DIE)
                else:
                    finish(proc, proc.doom)
            elif isinstance(exc, ProcessExit):
                finish(proc, exc.reason)
            else:
                if proc.pid != rt.main_pid:
                    log_crash(proc, exc)
                finish(proc, exc)

    def doomed(self, proc: Process) -> bool:
        """Before resuming ``proc``: apply the signals it got while queued; if it
        must die of one, close it instead (it does not run). True if it died."""
        if proc.inbox is not None:
            # Masked: kernel code in the scheduler's context, not the process's
            # (a namedtuple's __new__ made by exec counts as process code).
            self.masked += 1
            try:
                self.rt._drain(proc)
            finally:
                self.masked -= 1
        if proc.doom is None:
            return False
        self.close(proc, _DIE)
        with self.kill_lock:  # as in loop
            self.current = None
            pending = self.kill_pending
        if pending:
            self.settle_kill()
        return True

    def settle_kill(self) -> None:
        """Forget a kill aimed at the process this thread ran (kill.py)."""
        with self.kill_lock:
            if self.rt.async_kills:
                clear_async_exc(self.ident, NO_EXC)
            self.kill_pending = False
        self.rt.killer.settle(self)

    def close(self, proc: Process, trap: Any) -> None:
        """Close the coroutine of a suspended process that must die, then finish it.

        Its ``finally`` blocks run (``GeneratorExit`` at its await point) as the
        process itself: ``self()`` and ``send`` work there, waiting does not.
        """
        rt = self.rt
        if trap != _DIE:
            proc.doom = RuntimeError(
                f"a beamlet process awaited something that is not a beamlet trap: {trap!r} "
                "(asyncio objects cannot be awaited in a beamlet process)"
            )
            log_crash(proc, proc.doom)
        reason = proc.doom
        self.current = proc
        self.closing = True
        try:
            proc.coro.close()
        except BaseException as e:
            logger.warning(
                "process %r ignored its exit (%r) and raised while closing: %r", proc.pid, reason, e
            )
        finally:
            self.closing = False
            self.current = None
        rt.finish(proc, reason)

    def retire(self) -> bool:
        """After a hand-off: rejoin the active schedulers, or park as a spare.

        Returns True when the runtime has stopped.
        """
        rt = self.rt
        rt.throttle.remove(self.ident)
        rt.forget_runaway_code(self)
        try:
            if os.getpriority(os.PRIO_PROCESS, self.native_id) != rt.nice:
                os.setpriority(os.PRIO_PROCESS, self.native_id, rt.nice)
        except OSError:
            # Raising a priority back needs privileges: a thread that cannot
            # get its priority back leaves the pool instead.
            with rt.sched_lock:
                self.handed_off = False
                rt.schedulers = [s for s in rt.schedulers if s is not self]
            self.leave_no_work_behind()
            return True
        with rt.sched_lock:
            self.handed_off = False
            if rt.active < rt.n_schedulers:
                rt.active += 1
                return False
            rt.spares.append(self)
        self.current = None
        self.leave_no_work_behind()
        self.parker.park()
        return rt.stopped

    def leave_no_work_behind(self) -> None:
        """Before this thread stops taking work: what it queued last (the DOWN
        that woke a watcher as its runaway died) was pushed without waking
        anyone, since a scheduler comes back for its own pushes. Wake one."""
        rt = self.rt
        if rt.runq:
            rt.wake_idle()
            rt.sysmon.poke()

    def idle(self) -> bool:
        """Park until there is work. Returns True when the runtime has stopped."""
        rt = self.rt
        if rt.active > rt.n_schedulers:
            # One of the extra threads a burst brought in (sysmon): the queue
            # is empty, so it parks as a spare instead.
            with rt.sched_lock:
                extra = rt.active > rt.n_schedulers and not rt.stopped
                if extra:
                    rt.active -= 1
                    rt.spares.append(self)
            if extra:
                self.current = None
                self.leave_no_work_behind()
                self.parker.park()
                return rt.stopped
        with rt.idle_lock:
            if rt.stopped:
                return True
            rt.idle.append(self)
        # A push by a non-scheduler thread appends, then takes idle_lock to look
        # for an idle scheduler: either it saw us above, or we see its push here.
        if rt.runq:
            poke = False
            with rt.idle_lock:
                left = self in rt.idle
                if left:
                    rt.idle.remove(self)
                    poke = rt.sysmon.leaving_idle()
            if left:
                if poke:
                    rt.sysmon.poke()
                return False
            # Someone already popped us from idle and unparked us: consume it.
        self.current = None
        self.parker.park()  # whoever takes us off the idle list pokes sysmon if need be
        return False


class Runtime:
    """One beamlet runtime: at most one runs per OS process at a time."""

    def __init__(
        self,
        schedulers: int | None = None,
        blocking_threads: int = DEFAULT_BLOCKING_THREADS,
        max_threads: int | None = None,
    ) -> None:
        n = schedulers if schedulers is not None else default_schedulers()
        if n < 1:
            raise ValueError("schedulers must be at least 1")
        self.table: dict[int, Process] = {}
        self.names: dict[Any, Pid] = {}
        self.names_lock = threading.Lock()
        # The run queue needs no lock: deque.append/popleft are atomic (and
        # documented thread-safe, free-threaded builds included).
        self.runq: collections.deque[Process] = collections.deque()
        self.idle: list[Scheduler] = []
        self.idle_lock = threading.Lock()
        self.n_schedulers = n
        self.schedulers = [Scheduler(self, i) for i in range(n)]
        self.active = n  # schedulers taking work (not handed off, not spare)
        self.spares: list[Scheduler] = []
        self.sched_lock = threading.Lock()
        self.warned_cap = False
        # Code objects runaways run now (-> how many), and processes that run
        # such code waiting for a thread of their own (Runtime.divert).
        self.runaway_codes: dict[Any, int] = {}
        self.diverted: collections.deque[Process] = collections.deque()
        self.divert_ok = True  # False once max_threads is reached
        if max_threads is not None and max_threads < n:
            raise ValueError("max_threads must be at least the number of schedulers")
        # Scheduler threads in all, runaways' included: each runaway keeps one.
        self.max_threads = (
            max_threads if max_threads is not None else max(DEFAULT_MAX_THREADS, 4 * n)
        )
        self.sysmon = Sysmon(self)
        self.loop_code = Scheduler.loop.__code__
        self.killer = make_killer(current_scheduler)
        self.async_kills = self.killer.asynchronous
        self.throttle = Throttle(
            stop_at=Scheduler.loop.__code__, killer=self.killer, adopt=self.adopt_runaway
        )
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)
        self.pool = BlockingPool(blocking_threads)
        # Processes an AsyncKill was aimed at, while they still run:
        # proc -> [first injection, last injection, attempts] (sysmon retries).
        self.killing: dict[Process, list[Any]] = {}
        self.stopped = False
        self.stopping = False
        self.timers = TimerService(self._timer_error)
        self.next_pid = counter(1)
        self.next_ref = counter(1)
        self.aliases: dict[Ref, Pid] = {}  # active alias -> its owner
        self.send_timers: dict[Ref, SendTimer] = {}  # send_after timers by their ref
        self._fire_send_callback = self._fire_send
        self.send_timers_lock = threading.Lock()
        # Distribution hooks (installed by beamlet.dist; see docs/distribution.md):
        # remote(pid, item, sender) carries a message or Sig to a remote pid;
        # remote_named(name, node, item, sender) to a name on another node.
        self.remote: Callable[[Pid, Any, Any], None] = self._no_distribution
        self.remote_named: Callable[[Any, Any, Any, Any], None] = self._no_distribution_named
        # remote_alias(ref, message, sender): a message to an alias on another node.
        self.remote_alias: Callable[[Ref, Any, Any], None] = lambda ref, item, sender: None
        self.main_pid: Pid | None = None
        self.main_done = threading.Event()
        self.main_outcome: tuple[bool, Any] = (False, None)
        self.empty = threading.Condition()
        self.local_node: Callable[[], Atom] = lambda: Atom("nonode@nohost")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.killer.start()
        self.timers.start()
        for s in self.schedulers:
            s.start()
        self.sysmon.start()

    def hand_off(self, s: Scheduler) -> None:
        """sysmon found ``s`` stuck in one process: put another thread in its place."""
        with self.sched_lock:
            if s.handed_off or self.stopped:
                return
            s.handed_off = True
            self.active -= 1
            self.sysmon.hand_offs += 1
            code = getattr(s.current.coro, "cr_code", None) if s.current is not None else None
            if code is not None and s.runaway_code is None:
                s.runaway_code = code
                self.runaway_codes[code] = self.runaway_codes.get(code, 0) + 1
            # Under the GIL every runnable thread competes for it: make it
            # change hands more often, and lower the runaway's OS priority so
            # the others win it more often. Both before the new thread starts:
            # Thread.start() itself waits for the GIL.
            self.sysmon.tune_switch_interval(True)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, s.native_id, RUNAWAY_NICE)
            self.throttle.add(s.ident)
            self._bring_in(self.n_schedulers - self.active)

    def forget_runaway_code(self, s: Scheduler) -> None:
        code = s.runaway_code
        if code is None:
            return
        s.runaway_code = None
        with self.sched_lock:
            left = self.runaway_codes.get(code, 1) - 1
            if left > 0:
                self.runaway_codes[code] = left
            else:
                self.runaway_codes.pop(code, None)

    def divert(self, proc: Process) -> None:
        """A scheduler popped ``proc``, which runs a known runaway's code, with
        work waiting behind it: sysmon gives it a thread of its own."""
        self.diverted.append(proc)
        self.sysmon.poke()

    def start_diverted(self, most: int) -> int:
        """sysmon: give up to ``most`` diverted processes a thread each (spares
        first). Past ``max_threads`` they go back to the run queue."""
        n = 0
        while n < most and self.diverted:
            with self.sched_lock:
                if self.stopped:
                    return n
                try:
                    proc = self.diverted.popleft()
                except IndexError:
                    break
                if self.spares:
                    s = self.spares.pop()
                    s.handed_off = True
                    s.first = proc
                    s.parker.unpark()
                elif len(self.schedulers) < self.max_threads:
                    s = Scheduler(self, len(self.schedulers))
                    s.handed_off = True
                    s.first = proc
                    self.schedulers = [*self.schedulers, s]
                    s.start()
                else:
                    # At the cap: no more diverting; they run where they are.
                    self.divert_ok = False
                    self.schedule(proc)
                    while self.diverted:
                        self.schedule(self.diverted.popleft())
                    break
            n += 1
        return n

    def runaway_started(self, s: Scheduler) -> None:
        """In a thread started for a diverted process, before it runs: it is a
        runaway's thread from the start (low priority, takes turns)."""
        self.sysmon.tune_switch_interval(True)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, s.native_id, RUNAWAY_NICE)
        self.throttle.add(s.ident)

    def adopt_runaway(self, ident: int) -> None:
        """throttle.py: scheduler thread ``ident`` runs a known runaway's code
        while work waits: hand it off now rather than after a slice."""
        s = _scheduler_var.get()
        if (
            s is None
            or s.ident != ident
            or s.handed_off
            or s.masked
            or s.closing
            or s.current is None
            or not self.runq
            or getattr(s.current.coro, "cr_code", None) not in self.runaway_codes
        ):
            return
        self.hand_off(s)

    def burst(self, k: int) -> int:
        """sysmon: runaways keep turning up while work waits: let ``k`` more
        threads take work for a while (they park as spares when the queue is
        empty). Returns how many came."""
        with self.sched_lock:
            if self.stopped:
                return 0
            return self._bring_in(k)

    def _bring_in(self, k: int) -> int:
        """``k`` more threads take work: spares first, then new threads, up to
        ``max_threads``. The caller holds ``sched_lock``."""
        n = 0
        while n < k:
            if self.spares:
                spare = self.spares.pop()
                self.active += 1
                spare.parker.unpark()
            elif len(self.schedulers) < self.max_threads:
                spare = Scheduler(self, len(self.schedulers))
                self.schedulers = [*self.schedulers, spare]
                self.active += 1
                spare.start()
            else:
                if not self.warned_cap:
                    self.warned_cap = True
                    logger.warning(
                        "beamlet: %d scheduler threads, the cap (run(max_threads=)): queued "
                        "processes wait until a runaway process yields or dies",
                        len(self.schedulers),
                    )
                break
            n += 1
        return n

    def shutdown(self, grace: float = 5.0) -> list[Pid]:
        """Kill every process, stop the threads. Returns pids that would not die."""
        self.stopping = True
        self.divert_ok = False  # no more diverting
        while self.diverted:
            self.schedule(self.diverted.popleft())
        for proc in list(self.table.values()):
            self.deliver(proc.pid, Sig(_SIG_EXIT, None, KILL, False))
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
        self.timers.stop()
        self.pool.shutdown()
        return stuck

    def _timer_error(self, e: BaseException) -> None:
        logger.error("beamlet timer callback failed", exc_info=e)

    # ------------------------------------------------------------------ refs & pids

    def make_ref(self) -> Ref:
        return Ref._local(self.next_ref())

    # ------------------------------------------------------------------ scheduling

    def schedule(self, proc: Process) -> None:
        """Put a RUNNABLE process on the run queue, waking a scheduler if needed.

        From a scheduler thread the push is lock-free, and it wakes an idle
        scheduler only if the queue holds more than the pushing scheduler is
        about to take itself; a racy look at ``idle`` is fine there, since the
        pusher comes back to the queue and nothing can be stranded. From any
        other thread an idle scheduler is looked for under ``idle_lock``, which
        pairs with :meth:`Scheduler.idle` so that a wake-up is never lost.
        """
        self.runq.append(proc)
        if self.idle or _scheduler_var.get() is None:
            self.pushed()

    def pushed(self) -> None:
        """After a push: wake an idle scheduler if the push calls for one."""
        if _scheduler_var.get() is None or len(self.runq) > 1:
            self.wake_idle()

    def wake_idle(self) -> None:
        with self.idle_lock:
            if not self.idle:
                return
            s = self.idle.pop()
            poke = self.sysmon.leaving_idle()
        s.parker.unpark()
        if poke:
            self.sysmon.poke()

    # ------------------------------------------------------------------ killing

    def exit_running(self, proc: Process, sig: Sig) -> None:
        """An exit signal reached a process while it runs: if it is to die of it,
        stop its code now rather than at its next schedule point."""
        reason = sig.a
        if not sig.b and is_atom(reason, KILL):
            reason = KILLED
        elif proc.trap_exit or is_atom(reason, NORMAL):
            return
        elif sig.b and not self.linked_now(proc, sig.sender):
            return
        self.kill_running(proc, reason)

    def exit_pending(self, proc: Process) -> None:
        """sysmon: ``proc`` has run for a tick without draining its inbox; act on
        an exit signal in it that must stop it now."""
        with proc.lock:
            pending = [it for it in proc.inbox or () if type(it) is Sig and it.kind == _SIG_EXIT]
        for sig in pending:
            if proc.doom is not None or proc.state != _RUNNING:
                return
            self.exit_running(proc, sig)

    def linked_now(self, proc: Process, other: Pid) -> bool:
        """Whether ``proc`` is linked to ``other`` once the signals it has not
        drained yet (a runaway drains nothing) are applied."""
        linked = proc.links is not None and other in proc.links
        with proc.lock:
            pending = list(proc.inbox or ())
        for it in pending:
            if type(it) is Sig and it.sender == other:
                if it.kind == _SIG_LINK:
                    linked = True
                elif it.kind == _SIG_UNLINK:
                    linked = False
        return linked

    def running_on(self, proc: Process) -> Scheduler | None:
        """The scheduler whose thread runs ``proc`` right now, if any."""
        for s in self.schedulers:
            if s.current is proc:
                return s
        return None

    def kill_running(self, proc: Process, reason: Any) -> bool:
        """Make ``proc``, running on some thread now, die of ``reason``: aim an
        AsyncKill at its code (kill.py) and have sysmon pursue it until its code
        stops. False if it does not run on a thread (its next trap, or the check
        before it is resumed, applies the signal instead)."""
        s = self.running_on(proc)
        if s is None:
            return False
        with s.kill_lock:
            s.kill_pending = True  # before the check: pairs with Scheduler.loop
            if s.current is not proc or s.closing:
                return False
            if proc.state != _RUNNING and not proc.zombie:
                return False
            if proc.doom is None:
                proc.doom = reason
            aimed = not s.masked and self.killer.aim(s, proc)
        now = time.monotonic()
        entry = self.killing.get(proc)
        if entry is None:
            self.killing[proc] = [now, now, 1]
            self.sysmon.poke()
        else:
            entry[1] = now
            entry[2] += 1
        if aimed:
            self.throttle.wake(s.ident)
            if self.sysmon.saved_interval is None:
                # Under the GIL the victim's thread must get the interpreter
                # to raise: offer it now rather than at the end of our switch
                # interval. (Not while runaways exist: the interval is short
                # then, and with a thousand of them every sleep(0) would cost
                # the killer its turn for a whole round of them.)
                time.sleep(0)
        return True

    def bury_zombie(self, proc: Process, exc: BaseException | None) -> None:
        """The code of a process sysmon declared dead has stopped: drop it."""
        coro = proc.coro
        proc.coro = None
        if exc is None and coro is not None:
            with contextlib.suppress(BaseException):
                coro.close()
        logger.warning("process %r, declared dead while it ran, has stopped", proc.pid)

    # ------------------------------------------------------------------ spawning

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
        sched = _scheduler_var.get()
        if sched is None or parent is None:
            return self._spawn(fn, args, parent, link, monitor, is_main)
        # Masked: a kill must not leave a half-made process (kill.py).
        sched.masked += 1
        try:
            if self.async_kills and (sched.kill_pending or not GIL):
                with sched.kill_lock:
                    clear_async_exc(sched.ident, NO_EXC)
            return self._spawn(fn, args, parent, link, monitor, is_main)
        finally:
            sched.masked -= 1

    def _spawn(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        parent: Process | None,
        link: bool,
        monitor: bool,
        is_main: bool,
    ) -> tuple[Pid, Ref | None]:
        coro = make_coroutine(fn, args)
        n = self.next_pid()
        pid = Pid(n)
        proc = Process(pid, coro)
        proc.initial_call = fn  # formatted by initial_call() when asked
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

    def lookup(self, pid: Pid) -> Process | None:
        if pid.node is not None:
            return None
        return self.table.get(pid.id)

    # ------------------------------------------------------------------ signals

    def deliver(self, pid: Pid, item: Any, sender: Process | None = None) -> None:
        """Append a message or signal to ``pid``'s inbox, waking it if it waits."""
        if pid.node is not None:
            self.remote(pid, item, sender)
            return
        proc = self.table.get(pid.id)
        if proc is None:
            self.answer_dead(pid, item)
            return
        # ``with`` and C-level appends only: a sender may itself be killed
        # asynchronously, and must never leave the lock held or a woken
        # process off the run queue.
        with proc.lock:
            state = proc.state
            if state == _WAITING:
                # A waiting process has an empty inbox: hand the signal over in
                # a slot the process reads without a lock once it runs.
                proc.handoff = item
                proc.state = _RUNNABLE
                self.runq.append(proc)
            elif state < _EXITING:
                inbox = proc.inbox
                if inbox is None:
                    proc.inbox = [item]
                else:
                    inbox.append(item)
        if state == _WAITING:
            if self.idle or _scheduler_var.get() is None:
                self.pushed()
        elif state >= _EXITING:
            self.answer_dead(pid, item)
        elif type(item) is Sig and item.kind == _SIG_EXIT and proc.state == _RUNNING:
            # The state read again after the append: a process a scheduler
            # starts now either sees the signal before it runs (Scheduler.loop)
            # or is seen running here.
            self.exit_running(proc, item)

    def drop_alias(self, proc: Process, ref: Ref, only_with_monitor: bool = False) -> bool:
        """Deactivate ``proc``'s alias ``ref`` (from its own context); True if it was
        active. ``only_with_monitor``: only an alias made to go with its monitor
        (``monitor(..., alias="demonitor")``), as its monitor goes."""
        aliases = proc.aliases
        if not aliases or ref not in aliases or (only_with_monitor and not aliases[ref]):
            return False
        del aliases[ref]
        self.aliases.pop(ref, None)
        return True

    def add_monitor(self, target: Pid, ref: Ref, watcher: Any) -> bool:
        """Set up a monitor of a local process at once; False if it is not alive.

        The monitor signal's arrival, done by the watcher under the target's
        lock: the target need not run (or be woken) to take note, and its death
        (:meth:`finish`, which marks it EXITING under the same lock before it
        reads ``monitored_by``) reports to every monitor added before. A
        ``watcher`` is a pid, or ``(pid, name)`` for a monitor by name.
        """
        proc = self.table.get(target.id)
        if proc is None:
            return False
        with proc.lock:
            if proc.state >= _EXITING:
                return False
            mb = proc.monitored_by
            if mb is None:
                proc.monitored_by = {ref: watcher}
            else:
                mb[ref] = watcher
        return True

    def remove_monitor(self, target: Pid, ref: Ref) -> None:
        """Forget a monitor of a local process (the demonitor signal's arrival)."""
        proc = self.table.get(target.id)
        if proc is not None:
            with proc.lock:
                mb = proc.monitored_by
                if mb is not None:
                    mb.pop(ref, None)

    def answer_dead(self, pid: Pid, item: Any, reason: Atom = NOPROC) -> None:
        """What a dead (or unreachable) process answers to a signal."""
        if type(item) is not Sig:
            return
        kind = item.kind
        if kind == _SIG_LINK:
            self.deliver(item.sender, Sig(_SIG_EXIT, pid, reason, True))
        elif kind == _SIG_MONITOR:
            self.deliver(
                item.sender, Sig(_SIG_DOWN, item.b if item.b is not None else pid, item.a, reason)
            )

    def _no_distribution(self, pid: Pid, item: Any, sender: Process | None) -> None:
        self.answer_dead(pid, item, NOCONNECTION)

    def _no_distribution_named(self, name: Any, node: Any, item: Any, sender: Any) -> None:
        if type(item) is Sig and item.kind == _SIG_MONITOR:
            self.deliver(item.sender, Sig(_SIG_DOWN, (name, node), item.a, NOCONNECTION))

    # ------------------------------------------------------------------ send_after

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
                    if proc.state < _EXITING:
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

    def wake_timeout(self, timer: Timer) -> None:
        """Timer callback for receive/sleep: wake the process if it still waits."""
        proc: Process = timer.arg
        lock = proc.lock
        lock.acquire()
        if proc.state == _WAITING and proc.timer is timer:
            proc.state = _RUNNABLE
            lock.release()
            self.schedule(proc)
        else:
            lock.release()

    def drain(self, proc: Process) -> None:
        """Move the inbox into the process: messages to its queue, signals applied.

        Runs in the process's own context only. May set ``proc.doom``.
        """
        sched = _scheduler_var.get()
        if sched is None:
            self._drain(proc)
            return
        # Masked: a kill must not cut signal handling in half (kill.py).
        sched.masked += 1
        try:
            if self.async_kills and (sched.kill_pending or not GIL):
                with sched.kill_lock:
                    clear_async_exc(sched.ident, NO_EXC)
            self._drain(proc)
        finally:
            sched.masked -= 1

    def _drain(self, proc: Process) -> None:
        first = proc.handoff
        if first is not NOTHING:
            proc.handoff = NOTHING
            if proc.inbox is None:
                items = [first]
            else:
                with proc.lock:
                    rest = proc.inbox or []
                    proc.inbox = None
                items = [first, *rest]
        else:
            with proc.lock:
                taken = proc.inbox
                proc.inbox = None
            if taken is None:
                return
            items = taken
        q = proc.queue
        if Sig not in map(type, items):  # only messages (a C-level scan): the usual case
            if q is None:
                proc.queue = collections.deque(items)
            else:
                q.extend(items)
            return
        if q is None:
            q = proc.queue = collections.deque()
        for it in items:
            if type(it) is not Sig:
                q.append(it)
                continue
            kind = it.kind
            if kind == _SIG_EXIT:
                self.handle_exit(proc, it.sender, it.a, it.b, q)
            elif kind == _SIG_DOWN:
                mons = proc.monitors
                if mons is not None and it.a in mons:
                    del mons[it.a]
                    self.drop_alias(proc, it.a, only_with_monitor=True)
                    q.append(Down(it.a, it.sender, it.b))
            elif kind == _SIG_LINK:
                if proc.links is None:
                    proc.links = set()
                proc.links.add(it.sender)
            elif kind == _SIG_UNLINK:
                if proc.links is not None:
                    proc.links.discard(it.sender)
            elif kind == _SIG_MONITOR:  # from another node (local ones: add_monitor)
                # A monitor by name remembers the name, to report it in DOWN.
                watcher = it.sender if it.b is None else (it.sender, it.b)
                with proc.lock:  # local watchers add theirs from their own threads
                    if proc.monitored_by is None:
                        proc.monitored_by = {}
                    proc.monitored_by[it.a] = watcher
            elif kind == _SIG_DEMONITOR:
                with proc.lock:
                    if proc.monitored_by is not None:
                        proc.monitored_by.pop(it.a, None)
            elif kind == _SIG_MARK:
                if proc.mark_ref is it.a:
                    proc.mark_pos = len(q)
            elif kind == _SIG_ALIAS_MSG:
                # Checked here, in the owner's own order of events: once
                # unalias() has returned, nothing sent to the alias gets in.
                if proc.aliases is not None and it.a in proc.aliases:
                    q.append(it.b)
        if not q:
            proc.queue = None

    def handle_exit(self, proc: Process, sender: Any, reason: Any, from_link: bool, q: Any) -> None:
        """Erlang's rules for an exit signal arriving at a live process."""
        if from_link:
            links = proc.links
            if links is None or sender not in links:
                return  # unlinked since: the signal has no effect
            links.discard(sender)
        if proc.doom is not None:
            return
        if not from_link and is_atom(reason, KILL):
            proc.doom = KILLED
        elif proc.trap_exit:
            q.append(Exit(sender, reason))
        elif is_atom(reason, NORMAL):
            if sender is not None and sender == proc.pid:
                proc.doom = NORMAL
        else:
            proc.doom = reason

    # ------------------------------------------------------------------ death

    def finish(self, proc: Process, reason: Any) -> None:
        """The process has stopped running: tell its links and monitors, forget it."""
        with proc.lock:
            if proc.state >= _EXITING:
                return  # already finished (a zombie declared dead by sysmon)
            proc.state = _EXITING
            pending = proc.inbox
            proc.inbox = None
            send_timers = proc.send_timers
            proc.send_timers = None
        if not proc.zombie:
            self.killing.pop(proc, None)  # a zombie's thread is pursued until it stops
        if proc.handoff is not NOTHING:
            pending = [proc.handoff, *(pending or ())]
            proc.handoff = NOTHING
        pid = proc.pid
        # Its table entry, name and aliases go first, as on the BEAM: whoever
        # learns of the death from a link or monitor no longer finds it among
        # processes() and can register the name again at once. (Senders that
        # find no entry answer as a dead process does, like EXITING ones.)
        self.table.pop(pid.id, None)
        if proc.name is not None:
            with self.names_lock:
                if self.names.get(proc.name) == pid:
                    del self.names[proc.name]
        if proc.aliases:
            for alias in list(proc.aliases):
                self.aliases.pop(alias, None)
        timer = proc.timer
        if timer is not None:
            proc.timer = None
            self.timers.cancel(timer)
        if send_timers:
            # send_after timers aimed at it go with it (TIMER-1).
            for ref in list(send_timers):
                t = self._pop_send_timer(ref)
                if t is not None:
                    self.timers.cancel(t)
                    t.msg = t.ref = None
        if pending:
            for it in pending:
                if type(it) is Sig:
                    if it.kind == _SIG_LINK and proc.links is not None and it.sender in proc.links:
                        continue  # already linked: it gets the real exit reason below
                    self.answer_dead(pid, it)
        # Snapshots (list() is atomic): a zombie may still be mutating these.
        if proc.links:
            for other in list(proc.links):
                self.deliver(other, Sig(_SIG_EXIT, pid, reason, True))
        if proc.monitored_by:
            for ref, watcher in list(proc.monitored_by.items()):
                if type(watcher) is tuple:
                    self.deliver(watcher[0], Sig(_SIG_DOWN, watcher[1], ref, reason))
                else:
                    self.deliver(watcher, Sig(_SIG_DOWN, pid, ref, reason))
        if proc.monitors:
            for ref, target in list(proc.monitors.items()):
                if type(target) is Pid:
                    if target.node is None:
                        self.remove_monitor(target, ref)
                    else:
                        self.deliver(target, Sig(_SIG_DEMONITOR, pid, ref))
                elif type(target) is tuple:
                    self.remote_named(target[0], target[1], Sig(_SIG_DEMONITOR, pid, ref), proc)
        proc.state = _DEAD
        if not proc.zombie:
            proc.coro = None
        proc.queue = None
        if pid == self.main_pid:
            if is_atom(reason, NORMAL):
                self.main_outcome = (True, proc.result)
            else:
                self.main_outcome = (False, reason)
            self.main_done.set()
        if self.stopping and not self.table:
            with self.empty:
                self.empty.notify_all()


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


def is_atom(reason: Any, atom: Atom) -> bool:
    """``reason == atom`` for a string reason; never calls a foreign ``__eq__``."""
    t = type(reason)
    return (t is Atom or t is str) and reason == atom


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


_BEAMLET_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


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
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    return frames


def process_stack(rt: Runtime, proc: Process, state: int) -> list[traceback.FrameSummary]:
    """process_info's ``current_stacktrace`` of ``proc``, seen in ``state``:
    where it waits, or the frames its thread executes now (with the GIL; see
    :func:`look_at_coroutine` for a free-threaded build)."""
    if GIL and state == _RUNNING:
        return running_stack(rt, proc)
    return look_at_coroutine(proc, format_stack, _code_only_stack)


def look_at_coroutine(
    proc: Process, look: Callable[[Any], Any], otherwise: Callable[[Any], Any]
) -> Any:
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
        if proc.state == _WAITING and coro is not None:
            return look(coro)
    return otherwise(coro)


def _code_only_stack(coro: Any) -> list[traceback.FrameSummary]:
    code = getattr(coro, "cr_code", None)
    if code is None:
        return []
    return [traceback.FrameSummary(code.co_filename, code.co_firstlineno, code.co_name, line=None)]


def running_stack(rt: Runtime, proc: Process) -> list[traceback.FrameSummary]:
    """The stack of a process running on some thread right now, outermost first."""
    for s in list(rt.schedulers):
        if s.current is proc:
            frame = sys._current_frames().get(s.ident)
            break
    else:
        return []
    loop_code = Scheduler.loop.__code__
    throttle_code = Throttle._on_jump.__code__
    frames = []
    while frame is not None and frame.f_code is not loop_code:
        if frame.f_code is throttle_code:  # sysmon's brake, not the process's code
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


def install(rt: Runtime) -> None:
    global _current_runtime
    with _runtime_lock:
        if _current_runtime is not None:
            raise RuntimeError("a beamlet runtime is already running in this OS process")
        _current_runtime = rt


def uninstall(rt: Runtime) -> None:
    global _current_runtime
    with _runtime_lock:
        if _current_runtime is rt:
            _current_runtime = None
