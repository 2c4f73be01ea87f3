"""Supervisor and DynamicSupervisor: start children, watch them, restart them.

A supervisor is a process that traps exits, starts its children in order, and
restarts them by its strategy when they exit:

* ``one_for_one``: restart only the child that exited;
* ``one_for_all``: stop all the others (in reverse start order), restart all;
* ``rest_for_one``: stop the children started after it, restart those and it.

Each child's ``restart`` says when it is restarted: ``permanent`` always,
``transient`` only after an abnormal exit (not normal, shutdown or
(shutdown, _)), ``temporary`` never. More than ``intensity`` restarts within
``period`` seconds (OTP's default: 1 in 5; Elixir's is 3 in 5 — beamlet follows
OTP) and the supervisor gives up: it stops every child and exits with reason
``"shutdown"``, which its own supervisor sees. A restart whose start fails is
tried again from a message the supervisor casts to itself (OTP's
try_again_restart), each try counting toward the intensity; Supervisor and
DynamicSupervisor share this one restart path.

Stopping a child (``shutdown``): seconds to wait after an exit signal
``"shutdown"`` before ``"kill"``; ``"brutal_kill"`` kills at once;
``"infinity"`` waits for ever (the default for supervisor children). Children
stop in reverse start order.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

import beamlet
from beamlet import ANY, Atom, Down, Exit, Pid, Ref
from beamlet import code as _code
from beamlet.otp import gen
from beamlet.otp.errors import ChildRunning, StartError
from beamlet.otp.gen_server import GenServer, Stop, is_normal_exit

logger = logging.getLogger("beamlet.otp")

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
Shutdown = float | Literal["brutal_kill", "infinity"]
ChildType = Literal["worker", "supervisor"]
StartFn = Callable[..., Awaitable[Pid]]
#: ``(start_fn, args)`` or ``(start_fn, args, kwargs)``: ``await start_fn(*args, **kwargs)``.
Start = tuple[StartFn, tuple[Any, ...]] | tuple[StartFn, tuple[Any, ...], Mapping[str, Any]]

#: What a supervisor casts to itself to try a failed restart again (OTP's message).
TRY_AGAIN_RESTART = Atom("try_again_restart")

RESTARTS = ("permanent", "transient", "temporary")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@dataclasses.dataclass
class ChildSpec:
    """How to start and stop one child (OTP's child_spec).

    ``start``: ``(start_fn, args)`` or ``(start_fn, args, kwargs)`` where
    ``start_fn(*args, **kwargs)`` is an async function that starts the child
    *linked to the caller* and returns its pid (like ``MyServer.start_link``).
    """

    id: Any
    start: Start
    restart: Restart = "permanent"
    shutdown: Shutdown = 5.0
    type: ChildType = "worker"

    def __post_init__(self) -> None:
        start = self.start
        if not (
            isinstance(start, tuple)
            and len(start) in (2, 3)
            and callable(start[0])
            and isinstance(start[1], tuple | list)
            and (len(start) == 2 or isinstance(start[2], Mapping))
        ):
            raise TypeError(
                f"start must be (start_fn, args) or (start_fn, args, kwargs), got {start!r}"
            )
        if self.restart not in RESTARTS:
            raise ValueError(f"restart must be one of {RESTARTS}, got {self.restart!r}")
        if self.type not in ("worker", "supervisor"):
            raise ValueError(f"type must be worker or supervisor, got {self.type!r}")
        if not (
            self.shutdown in ("brutal_kill", "infinity")
            or (isinstance(self.shutdown, int | float) and self.shutdown >= 0)
        ):
            raise ValueError(
                f"shutdown must be seconds, 'brutal_kill' or 'infinity', got {self.shutdown!r}"
            )


async def _spawn_linked(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Pid:
    return beamlet.spawn_link(functools.partial(fn, **kwargs) if kwargs else fn, *args)


def _is_server(fn: Any) -> bool:
    return isinstance(fn, type) and issubclass(fn, GenServer)


def child_spec(child: Any) -> ChildSpec:
    """Normalise a child: a ChildSpec, a dict of its fields, a GenServer subclass
    (started with ``start_link()``), ``(GenServerSubclass, args[, kwargs])``, or
    ``(async_fn, args[, kwargs])`` -- a plain process body, spawned linked."""
    if isinstance(child, ChildSpec):
        return child
    if isinstance(child, dict):
        spec = dict(child)
        if "start" in spec and not isinstance(spec["start"], tuple):
            spec["start"] = (spec["start"], ())
        start = spec.get("start")
        if isinstance(start, tuple) and start and _is_server(start[0]):
            spec["start"] = (
                (start[0].start_link, *start[1:]) if len(start) > 1 else (start[0].start_link, ())
            )
        if spec.get("type") == "supervisor":
            spec.setdefault("shutdown", "infinity")
        return ChildSpec(**spec)
    if _is_server(child):
        return _server_spec(child, (), {})
    if isinstance(child, tuple) and len(child) in (2, 3):
        fn, args, *rest = child
        args = tuple(args) if isinstance(args, list | tuple) else (args,)
        kwargs = dict(rest[0]) if rest else {}
        if _is_server(fn):
            return _server_spec(fn, args, kwargs)
        if callable(fn):
            return ChildSpec(
                id=getattr(fn, "__qualname__", repr(fn)),
                start=(_spawn_linked, (fn, *args), kwargs),
            )
    raise TypeError(f"not a child spec: {child!r}")


def _server_spec(cls: type[GenServer], args: tuple[Any, ...], kwargs: dict[str, Any]) -> ChildSpec:
    is_sup = issubclass(cls, Supervisor)
    return ChildSpec(
        id=cls.__qualname__,
        start=(cls.start_link, args, kwargs),
        type="supervisor" if is_sup else "worker",
        shutdown="infinity" if is_sup else 5.0,
    )


@dataclasses.dataclass(eq=False)
class _Child:
    spec: ChildSpec
    pid: Pid | None = None
    #: Set while a failed restart waits for its try_again_restart message.
    retry: Ref | None = None


class _Supervising(GenServer):
    """What Supervisor and DynamicSupervisor share: restart intensity, the one
    restart path (with OTP's try_again_restart) and stopping children.

    A subclass keeps its children in start order (``_children``), says which
    children restart together (``_group``) and what becomes of a child that
    will not be restarted (``_drop``).
    """

    start_timeout = None  # children may take their time to start
    _kind = "supervisor"  # in log lines

    def _init_supervising(self, intensity: int, period: float) -> None:
        beamlet.process_flag("trap_exit", True)
        self.intensity = intensity
        self.period = period
        self.restarts: collections.deque[float] = collections.deque()
        self.restart_count = 0  # every restart since start (beamlet.observer.tree)
        self.by_pid: dict[Pid, _Child] = {}
        self.retries: dict[Ref, _Child] = {}

    def _children(self) -> list[_Child]:
        raise NotImplementedError

    def _group(self, child: _Child) -> list[_Child]:
        """The children to stop and start again, in start order, when ``child`` restarts."""
        return [child]

    def _drop(self, child: _Child) -> None:
        """``child`` exited and will not be restarted."""
        raise NotImplementedError

    # -- exits and restarts ------------------------------------------------

    async def handle_info(self, msg: Any) -> Any:
        if type(msg) is not Exit:
            return await super().handle_info(msg)
        child = self.by_pid.get(msg.pid) if msg.pid is not None else None
        if child is None:
            return None  # a child we already stopped, or an unrelated link
        self._set_pid(child, None)
        spec = child.spec
        if spec.restart == "temporary" or (
            spec.restart == "transient" and is_normal_exit(msg.reason)
        ):
            self._drop(child)
            return None
        logger.error(
            "%s %r: child %r %r (%s) exited with %r; restarting",
            self._kind, beamlet.self(), spec.id, msg.pid, spec.restart, msg.reason,
        )  # fmt: skip
        return await self._restart(child)

    async def _restart(self, child: _Child) -> Any:
        """Restart ``child`` (and its group). A start that fails is tried again
        from a message the supervisor casts to itself, so that it handles
        what is queued (a shutdown, a terminate_child) in between; every try
        counts toward the restart intensity (OTP's try_again_restart)."""
        if _too_many_restarts(self.restarts, self.intensity, self.period):
            logger.error(
                "%s %r: reached max restart intensity (%d in %s s): shutting down",
                self._kind, beamlet.self(), self.intensity, self.period,
            )  # fmt: skip
            await self._stop_all(self._children())
            return Stop("shutdown")
        self.restart_count += 1
        group = self._group(child)
        await self._stop_all(group)
        for c in group:
            try:
                self._set_pid(c, await _start(c.spec))
            except StartError as e:
                logger.error(
                    "%s %r: restarting %r failed: %r; trying again",
                    self._kind, beamlet.self(), c.spec.id, e.reason,
                )  # fmt: skip
                c.retry = beamlet.make_ref()
                self.retries[c.retry] = c
                gen.cast(beamlet.self(), (TRY_AGAIN_RESTART, c.retry))
                return None
        return None

    async def handle_cast(self, request: Any) -> Any:
        if type(request) is tuple and len(request) == 2 and request[0] == TRY_AGAIN_RESTART:
            child = self.retries.pop(request[1], None)
            if child is None:
                return None  # started, stopped or deleted since
            child.retry = None
            return await self._restart(child)
        return await super().handle_cast(request)

    # -- stopping ----------------------------------------------------------

    async def terminate(self, reason: Any) -> None:
        await self._stop_all(self._children())

    async def _stop_all(self, children: list[_Child]) -> None:
        """Stop the running ones of ``children``, in reverse start order."""
        for child in reversed(children):
            if child.pid is not None:
                await _stop_child(child.pid, child.spec.shutdown)
                self._set_pid(child, None)

    def _set_pid(self, child: _Child, pid: Pid | None) -> None:
        if child.pid is not None:
            self.by_pid.pop(child.pid, None)
        child.pid = pid
        if pid is not None:
            self.by_pid[pid] = child
            self._cancel_retry(child)

    def _cancel_retry(self, child: _Child) -> None:
        if child.retry is not None:
            self.retries.pop(child.retry, None)
            child.retry = None

    @staticmethod
    def _status(child: _Child) -> Pid | str | None:
        """which_children's second field: the pid, "restarting", or None."""
        if child.pid is not None:
            return child.pid
        return "restarting" if child.retry is not None else None

    def _counts(self) -> dict[str, int]:
        children = self._children()
        return {
            "specs": len(children),
            "active": sum(1 for c in children if c.pid is not None),
            "supervisors": sum(1 for c in children if c.spec.type == "supervisor"),
            "workers": sum(1 for c in children if c.spec.type == "worker"),
        }


class Supervisor(_Supervising):
    """A supervisor: ``await Supervisor.start_link(children, strategy=..., ...)``."""

    @classmethod
    async def start_link(  # type: ignore[override]
        cls,
        children: Iterable[Any] = (),
        strategy: Strategy = "one_for_one",
        intensity: int = 1,
        period: float = 5.0,
        name: str | None = None,
    ) -> Pid:
        return await super().start_link(list(children), strategy, intensity, period, name=name)

    async def init(
        self, children: list[Any], strategy: Strategy, intensity: int, period: float
    ) -> Any:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self._init_supervising(intensity, period)
        self.strategy = strategy
        self.children: list[_Child] = []
        ids = set()
        for c in children:
            spec = child_spec(c)
            if spec.id in ids:
                raise ValueError(f"duplicate child id {spec.id!r}")
            ids.add(spec.id)
            self.children.append(_Child(spec))
        for i, child in enumerate(self.children):
            try:
                self._set_pid(child, await _start(child.spec))
            except StartError as e:
                await self._stop_all(self.children[:i])
                return Stop(("failed_to_start_child", child.spec.id, e.reason))
        return None

    def _children(self) -> list[_Child]:
        return self.children

    def _group(self, child: _Child) -> list[_Child]:
        if self.strategy == "one_for_all":
            return list(self.children)
        if self.strategy == "rest_for_one":
            return self.children[self.children.index(child) :]
        return [child]

    def _drop(self, child: _Child) -> None:
        if child.spec.restart == "temporary":
            self.children.remove(child)
        # a transient child that exited normally keeps its spec (restart_child)

    def _find(self, child_id: Any) -> _Child | None:
        for c in self.children:
            if c.spec.id == child_id:
                return c
        return None

    # -- the supervisor API, served as calls ----------------------------------

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        op = request[0]
        if op == "which_children":
            return [(c.spec.id, self._status(c), c.spec.type) for c in self.children]
        if op == "count_children":
            return self._counts()
        if op == "start_child":
            spec = child_spec(request[1])
            if self._find(spec.id) is not None:
                return ("error", "already_present")
            new = _Child(spec)
            try:
                self._set_pid(new, await _start(spec))
            except StartError as e:
                return ("error", e.reason)
            self.children.append(new)
            return ("ok", new.pid)
        child = self._find(request[1])
        if child is None:
            return ("error", "not_found")
        if op == "terminate_child":
            await self._stop_all([child])
            self._cancel_retry(child)
            if child.spec.restart == "temporary":
                self.children.remove(child)
            return "ok"
        if op in ("restart_child", "delete_child") and (
            child.pid is not None or child.retry is not None
        ):
            return ("error", "running" if child.pid is not None else "restarting")
        if op == "restart_child":
            try:
                self._set_pid(child, await _start(child.spec))
            except StartError as e:
                return ("error", e.reason)
            return ("ok", child.pid)
        if op == "delete_child":
            self.children.remove(child)
            return "ok"
        return ("error", ("unknown_request", request))


def _too_many_restarts(restarts: collections.deque[float], intensity: int, period: float) -> bool:
    """Record a restart now; True if that makes more than ``intensity`` within
    the last ``period`` seconds (OTP's restart intensity)."""
    now = time.monotonic()
    restarts.append(now)
    while restarts and restarts[0] < now - period:
        restarts.popleft()
    return len(restarts) > intensity


async def _start(spec: ChildSpec) -> Pid:
    fn, args, *kwargs = spec.start
    if _code.generation[0]:
        # A child starts in the current version of its module, as Erlang's
        # {M, F, A} does: a restart after beamlet.code loaded a fix runs the fix.
        fn = _code.current(fn)
        if fn is _spawn_linked and args:
            args = (_code.current(args[0]), *args[1:])
    try:
        pid = await fn(*args, **(kwargs[0] if kwargs else {}))
    except StartError:
        raise
    except Exception as e:
        raise StartError(e) from e
    if type(pid) is not Pid:
        raise StartError(("bad_start_return", pid))
    return pid


async def _stop_child(pid: Pid, shutdown: Shutdown) -> Any:
    """Stop one child as OTP does: monitor, unlink (forgetting its Exit), then
    ``shutdown`` and, after the timeout, ``kill``. Returns its exit reason."""
    ref = beamlet.monitor(pid)
    beamlet.unlink(pid)
    try:
        await beamlet.receive(Exit(pid, ANY), timeout=0)  # it may already have exited
    except TimeoutError:
        pass
    if shutdown == "brutal_kill":
        beamlet.exit(pid, "kill")
        return (await beamlet.receive(Down(ref, pid, ANY))).reason
    beamlet.exit(pid, "shutdown")
    try:
        timeout = None if shutdown == "infinity" else float(shutdown)
        return (await beamlet.receive(Down(ref, pid, ANY), timeout=timeout)).reason
    except TimeoutError:
        beamlet.exit(pid, "kill")
        return (await beamlet.receive(Down(ref, pid, ANY))).reason


# -- client functions ------------------------------------------------------------


async def which_children(sup: Any) -> list[tuple[Any, Pid | str | None, str]]:
    """[(id, pid, type)] in start order; pid is None for a stopped child and
    ``"restarting"`` while a failed restart waits to be tried again. Of a
    DynamicSupervisor, with id None (one shape for both, as OTP's: its dynamic
    children have no ids)."""
    answer: list[tuple[Any, Pid | str | None, str]] = await gen.call(
        sup, ("which_children",), timeout=None
    )
    return answer


async def count_children(sup: Any) -> dict[str, int]:
    """{"specs", "active", "supervisors", "workers"}."""
    answer: dict[str, int] = await gen.call(sup, ("count_children",), timeout=None)
    return answer


async def start_child(sup: Any, child: Any) -> Pid:
    """Add a child and start it; returns its pid. Raises StartError."""
    result = await gen.call(sup, ("start_child", child), timeout=None)
    if result[0] != "ok":
        raise StartError(result[1])
    pid: Pid = result[1]
    return pid


async def terminate_child(sup: Any, child_id: Any) -> None:
    """Stop a child; its spec stays (unless temporary) for restart_child."""
    result = await gen.call(sup, ("terminate_child", child_id), timeout=None)
    if result != "ok":
        raise KeyError(child_id) if result == ("error", "not_found") else StartError(result[1])


async def restart_child(sup: Any, child_id: Any) -> Pid:
    """Start a stopped child again; returns its pid. Raises KeyError if there is
    no such child, :class:`ChildRunning` if it runs, StartError if it fails to start."""
    result = await gen.call(sup, ("restart_child", child_id), timeout=None)
    if result[0] != "ok":
        _raise_child_error(child_id, result[1])
        raise StartError(result[1])
    pid: Pid = result[1]
    return pid


async def delete_child(sup: Any, child_id: Any) -> None:
    """Remove the spec of a stopped child. Raises KeyError if there is no such
    child, :class:`ChildRunning` if it runs (``terminate_child`` it first)."""
    result = await gen.call(sup, ("delete_child", child_id), timeout=None)
    if result != "ok":
        _raise_child_error(child_id, result[1])
        raise RuntimeError(f"delete_child({child_id!r}): {result!r}")


def _raise_child_error(child_id: Any, reason: Any) -> None:
    if reason == "not_found":
        raise KeyError(child_id)
    if reason in ("running", "restarting"):
        raise ChildRunning(child_id, reason)


__all__ = [
    "ChildSpec",
    "ChildType",
    "Restart",
    "Shutdown",
    "Start",
    "Strategy",
    "Supervisor",
    "child_spec",
    "count_children",
    "delete_child",
    "restart_child",
    "start_child",
    "terminate_child",
    "which_children",
]
