"""Taking turns: runaway processes share the interpreter's turns.

Under the GIL every thread that wants to run competes for the interpreter, and
which waiting thread gets it next is up to the OS. Sixteen threads stuck in
busy loops therefore make the one thread that runs ordinary processes wait
behind them for tens of milliseconds; a thousand, for seconds.

Where ``sys.monitoring`` exists, sysmon turns on ``JUMP`` events for the code
objects a runaway loops in -- the innermost frame of its own code on its
thread's stack at each look (``async def`` or plain functions,
:func:`beamlet._kernel.kill.is_process_code`), never the standard library's or
beamlet's kernel, nor its callers'. The callback runs in the runaway's own thread and makes
runaways *take turns*: one runaway runs at a time, for ``BUDGET`` seconds if
others wait, then passes the turn on (FIFO) and blocks without the GIL. So at
most one runaway competes with the schedulers for the GIL, and the runaways
together still get all the CPU the rest of the system leaves them (a lone
runaway with nothing queued never waits). While processes wait in the run
queues, the turn holder gives the interpreter up for ``RESPITE`` after each
``BUDGET``: the runaways then get at most a fifth of it.

A runaway parked for its turn may hold a lock that the turn holder needs (its
own, or a library's whose code called back into the process's): the holder
then blocks without reaching a jump. So sysmon passes the turn on when the
holder has not been seen at a jump for ``STALL`` seconds (:meth:`unstall`);
the lock's owner gets its turn in time, and nothing deadlocks. (Standard
library and kernel code is never watched: a runaway is never parked inside it.)

A scheduler thread that is not (yet) a runaway's but runs the code of one while
work waits is handed off at once (``adopt``): a thousand copies of one runaway
reach their own threads without sysmon timing each of them. Other threads that
execute watched code pay one dictionary lookup per jump while a runaway exists.

Free-threaded builds (``BEAMLET_FT_THROTTLE=0`` in the environment switches
it off there) have no GIL to share, but cores: there ``slots`` runaways
(one per scheduler) hold a turn at once, so the runaways together compete for
no more cores than the schedulers, and give way to queued processes the same
way (the runaway's thread then sleeps, leaving the core to the schedulers). A
running thread's frames cannot be read there (kill.py), so the code a runaway
loops in is found by the runaway's own thread: JUMP events on for all code for
a moment (:meth:`_seek`), until each runaway looked for has jumped once.
Python 3.11 has no ``sys.monitoring``: :class:`TraceThrottle` drives the same
turns from a trace function on the runaway's thread (where the TraceKiller is
used, which shares that slot; opt-in: ``BEAMLET_TRACE_THROTTLE=1``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType
from typing import Any

from beamlet._kernel.kill import PROCESS, Killer, _api, code_kind, is_process_code
from beamlet._kernel.parker import GIL, Parker

BUDGET = 0.0005
#: A turn's kernel work not counted against its BUDGET, at most (Throttle.credit).
CREDIT = 0.01
#: While processes wait in the run queues, the runaway whose turn it is gives
#: the interpreter up for this long after each BUDGET (so the runaways together
#: get at most BUDGET / (BUDGET + RESPITE) of it then; with nothing queued a
#: lone runaway never waits).
RESPITE = 0.002
#: A turn holder not seen at a jump for this long loses the turn (see above).
STALL = 0.005
#: A runaway waiting this long for a turn whose holder has not been seen takes it.
LOST = 0.5
#: Free-threaded: JUMP events stay on for all code at most this long while the
#: code of a runaway is looked for (one that is blocked or in C code is looked
#: for again at the next refresh of everyone's).
SEEK = 0.002
#: ... and a runaway not seen at a watched jump for STALL (it loops elsewhere
#: now, or is blocked) is looked for again at most this often: each switch of
#: the events stops the world (all threads, ~1 ms with a few runaways about).
RESEEK = 0.1
#: Free-threaded: how long a new runaway runs before its code is looked for.
SEEK_AFTER = 0.005

_monitoring: Any = getattr(sys, "monitoring", None)


def _unwatch(tool: int, codes: set[CodeType], everywhere: bool) -> None:
    """Switch off the JUMP events ``tool`` had on: for ``codes``, and for all
    code if ``everywhere``."""
    for code in codes:
        _monitoring.set_local_events(tool, code, 0)
    if everywhere:
        _monitoring.set_events(tool, 0)


class _Runaway:
    __slots__ = (
        "credit",
        "donated",
        "ident",
        "kernel",
        "parker",
        "queued",
        "seen",
        "since",
        "sought",
        "urgent",
    )

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.parker = Parker()
        self.since = 0.0  # when its turn (or its last respite) began
        self.credit = 0.0  # kernel work not counted against this turn (Throttle.credit)
        self.seen = 0.0  # when it was last at a jump while its turn
        self.sought = 0.0  # when its code was last looked for (free-threaded)
        self.queued = False  # in a line: ``waiting``, or ``urgent`` if ``urgent``
        self.urgent = False
        # It spawned or killed since its turn began (credit, wake): it waits
        # for its next turn in the ``urgent`` line.
        self.kernel = False
        self.donated = False  # its turn went to the runaway that killed it (wake)


class Throttle:
    """Makes the threads of runaway processes take turns (a no-op where it cannot)."""

    def __init__(
        self,
        stop_at: CodeType | None = None,
        killer: Killer | None = None,
        adopt: Callable[[int], None] | None = None,
        queued: Callable[[], int] | None = None,
        slots: int = 1,
    ) -> None:
        self.stop_at = stop_at
        self.killer = killer if killer is not None else Killer()
        self.adopt = adopt
        self.queued = queued  # processes waiting in the run queues
        self.respites = 0  # times a runaway gave way to queued processes
        self.threads: dict[int, _Runaway] = {}
        self.fresh: set[int] = set()  # runaways whose code refresh() has not looked at
        self.codes: set[CodeType] = set()
        self.lock = threading.Lock()
        # Runaways that run at once: one under the GIL (there is one
        # interpreter to share), one per scheduler without it.
        self.slots = 1 if GIL else max(1, slots)
        # The runaways whose turn it is, and two lines of those waiting for
        # one (changed under ``lock``): runaways that spawned or killed in
        # their last turn wait in ``urgent``, which gets every other turn
        # while both lines hold some (_next).
        self.holders: set[int] = set()
        self.waiting: collections.deque[_Runaway] = collections.deque()
        self.urgent: collections.deque[_Runaway] = collections.deque()
        self.took_urgent = False  # the last turn passed on went to ``urgent``
        self.tool: int | None = None
        # Free-threaded: BEAMLET_FT_THROTTLE=0 switches it off. (It was
        # opt-in while a process spawning or killing runaways from a loop
        # that never yields could wait seconds for its turns: see _next.)
        self.available = _monitoring is not None and (
            GIL or os.environ.get("BEAMLET_FT_THROTTLE") != "0"
        )
        # Free-threaded: runaways whose code is looked for (JUMP events on for
        # all code meanwhile), and the code each was found in.
        self.seeking: set[int] = set()
        self.found: dict[int, CodeType] = {}
        self.seek_since = 0.0
        self.everywhere = False

    def _acquire_tool(self) -> bool:
        if self.tool is not None:
            return True
        if not self.available:
            return False
        for tool in (4, 3, 5, 1):
            try:
                _monitoring.use_tool_id(tool, "beamlet-throttle")
            except ValueError:
                continue
            self.tool = tool
            _monitoring.register_callback(tool, _monitoring.events.JUMP, self._on_jump)
            return True
        self.available = False
        return False

    def add(self, ident: int, tstate: int = 0) -> None:
        """The thread ``ident`` (whose PyThreadState is at ``tstate``, for
        TraceThrottle) runs a runaway process: make it take turns (its code
        is watched from sysmon's next :meth:`refresh`)."""
        with self.lock:
            if not self._acquire_tool():
                return
            r = self.threads.get(ident)
            if r is None:
                r = self.threads[ident] = _Runaway(ident)
                r.sought = time.perf_counter()  # (free-threaded: sought from SEEK_AFTER on)
            self.fresh.add(ident)

    def remove(self, ident: int) -> None:
        """The runaway on thread ``ident`` yielded (or died): end its turns."""
        with self.lock:
            r = self.threads.pop(ident, None)
            self.fresh.discard(ident)
            if r is None:
                return
            self.seeking.discard(ident)
            self.found.pop(ident, None)
            if r.queued:
                self._unqueue(r)
            if ident in self.holders:
                self._pass_on(ident)
            if self.threads:
                return
            codes, self.codes = self.codes, set()
            tool = self.tool
            everywhere, self.everywhere = self.everywhere, False
        if tool is not None:
            with contextlib.suppress(ValueError):  # stop() freed the tool meanwhile
                _unwatch(tool, codes, everywhere)

    def credit(self, ident: int, spent: float) -> None:
        """The runaway on ``ident`` spent ``spent`` seconds in its turn
        spawning a process: not counted against its BUDGET, up to CREDIT a
        turn. (A process that starts a thousand workers from a loop that
        never yields is handed off; on 3.13t, where a spawn costs 20-50 µs
        while runaways spin, it got a dozen spawns a turn, and the workers it
        started joined the line ahead of its next turn: 90 s for a thousand.)"""
        r = self.threads.get(ident)
        if r is None:
            return
        r.kernel = True  # (its own thread's field: only it writes it)
        if r.credit < CREDIT and ident in self.holders:
            spent = min(spent, CREDIT - r.credit)
            r.credit += spent
            r.since += spent  # (its own thread's field: only it writes it)

    def wake(self, ident: int) -> None:
        """Unblock a runaway waiting for its turn (a kill is aimed at it).

        Called by a runaway in its turn (its thread in the throttle: it kills
        from a loop that never yields, a supervisor shutting down the workers
        it just started, say), the victim's turn, which it will not need (it
        may be in line, about to join it, or running), goes to the killer:
        its turn lasts BUDGET longer, once per victim. Else a killer that
        needs more than BUDGET for a few kills (a kill is ~50 µs on 3.13t)
        waited a round of all the runaways every few kills: a thousand took
        it a minute (docs/process-model.md)."""
        r = self.threads.get(ident)
        if r is None:
            return
        killer = self.threads.get(threading.get_ident())
        if killer is not None:
            killer.kernel = True  # (its own thread's fields: only it writes them)
            if not r.donated and killer.ident in self.holders:
                r.donated = True
                killer.since += BUDGET
        r.parker.unpark()

    def refresh(self, everyone: bool = False) -> None:
        """Watch the code objects the runaways execute now: the new runaways',
        or ``everyone``'s (sysmon does that every few ticks)."""
        if self.tool is None or not self.threads:
            return
        if not GIL:
            self._seek(everyone)
            return
        if not (everyone or self.fresh):
            return
        frames = sys._current_frames()
        new: list[CodeType] = []
        with self.lock:
            idents = list(self.threads) if everyone else list(self.fresh)
            self.fresh.clear()
            for ident in idents:
                frame = self._innermost(frames.get(ident))
                if frame is not None and frame.f_code not in self.codes:
                    self.codes.add(frame.f_code)
                    new.append(frame.f_code)
        tool = self.tool
        if tool is None:
            return
        with contextlib.suppress(ValueError):  # stop() freed the tool meanwhile
            for code in new:
                _monitoring.set_local_events(tool, code, _monitoring.events.JUMP)

    def _seek(self, everyone: bool) -> None:
        """Free-threaded refresh (sysmon): a running thread's frames cannot be
        read, so JUMP events go on for all code until each runaway looked for
        has jumped once in its own code (:meth:`_on_jump` notes where); that
        code is then watched, and the events for all code go off again."""
        tool = self.tool
        assert tool is not None
        now = time.perf_counter()
        with self.lock:
            found, self.found = self.found, {}
            new = [c for c in found.values() if c not in self.codes]
            self.codes.update(new)
            if self.everywhere:
                if self.seeking and now - self.seek_since < SEEK:
                    close = False
                else:
                    # Those not seen in time (blocked, or in C code) are looked
                    # for again with everyone's.
                    self.seeking.clear()
                    self.everywhere = False
                    close = True
                start = False
            else:
                close = False
                # A runaway is looked for once it has been one for SEEK_AFTER:
                # most hand-offs of a process that yields soon after (a
                # collection, a burst of page faults) then cost no stop of
                # the world.
                want = set()
                for i in list(self.fresh):
                    r = self.threads.get(i)
                    if r is None or now - r.sought >= SEEK_AFTER:
                        self.fresh.discard(i)
                        if r is not None:
                            want.add(i)
                if everyone:
                    # Those not seen at a watched jump for a while (those
                    # waiting for a turn were seen when they began waiting,
                    # and cannot have moved since).
                    want.update(
                        i
                        for i, r in self.threads.items()
                        if not r.queued and now - r.seen >= STALL and now - r.sought >= RESEEK
                    )
                start = bool(want)
                if start:
                    for i in want:
                        self.threads[i].sought = now
                    self.seeking = want
                    self.seek_since = now
                    self.everywhere = True
        with contextlib.suppress(ValueError):  # stop() freed the tool meanwhile
            for code in new:
                _monitoring.set_local_events(tool, code, _monitoring.events.JUMP)
            if close:
                _monitoring.set_events(tool, 0)
            elif start:
                _monitoring.set_events(tool, _monitoring.events.JUMP)

    def _innermost(self, frame: Any) -> Any:
        """The innermost frame of process code on a runaway's stack (from its
        top ``frame``), or None. Only that one is watched: that is where it
        loops (its callers wait for the call to return). Watching them too
        made every process that runs the same outer code (the connection loop
        of an HTTP server whose handler loops) pay a callback per jump, and be
        taken for a runaway."""
        while frame is not None and frame.f_code is not self.stop_at:
            if is_process_code(frame.f_code):
                return frame
            frame = frame.f_back
        return None

    def unstall(self, now: float) -> None:
        """sysmon: a holder not seen at a jump for STALL (blocked, maybe on a
        lock a waiting runaway holds) passes the turn on."""
        if not (self.waiting or self.urgent) or not self.holders:
            return
        with self.lock:
            for ident in list(self.holders):
                r = self.threads.get(ident)
                if (r is None or now - r.seen >= STALL) and (self.waiting or self.urgent):
                    self._pass_on(ident)

    def stop(self) -> None:
        with self.lock:
            self.threads.clear()
            waiting = [*self.waiting, *self.urgent]
            self.waiting, self.urgent = collections.deque(), collections.deque()
            self.holders.clear()
            codes, self.codes = self.codes, set()
            tool, self.tool = self.tool, None
            everywhere, self.everywhere = self.everywhere, False
        for r in waiting:
            r.parker.unpark()
        if tool is not None:
            _unwatch(tool, codes, everywhere)
            _monitoring.register_callback(tool, _monitoring.events.JUMP, None)
            _monitoring.free_tool_id(tool)

    def _pass_on(self, ident: int) -> None:
        """``ident``'s turn goes to the next waiting runaway (caller holds ``lock``)."""
        self.holders.discard(ident)
        nxt = self._next()
        if nxt is not None:
            nxt.seen = time.perf_counter()
            self.holders.add(nxt.ident)
            nxt.parker.unpark()

    def _next(self) -> _Runaway | None:
        """Take the runaway whose turn is next out of its line (caller holds
        ``lock``): the ``urgent`` line's first every other turn while the
        other holds some, so a supervisor starting or stopping a thousand
        workers from a loop that never yields gets a turn every few turns,
        not a round of all the runaways it started, and the others still get
        half the turns. (The BEAM would do that work in one slice: there a
        spawn or a kill costs a microsecond; on 3.13t, 20-100 µs while
        runaways spin.)"""
        urgent, waiting = self.urgent, self.waiting
        if urgent and not (waiting and self.took_urgent):
            nxt = urgent.popleft()
            self.took_urgent = True
        elif waiting:
            nxt = waiting.popleft()
            self.took_urgent = False
        else:
            return None
        nxt.queued = False
        return nxt

    def _enqueue(self, r: _Runaway) -> None:
        """``r`` waits for a turn, in the line its last turn's work puts it in
        (caller holds ``lock``)."""
        r.urgent = r.kernel
        (self.urgent if r.urgent else self.waiting).append(r)
        r.queued = True

    def _unqueue(self, r: _Runaway) -> None:
        """Take ``r`` out of its line (caller holds ``lock``)."""
        (self.urgent if r.urgent else self.waiting).remove(r)
        r.queued = False

    def _on_jump(self, code: CodeType, src: int, dst: int) -> Any:
        ident = threading.get_ident()
        if self.everywhere:
            # Free-threaded, events on for all code (_seek).
            if code_kind(code) != PROCESS:
                return _monitoring.DISABLE  # never watched: never again from here
            if ident in self.seeking:
                with self.lock:
                    if ident in self.seeking:
                        self.seeking.discard(ident)
                        self.found[ident] = code
            elif code not in self.codes:
                return None  # somebody else's code, not (yet) a runaway's
        self._turn(ident, code, dst)
        return None

    def _turn(self, ident: int, code: CodeType, dst: int) -> None:
        """In a runaway's thread, at a jump (or a line: TraceThrottle) of its
        code: keep the turn for BUDGET, give way to queued processes, or wait
        for the next turn."""
        r = self.threads.get(ident)
        if r is None:
            if self.adopt is not None:
                self.adopt(ident)  # a scheduler running a runaway's code: hand it off
            return
        holders = self.holders
        if ident in holders:
            queued = self.queued
            if not (self.waiting or self.urgent) and queued is None:
                return
            now = r.seen = time.perf_counter()
            if now - r.since < BUDGET:
                return
            if queued is not None and queued() and not self.killer.wants(ident):
                # Processes wait for the schedulers: the runaways give them the
                # interpreter (or the core) for a while (the turn held: no
                # other runaway runs in its place meanwhile; a kill wakes it).
                self.respites += 1
                r.parker.park(RESPITE)
                now = r.seen = time.perf_counter()
            if not (self.waiting or self.urgent):
                r.since, r.credit, r.kernel = now, 0.0, False
                self.killer.jumped(code, dst)
                return
            with self.lock:
                if ident not in holders or not (self.waiting or self.urgent):
                    return
                self._pass_on(ident)
                self._enqueue(r)
        else:
            with self.lock:
                if ident not in self.threads:
                    return
                if len(holders) < self.slots:
                    r.since = r.seen = time.perf_counter()
                    r.credit, r.kernel = 0.0, False
                    holders.add(ident)
                    return
                if not r.queued:
                    self._enqueue(r)
        wants = self.killer.wants
        while ident not in holders and ident in self.threads and not wants(ident):
            # Without the GIL, until it is our turn (or a kill wakes us). A turn
            # holder not seen for LOST loses the turn to us: sysmon normally
            # passes a stalled turn on after STALL (unstall); this is the
            # safety net should it not come round.
            r.parker.park(LOST)
            now = time.perf_counter()
            with self.lock:
                if ident in holders:
                    break
                if not r.queued and ident in self.threads:
                    # Given the turn, but it was passed on (unstall) before
                    # this thread woke to take it: wait in line again.
                    self._enqueue(r)
                threads = self.threads
                lost = [i for i in holders if i not in threads or now - threads[i].seen >= LOST]
                if lost:
                    if r.queued:
                        self._unqueue(r)
                    holders.discard(lost[0])
                    holders.add(ident)
                    r.seen = now
        r.since, r.credit, r.kernel = time.perf_counter(), 0.0, False
        # A kill due in this thread is raised just after the jump (kill.py:
        # raised from a JUMP callback, it would skip this frame's handlers).
        self.killer.jumped(code, dst)


class TraceThrottle(Throttle):
    """The same turns on CPython 3.11, which has no ``sys.monitoring``: driven
    by a trace function, set on a runaway's thread as the TraceKiller sets its
    own (``_PyEval_SetTrace`` on that thread's state, from sysmon), with the
    innermost frame of the runaway's own code given ``f_trace``: its line
    events (a backward jump is one) take the turn logic of :class:`Throttle`.
    Only that frame is traced (new frames get no local trace function). A
    loop that is one instruction jumping to itself reports no line event on
    3.11: such a runaway does not take turns (it competes for the GIL as
    before, at a lower OS priority and a short switch interval).

    The thread's trace slot is shared with the killer: a kill aimed at a
    runaway replaces the trace function with the killer's (which saves and
    puts back ours), and our local trace function hands a line over to the
    killer's whenever a kill is aimed at that thread, so the kill is raised
    there as without a throttle. The runaway's own thread takes the trace
    function off when its process yields (:meth:`remove`, from
    ``Scheduler.retire``)."""

    def __init__(self, trampoline: int, killer: Any, **kw: Any) -> None:
        super().__init__(killer=killer, **kw)
        self.trampoline = trampoline
        self.available = GIL
        self.tstates: dict[int, int] = {}
        self.traced: set[int] = set()  # threads whose trace function we set
        # Bound once: sys.gettrace() is compared with it.
        self.global_trace = self._global_trace
        self.local_trace = self._local_trace

    def _acquire_tool(self) -> bool:
        return self.available

    def add(self, ident: int, tstate: int = 0) -> None:
        super().add(ident)
        if tstate:
            with self.lock:
                if ident in self.threads:
                    self.tstates[ident] = tstate

    def remove(self, ident: int) -> None:
        super().remove(ident)
        with self.lock:
            self.tstates.pop(ident, None)
            ours = ident in self.traced
            self.traced.discard(ident)
        if ours and ident == threading.get_ident() and sys.gettrace() is self.global_trace:
            sys.settrace(None)

    def refresh(self, everyone: bool = False) -> None:
        if not self.threads or not (everyone or self.fresh):
            return
        frames = sys._current_frames()
        with self.lock:
            idents = list(self.threads) if everyone else list(self.fresh)
            self.fresh.clear()
            for ident in idents:
                frame = self._innermost(frames.get(ident))
                if frame is None:
                    continue
                if frame.f_trace is None:
                    frame.f_trace = self.local_trace
                ts = self.tstates.get(ident)
                if ts and ident not in self.traced and not self.killer.wants(ident):
                    if _api._PyEval_SetTrace(ts, self.trampoline, self.global_trace) == 0:
                        self.traced.add(ident)

    def _global_trace(self, frame: Any, event: str, arg: Any) -> Any:
        # New frames in a runaway's thread: not traced (the kill's, if aimed).
        if self.killer.wants(threading.get_ident()):
            return self.killer._trace(frame, event, arg)  # type: ignore[attr-defined]
        return None

    def _local_trace(self, frame: Any, event: str, arg: Any) -> Any:
        ident = threading.get_ident()
        killer = self.killer
        if killer.wants(ident):
            return killer._trace(frame, event, arg)  # type: ignore[attr-defined]
        if ident not in self.threads:
            return None
        if event == "line":
            self._turn(ident, frame.f_code, frame.f_lasti)
            if killer.wants(ident):  # aimed while it waited for its turn
                return killer._trace(frame, event, arg)  # type: ignore[attr-defined]
        return self.local_trace
