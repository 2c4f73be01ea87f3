"""sysmon: the thread that keeps schedulers responsive.

Theory of operation
-------------------
beamlet cannot preempt a coroutine: a process runs until it reaches a kernel
trap. A process that loops without awaiting, or blocks in a C call or a
syscall, holds its scheduler thread. sysmon watches for that and *hands the
run queue off*: the stuck scheduler stops counting as one of the runtime's N
schedulers, and a spare thread (parked, or new) takes its place, so everyone
else keeps running. The runaway keeps its thread; when it finally yields, that
thread rejoins the active schedulers if one is missing, or parks as a spare.

Every ``TICK`` seconds sysmon looks at each scheduler's current process. The
same process, with the same ``reductions`` count (it has not been resumed
again), still RUNNING, for ``SLICE`` seconds is a suspect; it is stuck if its
thread spent ``STUCK_CPU`` on a CPU since (it computes), or if the thread sleeps
in the kernel after ``BLOCKED_AFTER`` (it blocks in a call). A thread that is ready
to run but not running -- the OS gave its core to another thread, the machine
is loaded -- holds nobody up by its own doing and is not stuck, nor is any
scheduler across a garbage collection (every thread stops for it on a
free-threaded build, and sysmon itself with them): judged by wall time alone,
both made healthy schedulers look stuck, and each spurious hand-off added a
thread that made the next one likelier (a thousand ping-pong pairs on 3.13t:
310 hand-offs, 957 threads). Where a thread's CPU clock or state cannot be
read, wall time decides. It also:

* keeps each scheduler's recent utilisation (``Scheduler.util``, a moving
  average of its busy/idle samples over about ``UTIL_WINDOW`` seconds, for
  beamlet.observer's ``system()``);
* charges ``TICK`` of runtime to every process it sees running (process_info's
  ``runtime`` is sampled this way: one clock read per tick, none per resume);
* wakes an idle scheduler if work is queued while all active schedulers are
  busy (a push from a scheduler thread deliberately does not wake anyone, to
  keep a token ring on one thread; this is what bounds the delay);
* parks (zero CPU) when every active scheduler is parked idle, nothing is
  queued and no thread is held by a runaway. That is decided under the
  runtime's ``idle_lock`` (:meth:`Sysmon.may_sleep`), which every scheduler
  also holds as it joins or leaves the idle list; whoever takes a scheduler
  off that list while sysmon sleeps wakes it (:meth:`Sysmon.leaving_idle`).
  A decision from an unlocked look (a scheduler's ``current`` and its
  process's ``state``, the queue's length) could park sysmon for good while a
  scheduler was between taking a process and marking it RUNNING, or between
  dropping its process and queueing it again: a runaway it then ran was never
  handed off, and what was queued behind it waited for good.

Spare threads are capped (``max_threads``); past the cap no more hand-offs
happen and queued processes wait for a scheduler, as on a BEAM whose dirty
schedulers are all busy.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import sys
import threading
import time
from typing import TYPE_CHECKING

from beamlet._kernel.parker import GIL, Parker
from beamlet._kernel.process import RUNNING

if TYPE_CHECKING:
    from beamlet._kernel.runtime import Runtime
    from beamlet._kernel.scheduler import Scheduler

logger = logging.getLogger("beamlet")

TICK = 0.001
SLICE = 0.002
#: CPU time a suspect's thread must have spent on it to be judged stuck
#: computing: a whole slice (on a loaded machine a runaway takes longer to be
#: found, rather than a process that waits for a core being taken for one).
STUCK_CPU = SLICE
#: A suspect whose thread sleeps in the kernel (a blocking call) is stuck after
#: this long: shorter sleeps are a lock whose holder the OS preempted, or a
#: stop-the-world pause (free-threaded), which end by themselves.
BLOCKED_AFTER = 0.01
#: ... and after this long if it waits on a lock (a futex) on a free-threaded
#: build: the interpreter's own locks are held that long by other schedulers
#: (growing a dict of a million processes holds it 30-60 ms), and the other
#: schedulers take its queue by stealing meanwhile. (Under the GIL a futex
#: wait is most often the wait for the GIL: BLOCKED_AFTER, as before.)
LOCKED_AFTER = BLOCKED_AFTER if GIL else 0.25

#: What a thread does, from /proc (thread_activity).
RUNS, WAITS_LOCK, WAITS_CALL = 0, 1, 2
#: futex and futex_waitv, by machine (Linux syscall numbers).
_FUTEX = {"x86_64": (202, 449), "aarch64": (98, 449)}.get(platform.machine(), ())
#: A killed process still running this long after the first AsyncKill is
#: declared dead (links and monitors told) while its thread runs on.
ZOMBIE_AFTER = 0.02
#: sys.setswitchinterval while a runaway process holds a thread (default 5 ms).
RUNAWAY_SWITCH_INTERVAL = 0.00005
#: A handed-off process that has computed this long (CPU time) without
#: yielding is a runaway: its code is remembered (Runtime.remember_runaway).
RUNAWAY_AFTER = 0.01
#: Threads held by runaways are looked at once every this many ticks.
RUNAWAY_EVERY = 16
#: Free-threaded: a kill not taken this long after it was aimed at a victim's
#: own code is looked for in all code (MonitoringKiller.refresh: JUMP events on
#: everywhere, which stops the world, ~1 ms with a few runaway threads about).
#: Most kills land first, at a line of the victim's own code.
WIDEN_AFTER = 0.002
#: While runaways turn up with work waiting, this many threads beyond the
#: schedulers take work (a runaway among what they take is found after a tick).
#: More would only compete for the GIL with the runaways not found yet.
PROBES = 2
#: Threads started per tick for diverted processes (Runtime.divert): a process
#: that runs a known runaway's code waits for one, not the queue behind it.
DIVERTED_PER_TICK = 16
#: Time constant of a scheduler's recent utilisation (Scheduler.util), seconds.
UTIL_WINDOW = 1.0


def sample_util(s: Scheduler, busy: bool, now: float) -> None:
    """Fold one sample (busy or idle since the last one) into ``s.util``."""
    a = (now - s.util_at) / UTIL_WINDOW
    s.util_at = now
    s.util += ((1.0 if busy else 0.0) - s.util) * (a if a < 1.0 else 1.0)


def recent_util(s: Scheduler, now: float) -> float:
    """``s.util`` as of ``now``: a scheduler sysmon has not sampled for a while
    (sysmon parks when every scheduler is idle) counts as idle since."""
    a = (now - s.util_at) / UTIL_WINDOW
    if a <= 0.05:
        return s.util
    return s.util * (1.0 - a) if a < 1.0 else 0.0


def thread_cpu_clock(ident: int) -> int | None:
    """The CPU-time clock of the thread ``ident`` (None where there is none)."""
    try:
        clock = time.pthread_getcpuclockid(ident)
        time.clock_gettime(clock)
    except (AttributeError, OSError):
        return None
    return clock


def _read_proc(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 512)
    except OSError:
        return None
    finally:
        os.close(fd)


def thread_activity(native_id: int) -> int | None:
    """Whether the thread runs or waits for a core (RUNS: Linux state R), or
    sleeps in the kernel waiting on a lock (WAITS_LOCK: a futex) or in another
    call (WAITS_CALL); None if unknown."""
    data = _read_proc(f"/proc/self/task/{native_id}/stat")
    if data is None:
        return None
    end = data.rfind(b")")  # the state follows the command name, which may hold anything
    if end < 0 or len(data) < end + 3:
        return None
    if data[end + 2 : end + 3] not in (b"S", b"D"):
        return RUNS
    call = _read_proc(f"/proc/self/task/{native_id}/syscall")
    try:
        number = int(call.split(None, 1)[0]) if call else -1
    except ValueError:
        number = -1  # "running": it woke up meanwhile
    return WAITS_LOCK if number in _FUTEX else WAITS_CALL


def _cpu_time_of(s: Scheduler) -> float:
    """The CPU time of a scheduler's thread; its last reading once the thread
    has ended (its clock is gone then)."""
    clock = s.cpu_clock
    if clock is None:
        return s.cpu_seen
    try:
        return time.clock_gettime(clock)
    except OSError:
        s.cpu_clock = None
        return s.cpu_seen


class Sysmon:
    def __init__(self, rt: Runtime, tick: float = TICK, slice: float = SLICE) -> None:
        self.rt = rt
        self.tick = tick
        self.slice = slice
        self.parker = Parker()
        self.running = False
        self.thread: threading.Thread | None = None
        self.hand_offs = 0
        self.wakeups = 0
        self.bursts = 0  # extra threads brought in while runaways turned up
        self.saved_interval: float | None = None
        self.busy_time = 0.0  # sum over ticks of (busy active schedulers x tick)
        self.sampled_time = 0.0  # sum over ticks of (N x tick)
        self.started = time.monotonic()  # beamlet.observer's uptime
        # Parked until a scheduler leaves the idle list (guarded by rt.idle_lock).
        self.sleeping = False
        # Garbage collections' starts and stops (a gc callback counts them;
        # odd while one runs): a tick that saw one judges nobody stuck.
        self.collections = 0
        self.collections_seen = 0
        self.can_read_states = sys.platform.startswith("linux")

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        self.collections += 1

    def start(self) -> None:
        gc.callbacks.append(self.on_gc)
        self.running = True
        self.thread = threading.Thread(target=self.loop, name="beamlet-sysmon", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self.parker.unpark()
        if self.thread is not None:
            self.thread.join(5.0)
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self.on_gc)
        self.restore()

    def poke(self) -> None:
        self.parker.unpark()

    def may_sleep(self) -> bool:
        """Whether sysmon may park with no timeout: every active scheduler is
        in the idle list, nothing is queued, killed or diverted, and no thread
        is held by a runaway. Decided under the locks every scheduler takes to
        join or leave the idle list, or to change ``active`` and
        ``handed_off``, so no scheduler can be on its way to run something
        unseen; if True, ``sleeping`` is set and the next scheduler to leave
        the idle list pokes sysmon (:meth:`leaving_idle`)."""
        rt = self.rt
        with rt.idle_lock, rt.sched_lock:
            if (
                rt.stopped
                or rt.queued()
                or rt.killing
                or rt.diverted
                or len(rt.idle) < rt.active
                or any(s.handed_off for s in rt.schedulers)
                or (rt.poller.count and not rt.poller.waiting)
            ):
                return False
            self.sleeping = True
            return True

    def leaving_idle(self) -> bool:
        """A scheduler leaves the idle list (the caller holds ``rt.idle_lock``):
        True if sysmon sleeps and the caller must poke it once the lock is
        released."""
        if self.sleeping:
            self.sleeping = False
            return True
        return False

    def loop(self) -> None:
        """Tick until stopped; a failure in one tick is logged, never fatal
        (without sysmon nothing is preempted or pursued any more)."""
        while self.running:
            try:
                self._loop()
            except Exception:
                logger.exception("beamlet: sysmon tick failed; sysmon goes on")
                time.sleep(self.tick)

    def _loop(self) -> None:
        rt = self.rt
        last = time.perf_counter()
        quiet = False
        ticks = 0
        while self.running:
            if quiet and self.may_sleep():
                self.parker.park()
                with rt.idle_lock:
                    self.sleeping = False
                now = time.perf_counter()
                self.sampled_time += (now - last) * rt.n_schedulers
                last = now
                for s in list(rt.schedulers):
                    sample_util(s, False, now)  # idle while sysmon slept
            else:
                self.parker.park(self.tick)
            now = time.perf_counter()
            dt = now - last
            last = now
            ticks += 1
            poller = rt.poller
            io_due = bool(poller.count) and poller.overdue(time.monotonic())
            if io_due:
                # Every scheduler busy with long turns: the next one to pick a
                # process polls first (poller.py).
                poller.due = True
            self.sampled_time += dt * rt.n_schedulers
            busy = 0
            stuck: list[Scheduler] = []
            # Threads held by runaways are looked at every RUNAWAY_EVERY ticks
            # only: a thousand of them must not make each tick cost a millisecond.
            full = ticks % RUNAWAY_EVERY == 0
            held = 0
            seen = self.collections
            collected = seen != self.collections_seen or seen & 1
            self.collections_seen = seen
            for s in list(rt.schedulers):
                if s.handed_off:
                    held += 1
                    if s.runq and not rt.one_queue:
                        # Pushed to its own queue as it was handed off.
                        rt.requeue(s)
                    if not full:
                        continue
                p = s.current
                if p is None or p.state != RUNNING:
                    sample_util(s, False, now)
                    s.seen = None
                    if s.cpu_clock is not None:
                        s.cpu_seen = _cpu_time_of(s)
                    continue
                busy += 1
                sample_util(s, True, now)
                if not s.handed_off:
                    self.busy_time += dt
                # CPU time, from the thread's own clock: the time since the last
                # look goes to the process running now (exact for a process that
                # ran all along, a sample for short runs). Without such a clock,
                # wall time.
                if s.cpu_clock is not None:
                    cpu = _cpu_time_of(s)
                    p.runtime += max(0.0, cpu - s.cpu_seen)
                    s.cpu_seen = cpu
                else:
                    cpu = None
                    p.runtime += dt
                # (After a collection it starts afresh: every thread stopped
                # for it, nobody's fault.)
                if not collected and s.seen is p and s.seen_reductions == p.reductions:
                    s.stuck_for += dt
                    if s.stuck_for >= self.slice and not s.handed_off:
                        if self.holds(s, cpu):
                            stuck.append(s)
                    elif (
                        s.handed_off
                        and s.runaway_code is None
                        and (s.stuck_for if cpu is None else cpu - s.stuck_cpu) >= RUNAWAY_AFTER
                    ):
                        rt.remember_runaway(s)
                    if p.inbox and p not in rt.killing:
                        # Running for a whole tick with signals it has not
                        # drained: an exit signal among them must stop it
                        # (a safety net; signals.deliver normally sees to it).
                        rt.exit_pending(p)
                else:
                    s.seen = p
                    s.seen_reductions = p.reductions
                    s.stuck_for = 0.0
                    s.stuck_cpu = s.cpu_seen
            if rt.killing:
                self.pursue_kills(now)
            else:
                rt.killer.idle()
            if rt.throttle.threads:
                rt.throttle.refresh(everyone=full)
                rt.throttle.unstall(now)
            queued = rt.queued()
            if stuck and (queued or io_due):
                # (Sockets nobody has polled count as work waiting: a stuck
                # scheduler cannot poll them, a new thread will.)
                # With a queue per scheduler, the others take a stuck one's
                # queue by stealing when they run out of work: it is handed off
                # if its own queue waits while nobody is idle to steal it, or
                # if every active scheduler is stuck.
                everyone = rt.one_queue or len(stuck) >= rt.active
                for s in stuck:
                    if everyone or (s.runq and not rt.idle):
                        rt.hand_off(s)
                # Runaways keep turning up while work waits: PROBES extra threads
                # take queued work too, so runaways are found several at a time
                # (and a queued process that runs a known runaway's code gets a
                # thread of its own at once: Runtime.divert, throttle.py's
                # adopt). The extra threads park as spares once the queue is
                # empty. (Not without the GIL: threads beyond the cores only
                # contend there, and a queue that never empties -- skynet --
                # kept them all running.)
                queued = rt.queued()
                extra = min(queued - 1, PROBES - (rt.active - rt.n_schedulers))
                if extra > 0 and GIL:
                    self.bursts += rt.burst(extra)
            if rt.diverted:
                rt.start_diverted(DIVERTED_PER_TICK)
            if queued and rt.idle:
                self.wakeups += 1
                rt.wake_idle()
            self.tune_switch_interval(held > 0)
            quiet = busy == 0 and held == 0 and not queued and not rt.killing and not rt.diverted

    def holds(self, s: Scheduler, cpu: float | None) -> bool:
        """A suspect (the same process for a slice): does it hold its thread,
        computing or blocked in a call, rather than wait for a core?"""
        if cpu is None:
            return True  # no CPU clock: wall time decides
        if cpu - s.stuck_cpu >= STUCK_CPU:
            return True  # computing
        if s.stuck_for < BLOCKED_AFTER:
            return False
        if not self.can_read_states:
            return True
        activity = thread_activity(s.native_id)
        if activity == RUNS:
            return False  # waiting for a core
        return activity != WAITS_LOCK or s.stuck_for >= LOCKED_AFTER

    def pursue_kills(self, now: float) -> None:
        """Retry kills that have not taken effect; declare dead who swallows them."""
        rt = self.rt
        mono = time.monotonic()
        victims = []
        for proc, entry in list(rt.killing.items()):
            s = rt.running_on(proc)
            if s is None:
                # It stopped running: a zombie's code has stopped; anyone else
                # yielded, and its trap or the check before it is resumed sees
                # its doom.
                rt.killing.pop(proc, None)
                continue
            if GIL or mono - entry[0] >= WIDEN_AFTER:
                victims.append((s, proc))
            if proc.zombie:
                # Declared dead, but its code still runs on its thread: keep
                # aiming the kill at it (it may have been out of reach, e.g. in
                # a C call or starting a thread) until that thread lets go of it.
                if mono - entry[1] >= self.tick:
                    rt.kill_running(proc, proc.doom)
                continue
            if proc.state != RUNNING:
                rt.killing.pop(proc, None)
                continue
            first, last, _attempts = entry
            if mono - first >= ZOMBIE_AFTER and not proc.zombie:
                # It swallowed every AsyncKill, or sits in a blocking C call.
                proc.zombie = True
                logger.warning(
                    "process %r did not stop %.0f ms after it was killed (it swallows the "
                    "kill or is blocked in a C call): declared dead, its thread runs on",
                    proc.pid,
                    (mono - first) * 1000,
                )
                rt.finish(proc, proc.doom)
            elif mono - last >= self.tick:
                rt.kill_running(proc, proc.doom)
        if victims:
            rt.killer.refresh(victims, rt.loop_code)

    def tune_switch_interval(self, runaways: bool | None = None) -> None:
        """While a runaway holds a thread, make the GIL change hands more often."""
        if runaways is None:
            runaways = any(s.handed_off for s in self.rt.schedulers)
        runaway = runaways or bool(self.rt.killing)
        if runaway and self.saved_interval is None:
            self.saved_interval = sys.getswitchinterval()
            sys.setswitchinterval(RUNAWAY_SWITCH_INTERVAL)
        elif not runaway and self.saved_interval is not None:
            sys.setswitchinterval(self.saved_interval)
            self.saved_interval = None

    def restore(self) -> None:
        if self.saved_interval is not None:
            sys.setswitchinterval(self.saved_interval)
            self.saved_interval = None
