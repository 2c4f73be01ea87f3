"""observer.trace(): the calls and returns of one process or one function,
as messages, limited in number and time (recon_trace's rules: an unlimited
trace is refused).

Messages, to the caller (or ``to``)::

    (Atom("trace"), ref, pid, Atom("call"), "module.qualname", "a=1, b='x'")
    (Atom("trace"), ref, pid, Atom("return"), "module.qualname", "42")
    (Atom("trace_done"), ref, events, reason)

``pid`` is the process that made the call (None outside any process);
the last field is a ``repr`` of the arguments or of the returned value,
shortened; ``reason`` is ``max``, ``timeout``, ``target_exited`` or
``caller_exited`` (then nobody gets it). ``trace_done`` comes last: no
event follows it. A call that raises has no return event. A process's
resumptions after an ``await`` are not calls: a coroutine function's call
is its start, its return its end.

How: ``sys.monitoring`` (CPython 3.12+) with a tool id of its own, events
PY_START and PY_RETURN, only on the function's code for a function target,
everywhere for a process target (code that is not process code -- the
standard library, beamlet's kernel -- is switched off for the tool at its
first event: kill.is_process_code); ``sys.setprofile`` on 3.11, installed on
every scheduler thread with CPython's ``_PyEval_SetProfile`` on the thread's
state, as kill.TraceKiller does with ``_PyEval_SetTrace`` (and with
``threading.setprofile`` for scheduler threads started meanwhile).

A watcher process stops the trace after ``max`` events, after ``timeout``
seconds, or when the caller or the target exits, whichever comes first, and
removes the instrumentation in a ``finally`` (it runs even if the watcher is
killed). Each event is counted and sent under the tracer's own lock, which
the watcher also takes to stop it, so no event follows ``trace_done``.
The callback runs in the traced thread but is kernel code (kill.py never
lets a kill land in it) and never raises into the traced code.
"""

from __future__ import annotations

import ctypes
import dis
import functools
import inspect
import reprlib
import sys
import threading
import time
from types import CodeType, FrameType
from typing import Any

import beamlet
from beamlet._kernel.context import current_process_or_none, current_runtime, current_scheduler
from beamlet._kernel.kill import c_trampoline, is_process_code
from beamlet._kernel.process import DEAD, BadArg, Down, Process
from beamlet.terms import Atom, Pid, Ref

#: Most events one trace may ask for.
MAX_EVENTS = 10_000
#: Longest trace, seconds.
MAX_TIMEOUT = 600.0
#: Characters of an event's detail (arguments or return value).
DETAIL_CHARS = 200

TRACE = Atom("trace")
TRACE_DONE = Atom("trace_done")
CALL = Atom("call")
RETURN = Atom("return")
_STOP = Atom("beamlet_trace_stop")

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 3

_lock = threading.Lock()
_running: Tracer | None = None  # one trace at a time per node


def _detail(fn: Any, *args: Any) -> str:
    try:
        text: str = fn(*args)
    except Exception as e:  # a foreign __repr__ that fails
        text = f"<repr failed: {type(e).__name__}>"
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


_PLAIN = frozenset((int, float, bool, type(None)))


def _short(value: Any) -> str:
    """A short repr: the builtin one for numbers and short strings (fast: an
    event is paid for in the traced process), reprlib's for the rest."""
    t = type(value)
    if t in _PLAIN:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if t is str and len(value) <= 60:
        return repr(value)
    return _repr.repr(value)


_arg_names: dict[CodeType, tuple[str, ...]] = {}


def _names_of(code: CodeType) -> tuple[str, ...]:
    n = code.co_argcount + code.co_kwonlyargcount
    n += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    if len(_arg_names) >= 4096:
        _arg_names.clear()  # (a process target meets every function it calls)
    names = _arg_names[code] = code.co_varnames[:n]
    return names


def _arguments(frame: FrameType) -> str:
    code = frame.f_code
    names = _arg_names.get(code)
    if names is None:
        names = _names_of(code)
    if not names:
        return ""
    local = frame.f_locals
    short = _short
    return ", ".join([f"{name}={short(local[name])}" for name in names if name in local])


_names: dict[CodeType, str] = {}


def _name(code: CodeType, frame: FrameType) -> str:
    name = _names.get(code)
    if name is None:
        if len(_names) >= 4096:
            _names.clear()
        name = _names[code] = f"{frame.f_globals.get('__name__', '?')}.{code.co_qualname}"
    return name


class Tracer:
    def __init__(
        self,
        ref: Ref,
        to: Pid,
        proc: Process | None,
        code: CodeType | None,
        max_events: int,
        deadline: float,
    ) -> None:
        self.ref = ref
        self.to = to
        self.proc = proc
        self.code = code
        self.max = max_events
        self.deadline = deadline
        self.count = 0
        self.active = True
        self.lock = threading.Lock()
        self.watcher: Pid | None = None
        self.backend: _Backend | None = None
        self.rt: Any = None

    def wants(self) -> bool:
        """Whether the running process is the traced one (process targets)."""
        if not self.active:
            return False
        proc = self.proc
        if proc is None:
            return True
        s = current_scheduler()
        return s is not None and s.current is proc

    def emit(self, kind: Atom, name: str, detail: str) -> None:
        last = False
        with self.lock:
            if not self.active:
                return
            if time.monotonic() > self.deadline + 1.0:
                self.active = False  # the watcher is late: stop anyway
                return
            self.count += 1
            last = self.count >= self.max
            if last:
                self.active = False
            s = current_scheduler()
            proc = s.current if s is not None else None
            pid = proc.pid if proc is not None else None
            beamlet.send(self.to, (TRACE, self.ref, pid, kind, name, detail))
        if last and self.watcher is not None:
            beamlet.send(self.watcher, (_STOP, self.ref))

    def stop(self) -> int:
        with self.lock:
            self.active = False
            return self.count


# ---------------------------------------------------------------------- backends


class _Backend:
    def install(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


class _Monitoring(_Backend):
    """sys.monitoring (3.12+)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.tool: int | None = None

    def install(self) -> None:
        mon = sys.monitoring  # type: ignore[attr-defined]
        for tool in (4, 3, 2, 1):  # 0: debuggers; 5: optimizers
            try:
                mon.use_tool_id(tool, "beamlet.observer.trace")
            except ValueError:
                continue
            self.tool = tool
            break
        else:
            raise BadArg("trace: no sys.monitoring tool id is free")
        ev = mon.events
        tracer = self.tracer
        disable = mon.DISABLE
        function_target = tracer.code is not None

        def start(code: CodeType, offset: int) -> Any:
            if not function_target and not is_process_code(code):
                return disable
            if tracer.wants():
                try:
                    frame = sys._getframe(1)
                    tracer.emit(CALL, _name(code, frame), _detail(_arguments, frame))
                except Exception:
                    pass
            return None

        def returned(code: CodeType, offset: int, value: Any) -> Any:
            if not function_target and not is_process_code(code):
                return disable
            if tracer.wants():
                try:
                    frame = sys._getframe(1)
                    tracer.emit(RETURN, _name(code, frame), _detail(_short, value))
                except Exception:
                    pass
            return None

        mon.register_callback(self.tool, ev.PY_START, start)
        mon.register_callback(self.tool, ev.PY_RETURN, returned)
        if tracer.code is not None:
            mon.set_local_events(self.tool, tracer.code, ev.PY_START | ev.PY_RETURN)
        else:
            mon.set_events(self.tool, ev.PY_START | ev.PY_RETURN)

    def remove(self) -> None:
        tool = self.tool
        if tool is None:
            return
        self.tool = None
        mon = sys.monitoring  # type: ignore[attr-defined]
        if self.tracer.code is not None:
            mon.set_local_events(tool, self.tracer.code, 0)
        mon.set_events(tool, 0)
        mon.register_callback(tool, mon.events.PY_START, None)
        mon.register_callback(tool, mon.events.PY_RETURN, None)
        mon.free_tool_id(tool)


# 3.11: CPython's PyThreadState has c_profilefunc and c_profileobj here
# (Include/cpython/pystate.h; kill.py's _TRACEFUNC and _TRACEOBJ follow them),
# checked by _profile_trampoline before use.
_PROFILEFUNC = 64
_PROFILEOBJ = 80
_RESUME = dis.opmap.get("RESUME", -1)
_RETURN_VALUE = dis.opmap["RETURN_VALUE"]


@functools.cache
def _profile_trampoline() -> int | None:
    """The C function ``sys.setprofile`` installs (3.11; see kill.c_trampoline)."""
    if sys.version_info[:2] != (3, 11):
        return None
    try:
        api = ctypes.pythonapi
        api._PyEval_SetProfile.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.py_object)
        api._PyEval_SetProfile.restype = ctypes.c_int
    except AttributeError:
        return None
    return c_trampoline(sys.setprofile, sys.getprofile, _PROFILEFUNC, _PROFILEOBJ)


class _Profile(_Backend):
    """sys.setprofile on every scheduler thread (3.11)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.installed: list[Any] = []
        self.rt = current_runtime()

        code = tracer.code

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if not tracer.active:
                sys.setprofile(None)  # a thread it reached late removes it itself
                return
            if event != "call" and event != "return":
                return
            fcode = frame.f_code
            if code is not None:
                if fcode is not code:
                    return
            elif not is_process_code(fcode):
                return
            if not tracer.wants():
                return
            lasti = frame.f_lasti
            raw = fcode.co_code
            try:
                if event == "call":
                    if 0 <= lasti and (raw[lasti] != _RESUME or raw[lasti + 1] != 0):
                        return  # a coroutine resumed (or thrown into), not called
                    tracer.emit(CALL, _name(fcode, frame), _detail(_arguments, frame))
                else:
                    if 0 <= lasti and raw[lasti] != _RETURN_VALUE:
                        return  # suspended at an await, or left by an exception
                    tracer.emit(RETURN, _name(fcode, frame), _detail(_short, arg))
            except Exception:
                pass

        self.profile = profile

    def install(self) -> None:
        trampoline = _profile_trampoline()
        scheds = [s for s in list(self.rt.schedulers) if s.tstate]
        if trampoline is None or not scheds:
            raise BadArg("trace: this interpreter's thread states cannot be reached (CPython 3.11)")
        threading.setprofile(self.profile)  # scheduler threads started meanwhile
        api = ctypes.pythonapi
        for s in scheds:
            if s.thread is not None and s.thread.is_alive():
                api._PyEval_SetProfile(s.tstate, trampoline, self.profile)
                self.installed.append(s)

    def remove(self) -> None:
        threading.setprofile(None)
        api = ctypes.pythonapi
        mine = id(self.profile)
        for s in list(self.rt.schedulers):
            ts = s.tstate
            if not ts or s.thread is None or not s.thread.is_alive():
                continue
            if ctypes.c_void_p.from_address(ts + _PROFILEOBJ).value == mine:
                api._PyEval_SetProfile(ts, None, None)
        self.installed.clear()


# ---------------------------------------------------------------------- the API


def _target_code(target: Any) -> CodeType:
    fn = target
    if isinstance(fn, str):
        fn = _resolve(fn)
    fn = inspect.unwrap(fn)
    fn = getattr(fn, "__func__", fn)  # a bound or class method
    code = getattr(fn, "__code__", None)
    if not isinstance(code, CodeType):
        raise BadArg(f"trace: cannot trace {target!r} (not a Python function)")
    return code


def _resolve(path: str) -> Any:
    """``"module.qualname"`` or ``"module:qualname"``, among modules already
    imported (a name from another node imports nothing)."""
    if ":" in path:
        module_name, _, qual = path.partition(":")
    else:
        parts = path.split(".")
        for i in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:i]) in sys.modules:
                module_name, qual = ".".join(parts[:i]), ".".join(parts[i:])
                break
        else:
            raise BadArg(f"trace: no imported module in {path!r}")
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        raise BadArg(f"trace: module {module_name!r} is not imported")
    for attr in qual.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise BadArg(f"trace: {path!r} not found") from None
    return obj


def trace(target: Any, max: Any = 50, timeout: Any = 1.0, *, to: Any = None) -> Ref:
    """Trace the calls and returns of ``target`` -- a Pid (every call its
    process makes to process code), a function, or its name
    ``"module.qualname"`` -- for at most ``max`` events and ``timeout``
    seconds; the events come as messages to the caller (or to ``to``, a pid:
    an Erlang shell's ``self()``), then ``trace_done``. Returns the Ref that
    tags them. One trace at a time per node. (OBS-8)"""
    global _running
    if max is None:
        raise BadArg(f"trace: max=None would trace without end; give a limit (max=1..{MAX_EVENTS})")
    if type(max) is not int or not 0 < max <= MAX_EVENTS:
        raise BadArg(f"trace: max must be an int in 1..{MAX_EVENTS}, got {max!r}")
    if timeout is None or type(timeout) is bool or not isinstance(timeout, int | float):
        raise BadArg(f"trace: timeout must be a number of seconds, got {timeout!r}")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise BadArg(f"trace: timeout must be in (0, {MAX_TIMEOUT:g}] seconds, got {timeout!r}")
    rt = current_runtime()
    me = current_process_or_none()
    if to is None:
        if me is None:
            raise BadArg("trace: call it from a process, or give to=pid")
        to = me.pid
    if type(to) is not Pid:
        raise BadArg(f"trace: to must be a pid, got {to!r}")
    proc: Process | None = None
    code: CodeType | None = None
    if type(target) is Pid:
        proc = rt.lookup(target)
        if proc is None or proc.state >= DEAD:
            raise BadArg(f"trace: {target!r} is not a live local process")
        if proc.pid == to:
            raise BadArg("trace: a process cannot receive its own trace")
    else:
        code = _target_code(target)
    stale = _running
    if stale is not None and (stale.rt is not rt or time.monotonic() > stale.deadline + 5.0):
        # Left by a runtime that stopped before its watcher ran, or a watcher
        # that never got to run: remove it now.
        stale.stop()
        _finish(stale)
    with _lock:
        if _running is not None:
            raise BadArg("trace: another trace is running; wait for its trace_done")
        ref = rt.make_ref()
        tracer = Tracer(ref, to, proc, code, max, time.monotonic() + float(timeout))
        tracer.rt = rt
        backend: _Backend = _Monitoring(tracer) if sys.version_info >= (3, 12) else _Profile(tracer)
        tracer.backend = backend
        _running = tracer
    try:
        backend.install()
        tracer.watcher = beamlet.spawn(_watch, tracer)
    except BaseException:
        tracer.stop()
        _finish(tracer)
        raise
    return ref


def _finish(tracer: Tracer) -> None:
    global _running
    try:
        if tracer.backend is not None:
            tracer.backend.remove()
    finally:
        with _lock:
            if _running is tracer:
                _running = None


async def _watch(tracer: Tracer) -> None:
    reason: Atom = Atom("timeout")
    msg: Any = None
    try:
        to_watch = beamlet.monitor(tracer.to)
        if tracer.proc is not None:
            beamlet.monitor(tracer.proc.pid)
        if not tracer.active:
            msg = (_STOP, tracer.ref)  # the last event came before this process existed
        else:
            left = max(0.0, tracer.deadline - time.monotonic())
            try:
                msg = await beamlet.receive((_STOP, tracer.ref), Down, timeout=left)
            except TimeoutError:
                pass
        if type(msg) is Down:
            reason = Atom("caller_exited" if msg.ref == to_watch else "target_exited")
        elif msg is not None:
            reason = Atom("max")
    finally:
        count = tracer.stop()
        _finish(tracer)
    if reason != "caller_exited":
        beamlet.send(tracer.to, (TRACE_DONE, tracer.ref, count, reason))


def profiled_schedulers() -> int:
    """Scheduler threads with a profile function set (3.11; 0 elsewhere): a
    trace that is done leaves none (the tests check it)."""
    if _profile_trampoline() is None:
        return 0
    return sum(
        1
        for s in list(current_runtime().schedulers)
        if s.tstate and ctypes.c_void_p.from_address(s.tstate + _PROFILEFUNC).value
    )


def running() -> Ref | None:
    """The Ref of the trace under way, if any."""
    t = _running
    return t.ref if t is not None else None
