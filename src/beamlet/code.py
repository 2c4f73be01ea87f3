"""Loading new code into a running system: Erlang's code server, for Python modules.

A module loaded through :func:`load` has at most two versions, *current* and
*old* (Erlang's two versions of a module). Each load executes the source into a
**new** module object -- never in place, as ``importlib.reload`` does -- makes it
current in ``sys.modules`` and keeps the previous current as old:

* code that runs in the old version keeps running it: a function's globals are
  the module it was defined in, so its local calls (``f()``) stay in its own
  version, as Erlang's local calls do;
* a fully qualified call (``m.f()``) enters the current version: ``import m``
  after the load finds the new module, and a module object that has been
  superseded forwards every attribute to the current version, so ``m.f`` reached
  through a reference taken before the load is the new ``f`` too;
* :func:`current` maps a function or class of any version to the current
  version's object of the same name -- what Erlang writes ``?MODULE:loop(State)``:
  ``await code.current(loop)(state)``;
* a :class:`~beamlet.otp.GenServer` (and so a Supervisor) whose class was
  loaded through this module takes the current version of its class at its next
  message; :func:`upgrade` suspends it between two messages, loads, and calls its
  ``code_change`` on its own turn (``sys:suspend``, ``sys:change_code``,
  ``sys:resume``).

A third load purges the old version first: refused (:class:`CodeError`
``not_purged``) while processes still run it, unless ``purge=True``, which kills
them (``code:purge``); :func:`soft_purge` purges only if nobody runs it.

Limits (Python keeps references where Erlang has none): frames running when the
load happens keep their code until they return; objects created from an old
class keep that class; ``from m import f`` bound ``f`` once, to the old function;
module-level state is not migrated (the new version starts from its own
top-level code). The guide is docs/code.md; the rules CODE-1.. are in
docs/semantics.md.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import linecache
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import beamlet
from beamlet._kernel import context
from beamlet._kernel.introspection import awaited, look_at_coroutine
from beamlet._kernel.parker import GIL
from beamlet._kernel.process import DEAD, RUNNING, Process
from beamlet.terms import Atom, Pid

logger = logging.getLogger("beamlet.code")

T = TypeVar("T")

#: Bumped by every load (and roll-back): a GenServer compares it with the value
#: it saw last before it looks its class up again, so that a system that never
#: loads code pays one list read per message.
generation: list[int] = [0]

#: The name rpc callers use: ``rpc:call(Node, beamlet_code, load, [Name, Source])``.
RPC_MODULE = "beamlet_code"


class CodeError(Exception):
    """A load, purge or upgrade that could not be done; nothing was changed
    (except by ``purge=True``, whose kills are not undone).

    ``reason`` is Erlang's: ``"badarg"`` (not a module name, or source that is
    not str/bytes), ``"nofile"`` (no source given and none found),
    ``"badfile"`` (the source does not compile: the SyntaxError is the
    ``__cause__``), ``"on_load_failure"`` (executing the module raised: the
    ``__cause__``), ``"not_purged"`` (processes run the old version),
    ``"code_change_failed"`` (an upgrade's ``code_change`` raised: the
    ``__cause__``), ``"not_loaded"``, ``"wrong_module"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(eq=False)
class _Version:
    module: types.ModuleType
    number: int
    origin: str  # the file, or "<beamlet.code NAME vN>" for source given to load
    module_class: type  # the module object's own class, restored on a roll-back

    @property
    def vsn(self) -> Any:
        return vars(self.module).get("__vsn__", self.number)


@dataclasses.dataclass(eq=False)
class _Entry:
    name: str
    current: _Version
    old: _Version | None = None
    loads: int = 0  # the number of the newest version


_lock = threading.RLock()
_modules: dict[str, _Entry] = {}


class _Superseded(types.ModuleType):
    """The class of a module object that is no longer current: every attribute
    but its own ``__dict__`` and ``__class__`` is the current version's (a fully
    qualified call through an old reference enters the current version). Code
    running in the old version reads its globals directly, not through here."""

    def __getattribute__(self, attr: str) -> Any:
        if attr in ("__dict__", "__class__"):
            return types.ModuleType.__getattribute__(self, attr)
        cur = _current_module(types.ModuleType.__getattribute__(self, "__name__"))
        if cur is None or cur is self:
            return types.ModuleType.__getattribute__(self, attr)
        return getattr(cur, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        cur = _current_module(types.ModuleType.__getattribute__(self, "__name__"))
        if attr in ("__dict__", "__class__") or cur is None or cur is self:
            types.ModuleType.__setattr__(self, attr, value)
        else:
            setattr(cur, attr, value)

    def __delattr__(self, attr: str) -> None:
        cur = _current_module(types.ModuleType.__getattribute__(self, "__name__"))
        if attr in ("__dict__", "__class__") or cur is None or cur is self:
            types.ModuleType.__delattr__(self, attr)
        else:
            delattr(cur, attr)


def _current_module(name: str) -> types.ModuleType | None:
    entry = _modules.get(name)
    return entry.current.module if entry is not None else None


def _supersede(version: _Version) -> None:
    if type(version.module) is not _Superseded:
        try:
            version.module.__class__ = _Superseded
        except TypeError:  # a module with its own layout: it just stops forwarding
            pass


def _restore(version: _Version) -> None:
    if type(version.module) is _Superseded:
        version.module.__class__ = version.module_class


# ---------------------------------------------------------------------- loading


def load(module_name: str, source: str | bytes | None = None, *, purge: bool = False) -> Any:
    """Load a new version of ``module_name`` and make it current (code:load_binary).

    ``source``: the module's Python source (str, or bytes as Erlang sends a
    binary); None reads it again from where the module was imported from (its
    file). The source runs in a *new* module object; the previous current
    version becomes old. If there is an old version already, it is purged
    first: refused with :class:`CodeError` ``not_purged`` (nothing changed)
    while processes run it, unless ``purge=True`` kills them. Source that does
    not compile or whose top-level code raises changes nothing. Returns the new
    module. A module imported before its first load becomes version 1.
    """
    _load(module_name, source, purge)
    return _modules[str(module_name)].current.module


@dataclasses.dataclass(eq=False)
class _Undo:
    """What :func:`_rollback` needs to make the version before a load current again."""

    entry: _Entry
    new: _Version
    previous: _Version | None  # the current version before the load (None: the first)
    previous_old: _Version | None


def _load(module_name: str, source: str | bytes | None, purge: bool) -> _Undo:
    name = _check_name(module_name, loading=True)
    if source is not None and not isinstance(source, str | bytes | bytearray):
        raise CodeError("badarg", f"source must be str or bytes, got {type(source).__name__}")
    with _lock:
        entry = _modules.get(name)
        existing = entry.current.module if entry is not None else sys.modules.get(name)
        spec = _spec_of(name, existing)
        number = entry.loads + 1 if entry is not None else (2 if existing is not None else 1)
        if source is None:
            source, origin = _read_source(name, spec)
        else:
            origin = f"<beamlet.code {name} v{number}>"
        try:
            text = (
                importlib.util.decode_source(bytes(source))
                if isinstance(source, bytes | bytearray)
                else source
            )
            code_obj = compile(text, origin, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as e:
            raise CodeError("badfile", f"cannot load {name}: {type(e).__name__}: {e}") from e
        # Refuse before anything changes: nobody may run the old version.
        victims: list[Pid] = []
        purged = ""
        if entry is not None and entry.old is not None:
            purged = f"{name} v{entry.old.number}"
            victims = _running(entry.old.module)
            if victims and not purge:
                raise CodeError(
                    "not_purged",
                    f"cannot load {name}: processes still run its old version "
                    f"(v{entry.old.number}): {victims!r}; purge them (purge=True kills them)",
                )
        if origin.startswith("<"):  # tracebacks show the lines of source given to load
            linecache.cache[origin] = (len(text), None, text.splitlines(keepends=True), origin)
        new_module = _new_module(name, spec, origin)
        parent, _, child = name.rpartition(".")
        sys.modules[name] = new_module
        try:
            exec(code_obj, vars(new_module))
        except BaseException as e:
            if existing is not None:
                sys.modules[name] = existing
            else:
                sys.modules.pop(name, None)
            if isinstance(e, Exception):
                raise CodeError(
                    "on_load_failure", f"cannot load {name}: its code raised {e!r}"
                ) from e
            raise
        _carry_submodules(name, existing, new_module)
        if parent and parent in sys.modules:
            try:
                setattr(sys.modules[parent], child, new_module)
            except AttributeError:
                pass
        new = _Version(new_module, number, origin, type(new_module))
        if entry is None:
            entry = _Entry(name, new, loads=number)
            if existing is not None:
                entry.old = _Version(existing, 1, _origin_of(existing), type(existing))
                _supersede(entry.old)
            _modules[name] = entry
            undo = _Undo(entry, new, entry.old, None)
        else:
            undo = _Undo(entry, new, entry.current, entry.old)
            entry.old = entry.current
            entry.current = new
            entry.loads = number
            _supersede(entry.old)
        generation[0] += 1
    if victims:
        _kill(victims, purged)
    logger.info("loaded %s v%d from %s", name, number, origin)
    return undo


def _rollback(undo: _Undo) -> None:
    """Make the version before ``undo``'s load current again (a failed upgrade)."""
    with _lock:
        entry = undo.entry
        if entry.current is not undo.new:
            return  # loaded again since: leave it
        _supersede(undo.new)
        name = entry.name
        if undo.previous is None:
            del _modules[name]
            sys.modules.pop(name, None)
        else:
            _restore(undo.previous)
            entry.current = undo.previous
            entry.old = undo.previous_old
            sys.modules[name] = undo.previous.module
            parent, _, child = name.rpartition(".")
            if parent and parent in sys.modules:
                try:
                    setattr(sys.modules[parent], child, undo.previous.module)
                except AttributeError:
                    pass
        generation[0] += 1
    logger.info("rolled %s back from v%d", undo.entry.name, undo.new.number)


def _check_name(module_name: Any, loading: bool = False) -> str:
    if not isinstance(module_name, str) or not all(
        part.isidentifier() for part in str(module_name).split(".")
    ):
        raise CodeError("badarg", f"not a module name: {module_name!r}")
    name = str(module_name)
    if loading and (
        name == __name__
        or name == "beamlet._kernel"
        or name.startswith("beamlet._kernel.")
        or name in sys.builtin_module_names
        or name == "__main__"
    ):
        raise CodeError("badarg", f"{name} cannot be loaded through beamlet.code")
    return name


def _spec_of(name: str, existing: types.ModuleType | None) -> importlib.machinery.ModuleSpec | None:
    spec = getattr(existing, "__spec__", None) if existing is not None else None
    if spec is not None:
        return spec  # type: ignore[no-any-return]
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _read_source(name: str, spec: importlib.machinery.ModuleSpec | None) -> tuple[str, str]:
    loader = spec.loader if spec is not None else None
    get_source = getattr(loader, "get_source", None)
    text = None
    if get_source is not None:
        try:
            text = get_source(name)
        except (ImportError, OSError):
            text = None
    if text is None or spec is None:
        raise CodeError("nofile", f"cannot load {name}: no source given and none found")
    return text, spec.origin or f"<beamlet.code {name}>"


def _new_module(
    name: str, spec: importlib.machinery.ModuleSpec | None, origin: str
) -> types.ModuleType:
    if spec is None or spec.loader is None:  # no file: a spec that names the source
        spec = importlib.machinery.ModuleSpec(name, None, origin=origin)
        module = importlib.util.module_from_spec(spec)
        module.__file__ = origin
        return module
    return importlib.util.module_from_spec(spec)


def _origin_of(module: types.ModuleType) -> str:
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
    return str(origin) if origin else f"<{module.__name__}>"


def _carry_submodules(name: str, existing: types.ModuleType | None, new: types.ModuleType) -> None:
    """A package's new version still has the submodules imported from the old."""
    if existing is None or not hasattr(new, "__path__"):
        return
    prefix = name + "."
    for key, mod in list(sys.modules.items()):
        child = key[len(prefix) :]
        if key.startswith(prefix) and "." not in child and child not in vars(new):
            setattr(new, child, mod)


# ---------------------------------------------------------------------- who runs what


def _running(module: types.ModuleType) -> list[Pid]:
    """The processes running code of ``module`` (a version): a frame of their
    stack executes a function whose globals are that module's.

    A waiting process's stack is read whole. One that runs at this moment is
    read from its thread's frames with the GIL; on a free-threaded build,
    where those frames cannot be read safely, only its coroutine's function
    is looked at (is it one of the module's?)."""
    rt = context.runtime
    if rt is None:
        return []
    g = vars(module)
    codes: set[types.CodeType] | None = None
    me = context.current_process_or_none()
    found = []
    for proc in rt.processes():
        if proc.state >= DEAD:
            continue
        if proc is me:  # the caller: its own frames, read here
            if any(f.f_globals is g for f in _frames_below(sys._getframe(), rt.loop_code) or ()):
                found.append(proc.pid)
            continue
        if GIL and proc.state == RUNNING:
            frames = _running_frames(rt, proc)
            if frames is not None:
                if any(f.f_globals is g for f in frames):
                    found.append(proc.pid)
                continue
        if look_at_coroutine(proc, lambda c: _coroutine_runs(c, g), lambda c: False):
            found.append(proc.pid)
            continue
        if not GIL:
            if codes is None:
                codes = set(_code_objects(module))
            coro = proc.coro
            if getattr(coro, "cr_code", None) in codes:
                found.append(proc.pid)
    return found


def _coroutine_runs(coro: Any, g: dict[str, Any]) -> bool:
    obj = coro
    while obj is not None:
        frame = (
            getattr(obj, "cr_frame", None)
            or getattr(obj, "gi_frame", None)
            or getattr(obj, "ag_frame", None)
        )
        if frame is None:
            return False
        if frame.f_globals is g:
            return True
        obj = awaited(obj)  # (only a suspended one's: see awaited)
    return False


def _running_frames(rt: Any, proc: Process) -> list[types.FrameType] | None:
    """The frames a process executes now on its scheduler thread (with the GIL),
    innermost first, or None if it is not running any more."""
    for s in list(rt.schedulers):
        if s.current is proc:
            frame = sys._current_frames().get(s.ident)
            break
    else:
        return None
    return _frames_below(frame, rt.loop_code)


def _frames_below(frame: types.FrameType | None, loop_code: Any) -> list[types.FrameType] | None:
    """``frame`` and its callers up to the scheduler loop (None if it is not there)."""
    frames = []
    while frame is not None and frame.f_code is not loop_code:
        frames.append(frame)
        frame = frame.f_back
    return frames if frame is not None else None


def _code_objects(module: types.ModuleType) -> Iterator[types.CodeType]:
    """The code objects of a module's functions and classes, nested ones included."""
    g = vars(module)
    seen: set[int] = set()

    def of(value: Any, depth: int) -> Iterator[types.CodeType]:
        if id(value) in seen or depth > 8:
            return
        seen.add(id(value))
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if isinstance(value, property):
            for f in (value.fget, value.fset, value.fdel):
                yield from of(f, depth + 1)
        elif isinstance(value, types.FunctionType) and value.__globals__ is g:
            yield from consts(value.__code__)
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for v in list(vars(value).values()):
                yield from of(v, depth + 1)

    def consts(code: types.CodeType) -> Iterator[types.CodeType]:
        yield code
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                yield from consts(c)

    for value in list(g.values()):
        yield from of(value, 0)


def _kill(pids: list[Pid], what: str) -> None:
    """Kill ``pids`` (the caller last, if it is one of them: code:purge kills it too)."""
    if context.runtime is None:
        return
    me = context.current_process_or_none()
    logger.warning("purging %s: killing %r, which still run it", what, pids)
    for pid in pids:
        if me is None or pid != me.pid:
            beamlet.exit(pid, "kill")
    if me is not None and me.pid in pids:
        beamlet.exit(me.pid, "kill")


# ---------------------------------------------------------------------- purging


def purge(module_name: str) -> bool:
    """Remove the old version of a module, killing the processes that run it
    (code:purge). True if some were killed."""
    name = _check_name(module_name)
    with _lock:
        entry = _modules.get(name)
        if entry is None or entry.old is None:
            return False
        old = entry.old
        victims = _running(old.module)
        entry.old = None
    if victims:
        _kill(victims, f"{name} v{old.number}")
    return bool(victims)


def soft_purge(module_name: str) -> bool:
    """Remove the old version of a module if no process runs it (code:soft_purge).
    False (and nothing changed) if some do; True otherwise."""
    name = _check_name(module_name)
    with _lock:
        entry = _modules.get(name)
        if entry is None or entry.old is None:
            return True
        if _running(entry.old.module):
            return False
        entry.old = None
    return True


def running_old(module_name: str) -> list[Pid]:
    """The processes that run the old version of a module (what :func:`purge`
    would kill; erlang:check_process_code for each)."""
    name = _check_name(module_name)
    entry = _modules.get(name)
    old = entry.old if entry is not None else None
    return _running(old.module) if old is not None else []


# ---------------------------------------------------------------------- looking


def which(module_name: str) -> str | None:
    """Where the current version of a module came from: its file, or
    ``"<beamlet.code NAME vN>"`` for source given to :func:`load`; None if it
    is not loaded (code:which's non_existing)."""
    name = _check_name(module_name)
    entry = _modules.get(name)
    if entry is not None:
        return entry.current.origin
    module = sys.modules.get(name)
    return _origin_of(module) if module is not None else None


def versions(module_name: str) -> list[dict[str, Any]]:
    """The versions of a module kept now, current first: dicts with
    ``"version"`` (1, 2, ...: the n-th version this node has run), ``"vsn"``
    (its ``__vsn__``, else the version number), ``"status"`` (``"current"`` or
    ``"old"``) and ``"origin"`` (as :func:`which`). Plain data, as it travels
    over rpc. An imported module never loaded through here: one entry;
    not imported: []."""
    name = _check_name(module_name)
    with _lock:
        entry = _modules.get(name)
        if entry is None:
            module = sys.modules.get(name)
            if module is None:
                return []
            vsn = vars(module).get("__vsn__", 1)
            return [{"version": 1, "vsn": vsn, "status": "current", "origin": _origin_of(module)}]
        kept = [("current", entry.current)] + ([("old", entry.old)] if entry.old else [])
        return [
            {"version": v.number, "vsn": v.vsn, "status": status, "origin": v.origin}
            for status, v in kept
        ]


def current(obj: Any) -> Any:
    """The current version of a function, class or method of a module loaded
    through :func:`load`: the object of the same qualified name in the
    module's current version (Erlang's fully qualified call, ``?MODULE:f``).
    Anything else is returned as it is. Raises AttributeError if the current
    version has no such name (Erlang's ``undef``)."""
    if not _modules:
        return obj
    if isinstance(obj, types.MethodType):
        owner = obj.__self__
        func = obj.__func__
        if isinstance(owner, type):  # a classmethod: the current class's
            return getattr(current(owner), func.__name__)
        new_func = current(func)
        return obj if new_func is func else types.MethodType(new_func, owner)
    module_name = getattr(obj, "__module__", None)
    entry = _modules.get(module_name) if isinstance(module_name, str) else None
    if entry is None:
        return obj
    module = entry.current.module
    g = getattr(obj, "__globals__", None)
    if g is not None and g is vars(module):
        return obj
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str) or "<" in qualname:
        return obj  # a lambda or a local function: no name to find it by
    value: Any = module
    for part in qualname.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AttributeError(
                f"the current version of {entry.name} (v{entry.current.number}) has no {qualname}"
            ) from None
    return value


class _Done:
    __slots__ = ()

    def __repr__(self) -> str:
        return "code.DONE"


#: What a step of :func:`loop` returns to end the loop.
DONE = _Done()


async def loop(step: Callable[[Any], Any], state: Any) -> None:
    """``state = await current(step)(state)``, over and over, until a step
    returns :data:`DONE`: Erlang's ``loop(State) -> ..., ?MODULE:loop(New)``
    for Python, which has no tail calls (``return await current(f)(state)``
    at the end of a loop keeps the old frame below the new one for good).

    Each step does one round (typically: receive a message, answer it) and
    returns the next state. Every step enters the current version of ``step``,
    so a process is in an old version only while a step that began before the
    load runs -- as an Erlang process waiting in ``receive`` in old code, which
    a purge would kill. Spawn it: ``spawn(code.loop, m.step, state)``.
    """
    while True:
        state = await current(step)(state)
        if state is DONE:
            return


def current_class(class_: type[T]) -> type[T]:
    """The current version of a class (``class_`` itself if its module was never
    loaded through here, or it is not a class there any more)."""
    if class_.__module__ not in _modules:
        return class_
    try:
        new = current(class_)
    except AttributeError:
        return class_
    return cast("type[T]", new) if isinstance(new, type) else class_


def _version_of(name: str) -> _Version | None:
    entry = _modules.get(name)
    return entry.current if entry is not None else None


# ---------------------------------------------------------------------- upgrade


async def upgrade(
    server: Any,
    module_name: str,
    extra: Any = None,
    source: str | bytes | None = None,
    *,
    purge: bool = False,
    timeout: float | None = 5.0,
) -> None:
    """Upgrade a running GenServer to a new version of its module, between two
    of its messages (sys:suspend, code:load, sys:change_code, sys:resume).

    The server (a pid or a registered name) is suspended -- it answers only
    system messages --, the module is loaded (as :func:`load` does, with
    ``source`` and ``purge``), the server calls its new class's
    ``code_change(old_vsn, state, extra)`` on its own turn, and resumes with
    the new code and the migrated state. ``old_vsn`` is the previous version's
    ``__vsn__`` (else its version number). If the load fails, or
    ``code_change`` raises (:class:`CodeError` ``code_change_failed``), the
    load is undone: the previous version is current again and the server keeps
    its code and its state. Must be called from a beamlet process.
    """
    from beamlet.otp import gen

    name = _check_name(module_name, loading=True)
    node = server.node if isinstance(server, Pid) else None
    if isinstance(server, tuple) and len(server) == 2 and server[1] != beamlet.node():
        node = server[1]
    if node is not None:
        raise CodeError(
            "badarg",
            f"{server!r} is on node {node}: upgrade it there "
            f"(rpc.call(node, {RPC_MODULE!r}, 'upgrade', [name, module, extra, source]))",
        )
    answer = await gen.call(server, ("suspend",), timeout, system=True)
    try:
        if answer[0] != "ok":
            raise CodeError("badarg", f"{server!r} cannot be suspended: {answer!r}")
        _, cls_module, cls_name = answer
        if cls_module != name:
            raise CodeError(
                "wrong_module",
                f"{server!r} runs {cls_name} from module {cls_module}, not {name}",
            )
        before = _version_of(name)
        if before is not None:
            old_vsn = before.vsn
        else:
            module = sys.modules.get(name)
            old_vsn = vars(module).get("__vsn__", 1) if module is not None else None
        undo = _load(name, source, purge)
        try:
            result = await gen.call(
                server, ("change_code", name, old_vsn, extra), timeout, system=True
            )
        except BaseException:
            _rollback(undo)
            raise
        if result != "ok":
            _rollback(undo)
            error = result[1] if type(result) is tuple and len(result) == 2 else result
            err = CodeError(
                "code_change_failed",
                f"upgrade of {server!r} to {name} v{undo.new.number} failed in "
                f"code_change: {error!r}; the load is undone and the server keeps "
                f"its code and state",
            )
            if isinstance(error, BaseException):
                raise err from error
            raise err
    finally:
        from beamlet.otp.errors import ServerExit

        try:
            await gen.call(server, ("resume",), timeout, system=True)
        except ServerExit:
            pass


# ---------------------------------------------------------------------- rpc


def _rpc_name(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    return str(value) if isinstance(value, str) else value


def _rpc_source(value: Any) -> Any:
    if value is None or (type(value) is Atom and value in ("undefined", "nil")):
        return None
    return value


def _rpc_load(name: Any, source: Any = None, purge: Any = False) -> Any:
    module = _check_name(_rpc_name(name))
    load(module, _rpc_source(source), purge=purge is True or purge == "true")
    return (Atom("module"), Atom(module))


async def _rpc_upgrade(server: Any, name: Any, extra: Any = None, source: Any = None) -> Any:
    target = server if isinstance(server, Pid) else _rpc_name(server)
    await upgrade(target, _rpc_name(name), extra, _rpc_source(source))
    return Atom("ok")


def _rpc_purge(name: Any) -> bool:
    return purge(_rpc_name(name))


def _rpc_soft_purge(name: Any) -> bool:
    return soft_purge(_rpc_name(name))


def _rpc_which(name: Any) -> Any:
    return which(_rpc_name(name))


def _rpc_versions(name: Any) -> Any:
    return versions(_rpc_name(name))


_RPC: dict[str, Callable[..., Any]] = {
    "load": _rpc_load,
    "load_binary": _rpc_load,
    "upgrade": _rpc_upgrade,
    "purge": _rpc_purge,
    "soft_purge": _rpc_soft_purge,
    "which": _rpc_which,
    "versions": _rpc_versions,
}


def expose() -> None:
    """Let other nodes load code here: ``rpc:call(Node, beamlet_code, load,
    [Name, Source])`` (Name an atom or a string, Source a binary or a string;
    a third argument ``true`` purges), ``upgrade`` ``[Server, Name, Extra,
    Source]`` (Server a registered name or a pid), ``purge``, ``soft_purge``,
    ``which``, ``versions`` ``[Name]``. Off until called: a node refuses code
    from elsewhere unless it allows it (a cookie is not a licence to run any code)."""
    from beamlet import rpc

    for fun, fn in _RPC.items():
        rpc.expose(RPC_MODULE, fun, fn)


def unexpose() -> None:
    """Refuse code from other nodes again."""
    from beamlet import rpc

    for fun in _RPC:
        rpc.unexpose(RPC_MODULE, fun)


__all__ = [
    "DONE",
    "CodeError",
    "current",
    "current_class",
    "expose",
    "generation",
    "load",
    "loop",
    "purge",
    "running_old",
    "soft_purge",
    "unexpose",
    "upgrade",
    "versions",
    "which",
]
