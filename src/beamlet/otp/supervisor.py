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
``"shutdown"``, which its own supervisor sees.

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
from beamlet import ANY, Down, Exit, Pid, ProcessExit
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


class Supervisor(GenServer):
    """A supervisor: ``await Supervisor.start_link(children, strategy=..., ...)``."""

    start_timeout = None  # children may take their time to start

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
        beamlet.process_flag("trap_exit", True)
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.restarts: collections.deque[float] = collections.deque()
        self.children: list[_Child] = []
        self.by_pid: dict[Pid, _Child] = {}
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

    # -- exits -----------------------------------------------------------

    async def handle_info(self, msg: Any) -> Any:
        if type(msg) is not Exit:
            return await super().handle_info(msg)
        index = self._index_of_pid(msg.pid) if msg.pid is not None else None
        if index is None:
            return None  # a child we already stopped, or an unrelated link
        child = self.children[index]
        self._set_pid(child, None)
        spec = child.spec
        if spec.restart == "temporary" or (
            spec.restart == "transient" and is_normal_exit(msg.reason)
        ):
            if spec.restart == "temporary":
                del self.children[index]
            return None
        logger.error(
            "supervisor %r: child %r (%s) exited with %r; restarting (%s)",
            beamlet.self(), spec.id, spec.restart, msg.reason, self.strategy,
        )  # fmt: skip
        return await self._restart(index)

    async def _restart(self, index: int) -> Any:
        if _too_many_restarts(self.restarts, self.intensity, self.period):
            logger.error(
                "supervisor %r: reached max restart intensity (%d in %s s): shutting down",
                beamlet.self(), self.intensity, self.period,
            )  # fmt: skip
            await self._stop_all(self.children)
            return Stop("shutdown")
        if self.strategy == "one_for_one":
            group = [self.children[index]]
        elif self.strategy == "one_for_all":
            group = list(self.children)
        else:
            group = self.children[index:]
        await self._stop_all([c for c in group if c.pid is not None])
        for child in group:
            try:
                self._set_pid(child, await _start(child.spec))
            except StartError as e:
                logger.error(
                    "supervisor %r: restarting %r failed: %r",
                    beamlet.self(),
                    child.spec.id,
                    e.reason,
                )
                self._set_pid(child, None)
                return await self._restart(self.children.index(child))
        return None

    async def terminate(self, reason: Any) -> None:
        await self._stop_all(self.children)

    async def _stop_all(self, children: list[_Child]) -> None:
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

    def _index_of_pid(self, pid: Pid) -> int | None:
        child = self.by_pid.get(pid)
        return None if child is None else self.children.index(child)

    def _index_of_id(self, child_id: Any) -> int | None:
        for i, c in enumerate(self.children):
            if c.spec.id == child_id:
                return i
        return None

    # -- the supervisor API, served as calls ----------------------------------

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        op = request[0]
        if op == "which_children":
            return [(c.spec.id, c.pid, c.spec.type) for c in self.children]
        if op == "count_children":
            return {
                "specs": len(self.children),
                "active": sum(1 for c in self.children if c.pid is not None),
                "supervisors": sum(1 for c in self.children if c.spec.type == "supervisor"),
                "workers": sum(1 for c in self.children if c.spec.type == "worker"),
            }
        if op == "start_child":
            spec = child_spec(request[1])
            if self._index_of_id(spec.id) is not None:
                return ("error", "already_present")
            child = _Child(spec)
            try:
                self._set_pid(child, await _start(spec))
            except StartError as e:
                return ("error", e.reason)
            self.children.append(child)
            return ("ok", child.pid)
        index = self._index_of_id(request[1])
        if index is None:
            return ("error", "not_found")
        child = self.children[index]
        if op == "terminate_child":
            if child.pid is not None:
                await _stop_child(child.pid, child.spec.shutdown)
                self._set_pid(child, None)
            if child.spec.restart == "temporary":
                del self.children[index]
            return "ok"
        if op == "restart_child":
            if child.pid is not None:
                return ("error", "running")
            try:
                self._set_pid(child, await _start(child.spec))
            except StartError as e:
                return ("error", e.reason)
            return ("ok", child.pid)
        if op == "delete_child":
            if child.pid is not None:
                return ("error", "running")
            del self.children[index]
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


async def which_children(sup: Any) -> list[tuple[Any, Pid | None, str]]:
    """[(id, pid or None, type)] in start order; of a DynamicSupervisor, with id None
    (one shape for both, as OTP's: its dynamic children have no ids)."""
    return await gen.call(sup, ("which_children",), timeout=None)


async def count_children(sup: Any) -> dict[str, int]:
    """{"specs", "active", "supervisors", "workers"}."""
    return await gen.call(sup, ("count_children",), timeout=None)


async def start_child(sup: Any, child: Any) -> Pid:
    """Add a child and start it; returns its pid. Raises StartError."""
    result = await gen.call(sup, ("start_child", child), timeout=None)
    if result[0] != "ok":
        raise StartError(result[1])
    return result[1]


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
    return result[1]


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


class DynamicSupervisor(GenServer):
    """Children started on demand (one_for_one), at most ``max_children``.

    ``pid = await DynamicSupervisor.start_child(sup, child)``.
    """

    start_timeout = None

    @classmethod
    async def start_link(  # type: ignore[override]
        cls,
        intensity: int = 1,
        period: float = 5.0,
        max_children: int | None = None,
        name: str | None = None,
    ) -> Pid:
        return await super().start_link(intensity, period, max_children, name=name)

    async def init(self, intensity: int, period: float, max_children: int | None) -> None:
        beamlet.process_flag("trap_exit", True)
        self.intensity = intensity
        self.period = period
        self.max_children = max_children
        self.restarts: collections.deque[float] = collections.deque()
        self.children: dict[Pid, ChildSpec] = {}

    @staticmethod
    async def start_child(sup: Any, child: Any) -> Pid:
        result = await gen.call(sup, ("start_child", child), timeout=None)
        if result[0] != "ok":
            raise StartError(result[1])
        return result[1]

    @staticmethod
    async def terminate_child(sup: Any, pid: Pid) -> None:
        result = await gen.call(sup, ("terminate_child", pid), timeout=None)
        if result != "ok":
            raise KeyError(pid)

    @staticmethod
    async def which_children(sup: Any) -> list[tuple[None, Pid | None, str]]:
        """[(None, pid, type)]: Supervisor's shape, with no ids (OTP's ``undefined``)."""
        return await gen.call(sup, ("which_children",), timeout=None)

    @staticmethod
    async def count_children(sup: Any) -> dict[str, int]:
        return await gen.call(sup, ("count_children",), timeout=None)

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        op = request[0]
        if op == "start_child":
            if self.max_children is not None and len(self.children) >= self.max_children:
                return ("error", "max_children")
            spec = child_spec(request[1])
            try:
                pid = await _start(spec)
            except StartError as e:
                return ("error", e.reason)
            self.children[pid] = spec
            return ("ok", pid)
        if op == "terminate_child":
            if request[1] not in self.children:
                return ("error", "not_found")
            spec = self.children.pop(request[1])
            await _stop_child(request[1], spec.shutdown)
            return "ok"
        if op == "which_children":
            return [(None, pid, spec.type) for pid, spec in self.children.items()]
        if op == "count_children":
            specs = list(self.children.values())
            return {
                "specs": len(specs),
                "active": len(specs),
                "supervisors": sum(1 for s in specs if s.type == "supervisor"),
                "workers": sum(1 for s in specs if s.type == "worker"),
            }
        return ("error", ("unknown_request", request))

    async def handle_info(self, msg: Any) -> Any:
        if type(msg) is not Exit or msg.pid not in self.children:
            return await super().handle_info(msg) if type(msg) is not Exit else None
        spec = self.children.pop(msg.pid)
        if spec.restart == "temporary" or (
            spec.restart == "transient" and is_normal_exit(msg.reason)
        ):
            return None
        if _too_many_restarts(self.restarts, self.intensity, self.period):
            logger.error(
                "dynamic supervisor %r: reached max restart intensity: shutting down",
                beamlet.self(),
            )
            await self.terminate("shutdown")
            return Stop("shutdown")
        try:
            pid = await _start(spec)
        except StartError as e:
            logger.error("dynamic supervisor %r: restart failed: %r", beamlet.self(), e.reason)
            return None
        self.children[pid] = spec
        return None

    async def terminate(self, reason: Any) -> None:
        for pid, spec in reversed(list(self.children.items())):
            await _stop_child(pid, spec.shutdown)
        self.children.clear()


__all__ = [
    "ChildSpec",
    "ChildType",
    "DynamicSupervisor",
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
_ = ProcessExit
