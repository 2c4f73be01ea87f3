"""Killing a process while it runs: where an AsyncKill may land, and how it gets there.

A process that never awaits cannot be stopped at a kernel trap: ``exit(pid,
"kill")`` has to raise an exception inside its running code, on the thread that
runs it. Raised at the wrong instruction, that exception does damage that
outlives the process: between a library's ``lock.acquire()`` and its ``try``
it leaves the lock held for everyone (seen: ``logging``'s handler lock, after
which every process that logged hung); inside a weakref callback or a
``__del__`` it becomes an "unraisable" exception and the kill vanishes; in a
scheduler's own loop it kills the scheduler thread.

The rule: **an AsyncKill lands only in process code**, never in the standard
library or beamlet's kernel (:func:`is_process_code`): the process's own
functions, third-party libraries and ``beamlet.otp``. There it is just an
exception raised by the process's own code, which every library must already
cope with when it calls user code; the ``finally`` blocks and ``with``
statements below it run as it unwinds, so their locks are released.

Two ways to get it there:

* :class:`MonitoringKiller` (CPython 3.12+, with or without the GIL): a
  ``sys.monitoring`` tool watches LINE and JUMP events in the process code the
  victim runs; the callback runs *in the victim's thread*, sees that a kill is
  aimed at the process running there and raises it, synchronously, at that
  line. Nothing is ever pending asynchronously, so nothing can go off later in
  the wrong place. Other threads that run the same code pay one dict lookup per
  line while the kill is under way; the events are switched off when no kill is
  (without the GIL, LINGER after the last was aimed: each switch stops the world).
* :class:`AsyncExcKiller` (3.11, or when no monitoring tool id is free):
  ``PyThreadState_SetAsyncExc``, which fires at the victim's next eval-breaker
  check. Under the GIL a thread that is not running is paused either at such a
  check (it fires right there) or inside a C call (it fires when the call
  returns, in the calling frame): in both cases in the thread's *top frame*. So
  the killer samples the victim's top frame and injects only if that is process
  code, with no eval-breaker check in between (the sample is taken by a
  ``FOR_ITER`` over ``iter(sys._current_frames, None)``, which does not check,
  and the next call is the injection itself). A scheduler whose process stopped
  running clears any injection aimed at it with a *direct* call of the ctypes
  function (entering a Python function would run the pending exception first).
  Residual risk, documented: a garbage collection or a C function calling back
  into Python between the sample and the firing can make it fire in that
  callback; a swallowed kill is aimed again on sysmon's next tick.

Either way sysmon pursues a killed process every tick until its code stops
(docs/process-model.md, "Killing a running process").
"""

from __future__ import annotations

import ctypes
import dis
import os
import sys
import sysconfig
import threading
import time
import weakref
from types import CodeType
from typing import TYPE_CHECKING, Any

from beamlet._kernel.parker import GIL
from beamlet._kernel.process import ProcessExit

if TYPE_CHECKING:
    from beamlet._kernel.process import Process
    from beamlet._kernel.scheduler import Scheduler


class AsyncKill(ProcessExit):
    """Raised inside a process that is killed while it runs (never awaits).

    Catching it does not save the process: the kernel already decided it dies
    (its reason is the one the exit signal carried). It is raised again on
    sysmon's next tick while the process runs on, and a process that keeps
    swallowing it is declared dead anyway, its links and monitors told, while
    its thread runs on until the code stops.
    """


# ---------------------------------------------------------------- process code

_BEAMLET_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# beamlet code in which a kill may land: the OTP behaviours run user callbacks
# and hold no lock of their own across them; the node's services (net_kernel,
# rex) are ordinary processes built on them.
_BEAMLET_PROCESS_CODE = (
    os.path.join(_BEAMLET_DIR, "otp") + os.sep,
    os.path.join(_BEAMLET_DIR, "net_kernel.py"),
    os.path.join(_BEAMLET_DIR, "rpc.py"),
    os.path.join(_BEAMLET_DIR, "net", "listener.py"),
    os.path.join(_BEAMLET_DIR, "http") + os.sep,
)


def _stdlib_dirs() -> tuple[str, ...]:
    dirs = set()
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.realpath(path) + os.sep)
            dirs.add(os.path.abspath(path) + os.sep)
    return tuple(dirs)


_STDLIB_DIRS = _stdlib_dirs()
_THIRD_PARTY = ("site-packages", "dist-packages")


PROCESS, STDLIB, KERNEL = 0, 1, 2


def _kind_of_file(filename: str) -> int:
    if filename.startswith("<frozen "):
        return STDLIB  # frozen standard library modules (importlib, codecs, ...)
    if filename.startswith(_BEAMLET_DIR):
        return PROCESS if filename.startswith(_BEAMLET_PROCESS_CODE) else KERNEL
    for root in _STDLIB_DIRS:
        if filename.startswith(root):
            first = filename[len(root) :].split(os.sep, 1)[0]
            return PROCESS if first in _THIRD_PARTY else STDLIB
    return PROCESS


_kinds: dict[str, int] = {}


def code_kind(code: CodeType) -> int:
    """PROCESS, STDLIB or KERNEL (beamlet's kernel and distribution layer)."""
    filename = code.co_filename
    kind = _kinds.get(filename)
    if kind is None:
        kind = _kinds[filename] = _kind_of_file(filename)
    return kind


def is_process_code(code: CodeType) -> bool:
    """Whether a kill may land in ``code``: anything but the standard library
    and beamlet's kernel and distribution layer (see the module docstring)."""
    return code_kind(code) == PROCESS


# ---------------------------------------------------------------- finalizers

# Finalizers and weakref callbacks run in whatever thread drops the last
# reference or runs the garbage collector, in the middle of that thread's code,
# and an exception raised in them is "unraisable": printed and dropped. A kill
# never goes off there (it would vanish): not in a ``__del__``, and not while
# the cyclic collector runs in the thread (gc.callbacks tells when).
_collecting: set[int] = set()


def _gc_started(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _collecting.add(threading.get_ident())


def _gc_stopped(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop":
        _collecting.discard(threading.get_ident())


def _watch_collections(on: bool) -> None:
    """The flag is raised by the first gc callback and lowered by the last, so
    that other libraries' gc callbacks (hypothesis has one) run inside it."""
    import gc

    for cb in (_gc_started, _gc_stopped):
        while cb in gc.callbacks:
            gc.callbacks.remove(cb)
    if on:
        gc.callbacks.insert(0, _gc_started)
        gc.callbacks.append(_gc_stopped)


def in_finalizer(code: CodeType, ident: int) -> bool:
    """Whether code running on thread ``ident`` may be a finalizer or a weakref
    callback that the garbage collector runs (a kill must not go off there)."""
    return ident in _collecting or code.co_name == "__del__"


_unsafe: dict[CodeType, frozenset[int]] = {}


def unsafe_offsets(code: CodeType) -> frozenset[int]:
    """Offsets in process code where a kill must not be raised though a line
    event comes there (``f_lasti`` at the event):

    * the normal exit of a ``with`` block, ``__exit__(None, None, None)``: it
      carries the with's line and no handler of the with covers it, so a kill
      raised there skips the ``__exit__`` (the lock taken stays held);
    * the entry of an exception handler (PUSH_EXC_INFO; a with's carries the
      with's line): raised there, the new exception skips that handler (the
      with's ``__exit__`` again).

    The kill is raised at a later line instead (sysmon keeps aiming it)."""
    got = _unsafe.get(code)
    if got is None:
        found: set[int] = set()
        ins = list(dis.get_instructions(code))
        for i, x in enumerate(ins):
            if x.opname == "PUSH_EXC_INFO":
                found.add(x.offset)
            elif x.opname == "LOAD_CONST" and x.argval is None and i + 3 < len(ins):
                # __exit__(None, None, None): 3.12+ CALL 2; 3.11 PRECALL 2, CALL 2
                nones = ins[i + 1 : i + 3]
                call = ins[i + 3]
                if (
                    all(y.opname == "LOAD_CONST" and y.argval is None for y in nones)
                    and call.opname in ("CALL", "PRECALL")
                    and call.arg == 2
                ):
                    found.update(y.offset for y in ins[i : i + 4])
        got = _unsafe[code] = frozenset(found)
    return got


def unwinding_from_a_kill() -> bool:
    """Whether the calling thread handles an AsyncKill: its process unwinds
    from the kill (a ``finally`` block, an ``__exit__``, an ``except`` clause).
    sysmon, seeing it still run, aims the kill again (it may have been
    swallowed): that must not cut the unwinding short. Once it has swallowed
    the kill (its ``except`` clause is over), the next one is raised."""
    return isinstance(sys.exception(), AsyncKill)


# ---------------------------------------------------------------- the killers


class Killer:
    """How a kill reaches the code of a running process (the no-op base)."""

    #: Whether the scheduler must clear an injection after its process stops.
    asynchronous = False

    def aim(self, s: Scheduler, proc: Process) -> bool:
        """Make ``proc``, running on ``s``, raise AsyncKill at its next safe point.

        Called under ``s.kill_lock`` with ``s.current is proc``. False if it
        could not be done now (sysmon tries again on its next tick).
        """
        return False

    def wants(self, ident: int) -> bool:
        """Whether a kill is aimed at the process running on thread ``ident``
        (a runaway waiting for its turn must stop waiting: throttle.py)."""
        return False

    def fire(self, code: CodeType | None = None) -> None:
        """In the victim's thread, at a safe point in ``code``: raise the kill
        now if one is aimed here."""

    def jumped(self, code: CodeType, dst: int) -> None:
        """In a thread, at a JUMP event in process code ``code`` (to offset
        ``dst``): a kill due here is raised after the jump, not in it."""

    def settle(self, s: Scheduler) -> None:
        """The process on ``s`` stopped running: forget a kill aimed at it there."""

    def refresh(self, victims: list[tuple[Scheduler, Process]], stop_at: CodeType) -> None:
        """sysmon, every tick while kills are under way: follow the victims' code."""

    def idle(self) -> None:
        """No kill is under way any more."""

    def start(self) -> None:
        """The runtime starts."""
        _watch_collections(True)

    def stop(self) -> None:
        """The runtime stops."""
        _watch_collections(False)


# --- 3.11: PyThreadState_SetAsyncExc, only while the victim's top frame is process code

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class Cleared(BaseException):
    """What a pending injection is replaced with when its kill is forgotten:
    raised and caught at once, in the thread's own kernel code."""


#: ``clear_async_exc(ident, CLEARED)`` forgets a pending injection on the
#: calling thread: it replaces it with :class:`Cleared`, which fires at the
#: call's own eval-breaker check (or at the latest on entry to
#: :func:`consume_cleared`), so every site reads::
#:
#:     try:
#:         clear_async_exc(sched.ident, CLEARED)  # a C call: no frame to enter
#:         consume_cleared()
#:     except Cleared:
#:         pass
#:
#: Not ``PyThreadState_SetAsyncExc(ident, NULL)``: that clears the thread's
#: exception but leaves the interpreter's async-exception signal set (3.11),
#: so every thread then takes the eval breaker's slow path at every check,
#: and a thread with a trace function (coverage, a debugger: the case where
#: this killer is used on 3.11) spins for good at its next function entry.
#: Consuming an exception is what clears the signal. The ctypes function is
#: called itself (a C call): a Python function would raise the pending kill
#: on entry, in kernel code.
CLEARED = ctypes.py_object(Cleared)
clear_async_exc = _set_async_exc


def consume_cleared() -> None:
    """Entered right after ``clear_async_exc(ident, CLEARED)``: its entry is an
    eval-breaker check, where :class:`Cleared` fires if it has not yet."""


# CPython 3.11 gives the thread state of a thread being started its creator's
# ident until the new thread first runs, and PyThreadState_SetAsyncExc sets the
# exception on the first thread state with that ident: the newest, the thread
# being started. Aimed at a process that is starting a thread, the kill would
# hit that thread in its bootstrap, before it signals that it started, and the
# process would wait for it in ``Thread.start`` forever. 3.12 binds the ident
# in the new thread only. So on 3.11 a kill is not injected while a
# ``threading.Thread`` is being started (they sit in ``threading._limbo`` from
# before their thread state exists until after it has its own ident); sysmon
# retries on its next tick. ``_thread.start_new_thread`` called directly is not
# covered.
_NEW_THREADS_BORROW_IDENT = sys.version_info < (3, 12)
_limbo: dict[threading.Thread, threading.Thread] | None = getattr(threading, "_limbo", None)
_limbo_lock: Any = getattr(threading, "_active_limbo_lock", None)
# A limbo entry whose start was cut short (an exception between its entry into
# _limbo and the OS thread's creation) stays there for good; past this age an
# unstarted entry is taken for such a leftover rather than a start under way.
_LEFTOVER_AFTER = 0.5
_first_seen: weakref.WeakKeyDictionary[threading.Thread, float] = weakref.WeakKeyDictionary()


def _a_thread_is_starting() -> bool:
    assert _limbo is not None
    now = time.monotonic()
    for t in list(_limbo):
        if t._started.is_set():  # type: ignore[attr-defined]
            continue
        if now - _first_seen.setdefault(t, now) < _LEFTOVER_AFTER:
            return True
    return False


# FOR_ITER over this calls sys._current_frames without an eval-breaker check.
_SAMPLE_FRAMES = iter(sys._current_frames, None)


#: Offsets of a code object where an injected kill may fire: all of them
#: (process code, AsyncExcKiller) or none. ``in`` on a range or a frozenset is
#: a C-level test: no eval-breaker check between sample and injection.
_ANYWHERE = range(0, sys.maxsize)
_NOWHERE: frozenset[int] = frozenset()


def _inject_at_top(ident: int, offsets: dict[CodeType, Any], classify: Any) -> bool:
    """Inject an AsyncKill into thread ``ident`` if its top frame is paused at
    one of ``offsets[code]`` (``classify(code)`` fills the table for a code
    object not seen before; the sample is then taken again, the victim may
    have moved on). From the sample to the injection no instruction checks
    the eval breaker, so the victim cannot run in between (module docstring).
    True if injected."""
    code: Any = None
    for _ in range(3):
        sampled = False
        try:
            for frames in _SAMPLE_FRAMES:
                frame = frames[ident]
                code = frame.f_code
                sampled = True
                if frame.f_lasti in offsets[code] and ident not in _collecting:
                    _set_async_exc(ident, AsyncKill)
                    return True
                return False
        except KeyError:
            if not sampled:
                return False  # the thread is gone
            offsets[code] = classify(code)
    return False


def _anywhere_in_process_code(code: CodeType) -> Any:
    return _ANYWHERE if code_kind(code) == PROCESS else _NOWHERE


class AsyncExcKiller(Killer):
    """The fallback. It can only stop code that is at the top of its thread's
    stack at one of sysmon's samples: a process that lives in the standard
    library (blocked on a lock, starting threads in a loop) is declared dead
    after ZOMBIE_AFTER and its thread runs on until it is caught in its own code.
    It is never shot in library code: that is what left locks held."""

    asynchronous = True

    def __init__(self) -> None:
        self.offsets: dict[CodeType, Any] = {}  # where a kill may fire (_inject_at_top)
        self.targets: set[int] = set()  # threads a kill is aimed at, injected or not yet

    def aim(self, s: Scheduler, proc: Process) -> bool:
        self.targets.add(s.ident)
        if _NEW_THREADS_BORROW_IDENT and _limbo is not None and _limbo_lock is not None:
            # Holding the lock, no thread can enter _limbo (so none can start).
            if not _limbo_lock.acquire(blocking=False):
                return False
            try:
                if _a_thread_is_starting():
                    return False
                return self._inject_if_safe(s.ident)
            finally:
                _limbo_lock.release()
        return self._inject_if_safe(s.ident)

    def _inject_if_safe(self, ident: int) -> bool:
        return _inject_at_top(ident, self.offsets, _anywhere_in_process_code)

    def wants(self, ident: int) -> bool:
        return ident in self.targets

    def settle(self, s: Scheduler) -> None:
        self.targets.discard(s.ident)


# --- 3.11: a trace function set on the victim's thread raises the kill in its own thread

_api = ctypes.pythonapi


def c_trampoline(setter: Any, getter: Any, func_offset: int, obj_offset: int) -> int | None:
    """The C function ``setter`` (``sys.settrace`` or ``sys.setprofile``)
    installs in a CPython 3.11 thread state, read at ``func_offset`` while a
    known Python function is set, after checking that ``obj_offset`` holds
    exactly that function. None elsewhere, or if the layout is not the one
    expected. Whatever ``getter`` returned before is put back."""
    if sys.version_info[:2] != (3, 11):
        return None
    try:
        _api.PyThreadState_Get.restype = ctypes.c_void_p
    except AttributeError:
        return None

    def probe(frame: Any, event: str, arg: Any) -> None:
        return None

    old = getter()
    setter(probe)
    try:
        ts = _api.PyThreadState_Get()
        if ctypes.c_void_p.from_address(ts + obj_offset).value != id(probe):
            return None
        func = ctypes.c_void_p.from_address(ts + func_offset).value
        return int(func) if func else None
    finally:
        setter(old)


def _trace_trampoline() -> int | None:
    """The C function ``sys.settrace`` installs (3.11 only, and only while no
    tracer is set, unless the fallback is forced; see :func:`c_trampoline`)."""
    if os.environ.get("BEAMLET_ASYNC_EXC_KILLS") or sys.gettrace() is not None:
        return None
    try:
        _api._PyEval_SetTrace.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.py_object)
        _api._PyEval_SetTrace.restype = ctypes.c_int
    except AttributeError:
        return None
    return c_trampoline(sys.settrace, sys.gettrace, _TRACEFUNC, _TRACEOBJ)


def _process_self_loops(code: CodeType) -> frozenset[int]:
    """Offsets of the backward jumps in process code ``code`` that jump to
    themselves (none outside process code)."""
    if not is_process_code(code):
        return _NOWHERE
    return frozenset(
        x.offset
        for x in dis.get_instructions(code)
        if x.opname.startswith("JUMP_BACKWARD") and x.argval == x.offset
    )


# Offsets of c_tracefunc and c_traceobj in CPython 3.11's PyThreadState
# (Include/cpython/pystate.h), checked by _trace_trampoline before use.
_TRACEFUNC = 72
_TRACEOBJ = 88


class TraceKiller(Killer):
    """Kills land at line events of process code, raised by the victim's thread.

    To aim, the killer (holding the GIL) gives the victim's thread a trace
    function, with CPython's own ``_PyEval_SetTrace`` on that thread's state,
    as ``threading.settrace_all_threads`` does in 3.12, and sets ``f_trace`` on
    the process-code frames of its stack. The trace function runs in the
    victim's thread: at the next line (or call) of process code it raises the
    kill. CPython removes the trace function when it raises; a scheduler
    whose process stopped running removes it itself (``sys.settrace`` on its
    own thread) and puts back whatever tracer was there before.
    """

    def __init__(self, trampoline: int, current_scheduler: Any) -> None:
        self.trampoline = trampoline
        self.current_scheduler = current_scheduler
        self.armed: dict[int, Process] = {}
        self.saved: dict[int, tuple[int | None, int | None]] = {}
        self.self_loops: dict[CodeType, frozenset[int]] = {}

    def aim(self, s: Scheduler, proc: Process) -> bool:
        ts = s.tstate
        if not ts:
            return False
        if s.ident not in self.saved:
            self.saved[s.ident] = (
                ctypes.c_void_p.from_address(ts + _TRACEFUNC).value,
                ctypes.c_void_p.from_address(ts + _TRACEOBJ).value,
            )
        self.armed[s.ident] = proc
        frame = getattr(proc.coro, "cr_frame", None)
        if frame is not None:
            frame.f_trace = self._trace
        status: int = _api._PyEval_SetTrace(ts, self.trampoline, self._trace)
        if status == 0:
            self._inject_in_self_loop(s.ident)
        return status == 0

    def _inject_in_self_loop(self, ident: int) -> None:
        """A loop that is one instruction jumping to itself (``while True:
        pass``) gets no line event on 3.11 (a backward jump is reported only
        when it lands before the jump), so the trace function never runs
        there. If the victim's top frame is process code paused at such a
        jump, inject the kill as :class:`AsyncExcKiller` does: it fires at that
        jump's eval-breaker check, in that frame (the sample and the injection
        have no eval-breaker check between them: see its docstring), where no
        handler or ``with`` exit is under way.

        The injection always fires (nothing else gets the thread out of that
        loop), so the scheduler has nothing to clear afterwards -- and must
        not: on 3.11, clearing with ``PyThreadState_SetAsyncExc(id, NULL)``
        leaves the interpreter's async-exception signal set, and a thread
        with a trace function then spins for good at its next function entry
        (DO_TRACING re-dispatches RESUME while the eval breaker stays set)."""
        _inject_at_top(ident, self.self_loops, _process_self_loops)

    def _trace(self, frame: Any, event: str, arg: Any) -> Any:
        ident = threading.get_ident()
        proc = self.armed.get(ident)
        if proc is None or not is_process_code(frame.f_code):
            return None
        s = self.current_scheduler()
        if s is None or s.current is not proc or s.masked_depth or s.closing:
            return self._trace
        if in_finalizer(frame.f_code, ident) or unwinding_from_a_kill():
            return self._trace
        if frame.f_lasti in unsafe_offsets(frame.f_code):
            return self._trace
        if event == "line" or event == "call":
            self.armed.pop(ident, None)  # sysmon aims again next tick if it is swallowed
            raise AsyncKill(proc.doom)
        return self._trace

    def wants(self, ident: int) -> bool:
        return ident in self.armed

    def settle(self, s: Scheduler) -> None:
        # In s's own thread, after its process stopped running.
        self.armed.pop(s.ident, None)
        saved = self.saved.pop(s.ident, None)
        if saved is None:
            return
        func, obj = saved
        if func is None:
            sys.settrace(None)
        else:
            prev = ctypes.cast(obj, ctypes.py_object).value if obj else None
            _api._PyEval_SetTrace(s.tstate, func, prev)

    def refresh(self, victims: list[tuple[Scheduler, Process]], stop_at: CodeType) -> None:
        frames = sys._current_frames()
        for s, _proc in victims:
            frame = frames.get(s.ident)
            while frame is not None and frame.f_code is not stop_at:
                if frame.f_trace is None and is_process_code(frame.f_code):
                    frame.f_trace = self._trace
                frame = frame.f_back


# --- 3.12+: sys.monitoring raises the kill in the victim's own thread

_monitoring: Any = getattr(sys, "monitoring", None)


#: Free-threaded: how long the events a kill switched on stay on after the
#: last kill was aimed (MonitoringKiller.idle).
LINGER = 1.0


class MonitoringKiller(Killer):
    """Kills land at LINE / JUMP events of process code, raised by the victim's thread.

    The code watched: the victim's coroutine's at once (:meth:`aim`); while it
    runs on, the process code on its thread's stack (:meth:`refresh`), read from
    ``sys._current_frames()``. Not on a free-threaded build: there, reading a
    frame of a thread that runs is a use-after-free (CPython gh-118680; sysmon
    crashed the interpreter that way), and each ``sys._current_frames()`` stops
    the world, which with hundreds of runaway threads took up to 0.6 s. There
    refresh switches JUMP events on for all code instead (every loop jumps),
    until no kill is under way; a jump location in code a kill must not land
    in disables itself (``sys.monitoring.DISABLE``): library code pays once.

    A kill is raised from a LINE event, never from a JUMP event: CPython
    (3.12, 3.13) unwinds an exception raised by a JUMP callback past the
    ``finally``, ``except`` and ``with`` blocks of the frame that jumped (its
    handlers never run: a ``with lock:`` around the loop left the lock held).
    A loop on one line has no LINE event per turn, so a JUMP in the armed
    thread switches INSTRUCTION events on for that code (:meth:`_step`), and
    the kill is raised at the jump's target instruction, where handlers work.
    """

    def __init__(self, current_scheduler: Any) -> None:
        self.current_scheduler = current_scheduler
        self.armed: dict[int, Process] = {}  # thread ident -> the process to kill there
        self.codes: set[CodeType] = set()  # code objects with events on
        self.stepped: set[CodeType] = set()  # ... INSTRUCTION events included
        # thread ident -> (code, offset): the jump target a kill is raised at
        self.targets: dict[int, tuple[CodeType, int]] = {}
        self.everywhere = False  # JUMP events on for all code (free-threaded refresh)
        self.aimed_at = 0.0  # time.monotonic() of the last aim (LINGER)
        self.lock = threading.Lock()
        self.tool: int | None = None
        if _monitoring is None:
            return
        for tool in (3, 4, 5, 2):
            try:
                _monitoring.use_tool_id(tool, "beamlet-kill")
            except ValueError:
                continue
            self.tool = tool
            ev = _monitoring.events
            _monitoring.register_callback(tool, ev.LINE, self._on_line)
            _monitoring.register_callback(tool, ev.JUMP, self._on_jump)
            _monitoring.register_callback(tool, ev.INSTRUCTION, self._on_instruction)
            break

    @property
    def available(self) -> bool:
        return self.tool is not None

    def wants(self, ident: int) -> bool:
        return ident in self.armed

    def settle(self, s: Scheduler) -> None:
        self.armed.pop(s.ident, None)
        self.targets.pop(s.ident, None)

    def aim(self, s: Scheduler, proc: Process) -> bool:
        code = getattr(proc.coro, "cr_code", None)
        with self.lock:  # armed and watched together: idle() sees both or neither
            self.armed[s.ident] = proc
            self.aimed_at = time.monotonic()
            if code is not None:
                self._watch_locked([code])
        return True

    def _due(self, code: CodeType | None, offset: int = -1) -> Process | None:
        """In a thread at a safe point (``offset`` in ``code``, when known):
        the process a kill is to be raised in now, if any."""
        if code is not None and offset >= 0 and offset in unsafe_offsets(code):
            return None
        ident = threading.get_ident()
        proc = self.armed.get(ident)
        if proc is None:
            return None
        due: Process = proc  # (the checks below narrow ``proc`` to Any)
        s = self.current_scheduler()
        if s is None or s.current is not proc or s.masked_depth or s.closing:
            return None
        if (code is not None and in_finalizer(code, ident)) or unwinding_from_a_kill():
            return None
        return due

    def fire(self, code: CodeType | None = None, offset: int = -1) -> None:
        """In a thread at a safe point: raise the kill aimed at its process, if any."""
        proc = self._due(code, offset)
        if proc is not None:
            self.armed.pop(threading.get_ident(), None)  # aimed again if it is swallowed
            raise AsyncKill(proc.doom)

    def jumped(self, code: CodeType, dst: int) -> None:
        """At a JUMP event in process code (here, or in the throttle's): never
        raise here (class docstring); if a kill is due in this thread, have it
        raised at the jump's target."""
        if self._due(code) is None:
            return
        ident = threading.get_ident()
        target = (code, dst)
        if self.targets.get(ident) == target and code not in self.stepped:
            # The same jump again with no line event between (the LINE at
            # its target raises the kill in a loop of several lines): a loop
            # on one line, stepped to its target from now on. (Not at the
            # first jump: switching events on stops the world on a
            # free-threaded build, ~1 ms with a few runaway threads about.)
            self._step(code)
        self.targets[ident] = target

    def _step(self, code: CodeType) -> None:
        with self.lock:
            if self.tool is None or code in self.stepped:
                return
            self.stepped.add(code)
            self.codes.add(code)
            ev = _monitoring.events
            _monitoring.set_local_events(self.tool, code, ev.LINE | ev.JUMP | ev.INSTRUCTION)

    def _on_line(self, code: CodeType, line: int) -> None:
        if self.armed:
            self.fire(code, sys._getframe(1).f_lasti)  # the frame of ``code``

    def _on_jump(self, code: CodeType, src: int, dst: int) -> Any:
        if code_kind(code) != PROCESS:
            # Only events on for all code (free-threaded refresh) come from
            # such code: never a kill there, and never again from here.
            return _monitoring.DISABLE
        if self.armed:
            self.jumped(code, dst)
        return None

    def _on_instruction(self, code: CodeType, offset: int) -> None:
        if self.targets and self.targets.get(threading.get_ident()) == (code, offset):
            del self.targets[threading.get_ident()]
            self.fire(code, offset)

    def refresh(self, victims: list[tuple[Scheduler, Process]], stop_at: CodeType) -> None:
        if not GIL:
            with self.lock:
                if not self.everywhere and self.tool is not None:
                    self.everywhere = True
                    _monitoring.set_events(self.tool, _monitoring.events.JUMP)
            return
        frames = sys._current_frames()
        new = []
        for s, _proc in victims:
            frame = frames.get(s.ident)
            while frame is not None and frame.f_code is not stop_at:
                code = frame.f_code
                if code not in self.codes and is_process_code(code):
                    new.append(code)
                frame = frame.f_back
        if new:
            self._watch(new)

    def _watch(self, codes: list[CodeType]) -> None:
        with self.lock:
            self._watch_locked(codes)

    def _watch_locked(self, codes: list[CodeType]) -> None:
        # ``codes`` and the events change together under ``lock``: an idle()
        # that switched the events off for a code added meanwhile would leave
        # it in ``codes`` with no events, and no later _watch would switch them
        # on again (seen on free-threaded 3.13: killed processes ran on for good).
        tool = self.tool
        if tool is None:
            return
        events = _monitoring.events.LINE | _monitoring.events.JUMP
        for code in codes:
            if code not in self.codes and is_process_code(code):
                self.codes.add(code)
                _monitoring.set_local_events(tool, code, events)

    def idle(self) -> None:
        """No kill is under way (sysmon, each tick): switch the events off.
        Free-threaded, the events on the code of the victims stay on for
        LINGER after the last aim: each switch stops the world (~1 ms with
        hundreds of runaway threads about), and a process killing runaways
        one after the other paid it for every kill; charged to its turn
        (throttle.py), that cost it a round of all the runaways per kill."""
        with self.lock:
            if not self.codes and not self.everywhere:
                return
            self.armed.clear()
            self.targets.clear()
            tool = self.tool
            if self.everywhere:
                if tool is not None:
                    _monitoring.set_events(tool, 0)
                self.everywhere = False
            if not GIL and time.monotonic() - self.aimed_at < LINGER:
                return
            codes, self.codes = self.codes, set()
            self.stepped = set()
            if tool is not None:
                for code in codes:
                    _monitoring.set_local_events(tool, code, 0)

    def stop(self) -> None:
        super().stop()
        self.idle()
        with self.lock:
            tool, self.tool = self.tool, None
        if tool is not None:
            _monitoring.register_callback(tool, _monitoring.events.LINE, None)
            _monitoring.register_callback(tool, _monitoring.events.JUMP, None)
            _monitoring.register_callback(tool, _monitoring.events.INSTRUCTION, None)
            _monitoring.free_tool_id(tool)


_TRAMPOLINE = _trace_trampoline()


def thread_state() -> int:
    """The calling thread's PyThreadState address (TraceKiller aims at it); 0 if unused."""
    if _TRAMPOLINE is None:
        return 0
    return int(_api.PyThreadState_Get() or 0)


def make_killer(current_scheduler: Any) -> Killer:
    """The best way to deliver kills on this interpreter (see the module docstring).

    ``BEAMLET_ASYNC_EXC_KILLS=1`` in the environment forces the fallback (tests).
    Not on a free-threaded build: the fallback samples the frames of the
    victim's thread as it runs, which is unsafe there (MonitoringKiller); with
    no free monitoring tool a kill cannot reach running code there at all, and
    a killed runaway is declared dead after ZOMBIE_AFTER (sysmon.py).
    """
    if os.environ.get("BEAMLET_ASYNC_EXC_KILLS") and GIL:
        return AsyncExcKiller()
    if _monitoring is not None:
        killer = MonitoringKiller(current_scheduler)
        if killer.available:
            return killer
    if _TRAMPOLINE is not None:
        return TraceKiller(_TRAMPOLINE, current_scheduler)
    return AsyncExcKiller() if GIL else Killer()
