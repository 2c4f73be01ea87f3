"""Taking turns: runaway processes share one turn on CPython 3.12+ with a GIL.

Under the GIL every thread that wants to run competes for the interpreter, and
which waiting thread gets it next is up to the OS. Sixteen threads stuck in
busy loops therefore make the one thread that runs ordinary processes wait
behind them for tens of milliseconds.

Where ``sys.monitoring`` exists, sysmon turns on ``JUMP`` events for the code
objects a runaway executes -- only its own ``async def`` code: never beamlet's,
and never a plain function (kernel, library or standard library code may hold a
lock at a jump, and a thread parked for its turn while holding a lock that the
runaway whose turn it is needs would deadlock them all; a 3.12 test run did). A
runaway looping in a plain helper function is left to the GIL switch interval,
as on 3.11. The callback runs in
the runaway's own thread and makes runaways *take turns*: one runaway runs at a
time, for ``BUDGET`` seconds if others wait, then passes the turn on (FIFO) and
blocks without the GIL. So at most one runaway competes with the schedulers
for the GIL, and the runaways together still get all the CPU the rest of the
system leaves them (a lone runaway never waits). Threads that execute the same
code without being runaways pay one dictionary lookup per jump while a runaway
exists.

Free-threaded builds have no GIL to share, so runaways run in parallel there;
Python 3.11 has no hook: only the GIL switch interval and the OS priority help
(sysmon.py).
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from inspect import CO_COROUTINE
from types import CodeType
from typing import Any

from beamlet._kernel.kill import Killer
from beamlet._kernel.parker import GIL, Parker

BUDGET = 0.0005

_monitoring: Any = getattr(sys, "monitoring", None)


class _Runaway:
    __slots__ = ("ident", "parker", "since")

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.parker = Parker()
        self.since = 0.0


class Throttle:
    """Makes the threads of runaway processes take turns (a no-op where it cannot)."""

    def __init__(self, stop_at: CodeType | None = None, killer: Killer | None = None) -> None:
        self.stop_at = stop_at
        self.killer = killer if killer is not None else Killer()
        self.threads: dict[int, _Runaway] = {}
        self.codes: set[CodeType] = set()
        self.lock = threading.Lock()
        self.holder: int | None = None  # the runaway whose turn it is
        self.waiting: collections.deque[_Runaway] = collections.deque()
        self.tool: int | None = None
        self.available = _monitoring is not None and GIL

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

    def add(self, ident: int) -> None:
        """The thread ``ident`` runs a runaway process: make it take turns."""
        with self.lock:
            if not self._acquire_tool():
                return
            self.threads.setdefault(ident, _Runaway(ident))
        self.refresh()

    def remove(self, ident: int) -> None:
        """The runaway on thread ``ident`` yielded (or died): end its turns."""
        with self.lock:
            r = self.threads.pop(ident, None)
            if r is None:
                return
            if r in self.waiting:
                self.waiting.remove(r)
            if self.holder == ident:
                self._pass_on()
            if self.threads:
                return
            codes, self.codes = self.codes, set()
            tool = self.tool
        if tool is not None:
            for code in codes:
                _monitoring.set_local_events(tool, code, 0)

    def wake(self, ident: int) -> None:
        """Unblock a runaway waiting for its turn (a kill is aimed at it)."""
        r = self.threads.get(ident)
        if r is not None:
            r.parker.unpark()

    def refresh(self) -> None:
        """Watch the code objects the runaways execute now."""
        if self.tool is None or not self.threads:
            return
        frames = sys._current_frames()
        new: list[CodeType] = []
        with self.lock:
            for ident in self.threads:
                frame = frames.get(ident)
                while frame is not None and frame.f_code is not self.stop_at:
                    code = frame.f_code
                    if code not in self.codes and _may_wait_for_a_turn(code):
                        self.codes.add(code)
                        new.append(code)
                    frame = frame.f_back
        for code in new:
            _monitoring.set_local_events(self.tool, code, _monitoring.events.JUMP)

    def stop(self) -> None:
        with self.lock:
            self.threads.clear()
            waiting, self.waiting = list(self.waiting), collections.deque()
            self.holder = None
            codes, self.codes = self.codes, set()
            tool, self.tool = self.tool, None
        for r in waiting:
            r.parker.unpark()
        if tool is not None:
            for code in codes:
                _monitoring.set_local_events(tool, code, 0)
            _monitoring.register_callback(tool, _monitoring.events.JUMP, None)
            _monitoring.free_tool_id(tool)

    def _pass_on(self) -> None:
        """Give the turn to the next waiting runaway (caller holds ``lock``)."""
        if self.waiting:
            nxt = self.waiting.popleft()
            self.holder = nxt.ident
            nxt.parker.unpark()
        else:
            self.holder = None

    def _on_jump(self, code: CodeType, src: int, dst: int) -> None:
        ident = threading.get_ident()
        r = self.threads.get(ident)
        if r is None:
            return
        if self.holder == ident:
            if not self.waiting or time.perf_counter() - r.since < BUDGET:
                return
            with self.lock:
                if self.holder != ident or not self.waiting:
                    return
                self._pass_on()
                self.waiting.append(r)
        else:
            with self.lock:
                if ident not in self.threads:
                    return
                if self.holder is None:
                    self.holder = ident
                    r.since = time.perf_counter()
                    return
                if r not in self.waiting:
                    self.waiting.append(r)
        wants = self.killer.wants
        while self.holder != ident and ident in self.threads and not wants(ident):
            r.parker.park()  # without the GIL, until it is our turn (or a kill wakes us)
        r.since = time.perf_counter()
        # A jump in process code is a safe point for a kill (kill.py).
        self.killer.fire(code)


_BEAMLET_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _may_wait_for_a_turn(code: CodeType) -> bool:
    """Only a process's own ``async def`` code parks for its turn (see above)."""
    return bool(code.co_flags & CO_COROUTINE) and not code.co_filename.startswith(_BEAMLET_DIR)
