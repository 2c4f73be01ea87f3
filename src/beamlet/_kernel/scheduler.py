"""The scheduler threads: the run queues, work stealing, idle/park/wake, hand-off.

Theory of operation
-------------------
N scheduler threads run processes: one per core by default on free-threaded
CPython, one under the GIL. With one, every thread shares one run queue; with
several, each has its own: what a scheduler's process wakes or spawns goes on
that scheduler's queue, pushes from other threads on the runtime's queue, which
each scheduler looks at once every ``GLOBAL_EVERY`` processes and when its own
is empty; then it steals half of another's before it parks (:meth:`Scheduler.
find_work`). A scheduler pops a runnable process, makes
it the thread's current process and resumes its coroutine with ``send(None)``;
the coroutine runs until it reaches a trap (traps.py), which yields one of the
trap codes of :mod:`beamlet._kernel.process`:

* ``WAIT``: block. Under the process's lock the scheduler parks it in state
  WAITING unless a signal (or its timer) arrived meanwhile, in which case it goes
  straight back on the run queue. A sender that finds a WAITING process makes it
  RUNNABLE and queues it: there are no lost wake-ups, because both sides decide
  under the same lock.
* ``YIELD``: back of the run queue.
* ``DIE``: the process received an exit signal it must die of; the scheduler
  closes its coroutine (``GeneratorExit`` at the await point, so ``finally``
  blocks run) and finishes it (signals.finish).

Idle schedulers park on their own :class:`Parker`. A push wakes one idle
scheduler only when it would otherwise wait: when the pusher is not a scheduler
(the timer thread, another OS thread), or when the queue already holds work
beyond what the pushing scheduler is about to take itself. A token passed round
a ring therefore stays on one thread instead of bouncing between threads.

A process that never reaches a trap holds its thread: sysmon (sysmon.py) then
*hands off* -- another thread takes the stuck scheduler's place -- and the
runaway keeps its thread, at a low OS priority, taking turns (throttle.py),
until it yields or is killed (kill.py). The run-queue-level operations live in
:class:`Scheduling`, which the runtime inherits: its state (``runq``, ``idle``,
``spares``, ``active``, ...) is the runtime's.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from beamlet._kernel.context import current_scheduler, scheduler_var
from beamlet._kernel.introspection import log_crash
from beamlet._kernel.kill import (
    CLEARED,
    Cleared,
    clear_async_exc,
    consume_cleared,
    is_process_code,
    thread_state,
)
from beamlet._kernel.parker import GIL, Parker
from beamlet._kernel.process import (
    DIE,
    EXITING,
    RUNNABLE,
    RUNNING,
    WAIT,
    WAITING,
    YIELD,
    Process,
    ProcessExit,
)
from beamlet._kernel.signals import NORMAL, drain, wake
from beamlet._kernel.sysmon import thread_cpu_clock
from beamlet._kernel.table import ShardedTable

if TYPE_CHECKING:
    from beamlet._kernel.kill import Killer
    from beamlet._kernel.runtime import Runtime
    from beamlet._kernel.sysmon import Sysmon
    from beamlet._kernel.throttle import Throttle

logger = logging.getLogger("beamlet")
_get_ident = threading.get_ident

#: OS priority (nice) of a thread while a runaway process holds it.
#: Not 19: a runaway's thread that holds the GIL when the OS preempts it waits
#: for a core with its GIL, and at nice 19 other processes on the machine
#: (CFS: ~1.5 % of a core against nice-0 work) kept it off for so long that the
#: whole node stalled (an Erlang peer's rpc unanswered for 30 s with three CPU
#: burners beside it; at nice 10, answered at once). Measured on a quiet machine
#: (3.11, --tree, repeat 3), 19 vs 10: HTTP with 4 runaways on one core h11
#: 15,525 / 14,648 req/s, httptools 39,609 / 39,817; lateness with 16 runaways
#: and kill with 4 equal within noise. (Nice 0 lost a fifth of that HTTP rate.)
RUNAWAY_NICE = 10

#: Default cap on scheduler threads, the ones runaway processes keep included
#: (``run(max_threads=)``): each runaway holds a thread until it yields or dies.
DEFAULT_MAX_THREADS = 2048

#: With a run queue per scheduler, a scheduler looks at the runtime's queue
#: (pushes from threads that are not schedulers: timers, the pool, the
#: distribution) first once every this many processes it runs, as the BEAM's
#: and Go's schedulers look at their global queues.
GLOBAL_EVERY = 61


_RUNNABLE = RUNNABLE
_RUNNING = RUNNING
_WAITING = WAITING
_EXITING = EXITING
_WAIT = WAIT
_YIELD = YIELD
_DIE = DIE


#: Scheduler.runaway_code of a handed-off process found computing in a function
#: its own function called (Runtime.remember_runaway): nothing to remember.
NOT_ITS_OWN: Any = object()


def default_schedulers() -> int:
    """One scheduler per core where threads run in parallel (free-threaded
    CPython); one under the GIL, where a second scheduler thread only adds
    contention (measured: ping-pong 2.3 vs 3.5 µs, skynet 7.3 vs 8.7 s, spawn
    5.3 vs 6.7 µs) and sysmon's hand-off already supplies a thread whenever a
    process holds one."""
    return (os.cpu_count() or 1) if not GIL else 1


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
        "masked_depth",
        "native_id",
        "parker",
        "pid_end",
        "pid_next",
        "polling",
        "pushq",
        "rt",
        "runaway_code",
        "runq",
        "seen",
        "seen_reductions",
        "steal_at",
        "steals",
        "stuck_cpu",
        "stuck_for",
        "thread",
        "tstate",
        "util",
        "util_at",
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
        # Its run queue: its own with several schedulers, the runtime's one
        # queue with one (Scheduling.init_scheduling). It pushes to ``pushq``:
        # its own queue, or the runtime's while it is handed off (its thread
        # then serves a runaway, not the queue).
        self.runq: collections.deque[Process] = rt.runq if rt.one_queue else collections.deque()
        self.pushq = self.runq
        self.steal_at = index + 1  # where its next look at the others' queues starts
        self.steals = 0  # processes it took from other schedulers' queues
        # Its block of pid numbers (Runtime._spawn): its spawns take no shared lock.
        self.pid_next = 0
        self.pid_end = 0
        self.polling = False  # idle, and waiting in the poller's set (poller.py)
        self.first: Process | None = None  # a diverted process to run first (Runtime.divert)
        self.runaway_code: Any = None  # the code its runaway runs (Runtime.runaway_codes)
        # Killing the running process (kill.py): the killer holds kill_lock.
        self.kill_lock = threading.Lock()
        self.kill_pending = False
        self.masked_depth = 0  # >0 while the process runs a kernel section that must not be cut
        self.closing = False  # running the finally blocks of a process that dies
        # sysmon's private bookkeeping
        self.seen: Process | None = None
        self.seen_reductions = 0
        self.stuck_for = 0.0
        self.stuck_cpu = 0.0  # its thread's CPU time when sysmon first saw ``seen`` run
        # Its recent utilisation (0..1, a moving average over about UTIL_WINDOW
        # seconds of sysmon's samples) and when sysmon last sampled it.
        self.util = 0.0
        self.util_at = time.perf_counter()

    def set_handed_off(self, handed_off: bool) -> None:
        """Handed off (its thread serves a runaway, not its queue) or back:
        while it is, what it pushes goes to the runtime's queue. (The caller
        holds ``rt.sched_lock``.)"""
        self.handed_off = handed_off
        self.pushq = self.rt.runq if handed_off else self.runq

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.loop, name=f"beamlet-scheduler-{self.index}", daemon=True
        )
        self.thread.start()

    def loop(self) -> None:
        """Run processes until the runtime stops. The kernel's hot loop."""
        rt = self.rt
        runq = self.runq
        popleft = runq.popleft
        grunq = rt.runq  # the runtime's queue: pushes from threads that are not schedulers
        one_queue = runq is grunq
        countdown = GLOBAL_EVERY
        scheduler_var.set(self)
        self.ident = threading.get_ident()
        self.native_id = threading.get_native_id()
        self.tstate = thread_state()
        self.cpu_clock = thread_cpu_clock(self.ident)
        finish = rt.finish
        schedule = rt.schedule
        asynchronous_kills = rt.killer.asynchronous
        runaway_codes = rt.runaway_codes
        free_threaded = not GIL
        kill_lock = self.kill_lock
        poller = rt.poller
        # Free-threaded: a reference this thread holds to each object every
        # scheduler reads keeps its shared reference count above zero, so that
        # reading it takes no lock (CPython 3.13t locks the container when the
        # value's shared count is zero and its owner is another thread: the
        # table's list of shards in its slot, the shards in the list; seen as
        # sched_yield storms in a profile of skynet with two schedulers).
        _held = rt.table.held() if isinstance(rt.table, ShardedTable) else ()
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
                if poller.due:
                    poller.poll()  # sysmon: nobody has looked for POLL_EVERY
                if one_queue:
                    countdown -= 1
                    if not countdown:
                        countdown = GLOBAL_EVERY
                        if poller.count and not poller.waiting:
                            poller.poll()
                    try:
                        proc = popleft()
                    except IndexError:
                        if self.idle():
                            return
                        continue
                else:
                    # Its own queue first; the runtime's one now and then
                    # (timers, other threads) so that a scheduler never out of
                    # work of its own cannot starve what lands there.
                    countdown -= 1
                    proc = None
                    if not countdown:
                        countdown = GLOBAL_EVERY
                        if poller.count and not poller.waiting:
                            poller.poll()  # (what it wakes goes on this queue)
                        if grunq:
                            try:
                                proc = grunq.popleft()
                            except IndexError:
                                pass
                    if proc is None:
                        try:
                            proc = popleft()
                        except IndexError:
                            proc = self.find_work()
                    if proc is None:
                        if self.idle():
                            return
                        continue
                if (
                    runaway_codes
                    and (runq or grunq)
                    and proc.coro.cr_code in runaway_codes
                    and rt.divert_ok
                ):
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
            if (proc.inbox or proc.doom is not None) and self.doomed(proc):
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
                        try:  # (kill.CLEARED: inline, a C call first)
                            clear_async_exc(self.ident, CLEARED)
                            consume_cleared()
                        except Cleared:
                            pass
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
                    # (A timer that went off while it ran: it must look again,
                    # unless its wait has no deadline: a receive's left-over.)
                    if not proc.inbox and (
                        timer is None or timer.state == 0 or proc.deadline is None
                    ):
                        proc.state = _WAITING
                        lock.release()
                        if proc.inbox:
                            # A sender appended without the lock as it parked
                            # and may not have seen WAITING (signals.send_message).
                            wake(rt, proc)
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

    def find_work(self) -> Process | None:
        """Its own queue is empty: the runtime's queue, then the others' queues
        (work stealing: half of the first non-empty one, oldest first, so the
        work spreads in one go)."""
        rt = self.rt
        try:
            return rt.runq.popleft()
        except IndexError:
            pass
        schedulers = rt.schedulers
        n = len(schedulers)
        start = self.steal_at
        self.steal_at = start + 1
        mine = self.runq
        for i in range(n):
            victim = schedulers[(start + i) % n]
            q = victim.runq
            if victim is self or not q:
                continue
            first = None
            for _ in range((len(q) + 1) // 2):
                try:
                    proc = q.popleft()
                except IndexError:
                    break
                if first is None:
                    first = proc
                else:
                    mine.append(proc)
            if first is not None:
                self.steals += 1
                return first
        return None

    def doomed(self, proc: Process) -> bool:
        """Before resuming ``proc``: apply the signals it got while queued; if it
        must die of one, close it instead (it does not run). True if it died."""
        if proc.inbox:
            # Masked: kernel code in the scheduler's context, not the process's
            # (a namedtuple's __new__ made by exec counts as process code).
            self.masked_depth += 1
            try:
                drain(self.rt, proc)
            finally:
                self.masked_depth -= 1
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
                try:  # (kill.CLEARED: inline, a C call first)
                    clear_async_exc(self.ident, CLEARED)
                    consume_cleared()
                except Cleared:
                    pass
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
                self.set_handed_off(False)
                rt.schedulers = [s for s in rt.schedulers if s is not self]
            self.leave_no_work_behind()
            return True
        with rt.sched_lock:
            self.set_handed_off(False)
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
        rt.requeue(self)
        if rt.runq:
            rt.wake_idle()
            rt.sysmon.poke()

    def leave_idle(self) -> bool:
        """Take itself off the idle list, if it is still there (nobody popped
        it to unpark it); pokes sysmon if it sleeps. True if it was there."""
        rt = self.rt
        poke = False
        with rt.idle_lock:
            left = self in rt.idle
            if left:
                rt.idle.remove(self)
                poke = rt.sysmon.leaving_idle()
        if poke:
            rt.sysmon.poke()
        return left

    def idle(self) -> bool:
        """Park until there is work. Returns True when the runtime has stopped."""
        rt = self.rt
        if rt.poller.count and not rt.poller.waiting and rt.poller.poll():
            # I/O was ready already (a loopback peer, a busy server): what it
            # woke is on this scheduler's queue; no need to go idle for it.
            return False
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
        # (A scheduler's push to its own queue needs no wake-up: it comes back
        # for it; one that finds us idle wakes us to steal.)
        if rt.queued():
            if self.leave_idle():
                return False
            # Someone already popped us from idle and unparked us: consume it.
        self.current = None
        if rt.poller.count:
            # Descriptors are registered: one idle scheduler waits in the
            # poller's set instead of on its parker (poller.py).
            self.polling = True
            try:
                ready = rt.poller.idle_wait(self.parker.wait_in)
            finally:
                self.polling = False
            if ready is not None:
                self.leave_idle()  # (still listed if woken by I/O, not by wake_idle)
                if ready:
                    rt.poller.dispatch(ready)  # (wakes go on this scheduler's queue)
                return False
        self.parker.park()  # whoever takes us off the idle list pokes sysmon if need be
        return False


class Scheduling:
    """The runtime's scheduling half: the run queue, idle schedulers, spares,
    hand-offs and diverted runaways, killing a running process. Inherited by
    :class:`~beamlet._kernel.runtime.Runtime`; :meth:`init_scheduling` makes
    its state."""

    # The runtime's parts the scheduling half uses (runtime.Runtime sets them).
    sysmon: Sysmon
    throttle: Throttle
    killer: Killer
    nice: int
    async_kills: bool
    loop_code: Any  # Scheduler.loop's code: where a scheduler thread's stack starts

    def init_scheduling(self, n: int, max_threads: int | None) -> None:
        if n < 1:
            raise ValueError("schedulers must be at least 1")
        # The run queues need no lock: deque.append/popleft are atomic (and
        # documented thread-safe, free-threaded builds included). With one
        # scheduler every thread shares this one queue (the hand-off's extra
        # threads too); with several, each has its own (Scheduler.runq) and
        # this one takes the pushes of threads that are not schedulers.
        self.runq: collections.deque[Process] = collections.deque()
        self.one_queue = n == 1
        self.idle: list[Scheduler] = []
        self.idle_lock = threading.Lock()
        self.n_schedulers = n
        rt = cast("Runtime", self)
        self.schedulers = [Scheduler(rt, i) for i in range(n)]
        self.active = n  # schedulers taking work (not handed off, not spare)
        self.spares: list[Scheduler] = []
        self.sched_lock = threading.Lock()
        self.warned_cap = False
        # Code objects runaways run now (-> how many), and processes that run
        # such code waiting for a thread of their own (divert).
        self.runaway_codes: dict[Any, int] = {}
        self.diverted: collections.deque[Process] = collections.deque()
        self.divert_ok = True  # False once max_threads is reached
        if max_threads is not None and max_threads < n:
            raise ValueError("max_threads must be at least the number of schedulers")
        # Scheduler threads in all, runaways' included: each runaway keeps one.
        self.max_threads = (
            max_threads if max_threads is not None else max(DEFAULT_MAX_THREADS, 4 * n)
        )
        # Processes a kill was aimed at, while they still run:
        # proc -> [first aim, last aim, attempts] (sysmon pursues them).
        self.killing: dict[Process, list[Any]] = {}
        self.stopped = False

    def hand_off(self, s: Scheduler) -> None:
        """sysmon found ``s`` stuck in one process: put another thread in its place."""
        with self.sched_lock:
            if s.handed_off or self.stopped:
                return
            s.set_handed_off(True)
            self.active -= 1
            self.sysmon.hand_offs += 1
            # Under the GIL every runnable thread competes for it: make it
            # change hands more often, and lower the runaway's OS priority so
            # the others win it more often. Both before the new thread starts:
            # Thread.start() itself waits for the GIL.
            self.sysmon.tune_switch_interval(True)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, s.native_id, RUNAWAY_NICE)
            self.throttle.add(s.ident, s.tstate)
            self._bring_in(self.n_schedulers - self.active)
        # What waited in its own queue goes where the other threads find it.
        self.requeue(s)

    def requeue(self, s: Scheduler) -> None:
        """Move what waits in ``s``'s own queue to the runtime's (it is handed
        off, or parks as a spare); wake a scheduler for it."""
        q = s.runq
        if q is self.runq or not q:
            return
        grunq = self.runq
        while True:
            try:
                grunq.append(q.popleft())
            except IndexError:
                break
        self.wake_idle()

    def queued(self) -> int:
        """Processes waiting in the run queues."""
        if self.one_queue:
            return len(self.runq)
        return len(self.runq) + sum(len(s.runq) for s in self.schedulers)

    def remember_runaway(self, s: Scheduler) -> None:
        """sysmon: the process on handed-off ``s`` has computed for a while
        without yielding (not only a slice, which a GC or a burst of spawns can
        take): its code is a runaway's, and a queued process that runs it gets
        a thread of its own (divert). (Remembered at the hand-off itself, one
        false positive on skynet's code sent each of the next thousand skynet
        processes to a thread of its own.)"""
        with self.sched_lock:
            p = s.current
            code = getattr(p.coro, "cr_code", None) if p is not None else None
            if not s.handed_off or code is None or s.runaway_code is not None:
                return
            if GIL and not self._loops_in_its_own_function(s, code):
                # It loops in a function its process's function called: other
                # processes running that (an HTTP server's connection loop
                # calling the handler that loops) are no runaways. Looked at
                # once per hand-off.
                s.runaway_code = NOT_ITS_OWN
                return
            s.runaway_code = code
            self.runaway_codes[code] = self.runaway_codes.get(code, 0) + 1

    def _loops_in_its_own_function(self, s: Scheduler, code: Any) -> bool:
        """Whether the process on handed-off ``s`` (under the GIL: its frames can
        be read) computes in its own coroutine's frame, ``code``: the innermost
        frame of process code on its thread (past the standard library's, and
        the kernel's: a throttle's park, a kill's trace function) is that one."""
        frame = sys._current_frames().get(s.ident)
        while frame is not None and frame.f_code is not self.loop_code:
            if is_process_code(frame.f_code):
                return frame.f_code is code
            frame = frame.f_back
        return False

    def forget_runaway_code(self, s: Scheduler) -> None:
        code = s.runaway_code
        if code is None:
            return
        s.runaway_code = None
        if code is NOT_ITS_OWN:
            return
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
                    s.set_handed_off(True)
                    s.first = proc
                    s.parker.unpark()
                elif len(self.schedulers) < self.max_threads:
                    s = Scheduler(cast("Runtime", self), len(self.schedulers))
                    s.set_handed_off(True)
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
        self.throttle.add(s.ident, s.tstate)

    def adopt_runaway(self, ident: int) -> None:
        """throttle.py: scheduler thread ``ident`` runs a known runaway's code
        while work waits: hand it off now rather than after a slice."""
        s = current_scheduler()
        if (
            s is None
            or s.ident != ident
            or s.handed_off
            or s.masked_depth
            or s.closing
            or s.current is None
            or not (s.runq or self.runq)
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
                spare = Scheduler(cast("Runtime", self), len(self.schedulers))
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

    def schedule(self, proc: Process) -> None:
        """Put a RUNNABLE process on the run queue, waking a scheduler if needed.

        From a scheduler thread the push is lock-free, and it wakes an idle
        scheduler only if the queue holds more than the pushing scheduler is
        about to take itself; a racy look at ``idle`` is fine there, since the
        pusher comes back to the queue and nothing can be stranded. From any
        other thread an idle scheduler is looked for under ``idle_lock``, which
        pairs with :meth:`Scheduler.idle` so that a wake-up is never lost.
        """
        s = current_scheduler()
        if s is not None and s.ident != _get_ident():
            s = None  # a thread running in a context copied from a scheduler's (asyncio)
        q = self.runq if s is None else s.pushq
        q.append(proc)
        if self.idle or s is None:
            self.pushed(q, s)

    def pushed(self, q: collections.deque[Process], s: Scheduler | None) -> None:
        """After a push to ``q`` by scheduler ``s`` (None: another thread):
        wake an idle scheduler if the push calls for one."""
        if s is None or len(q) > 1:
            self.wake_idle()

    def wake_idle(self) -> None:
        with self.idle_lock:
            if not self.idle:
                return
            s = self.idle.pop()
            if s.polling and self.idle:
                # Leave the one waiting in the poller's set where it is.
                other = self.idle.pop()
                self.idle.append(s)
                s = other
            poke = self.sysmon.leaving_idle()
        s.parker.unpark()
        if poke:
            self.sysmon.poke()

    # ------------------------------------------------------------------ killing

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
            aimed = not s.masked_depth and self.killer.aim(s, proc)
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
