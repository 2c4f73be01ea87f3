"""Task: run one function in its own process and collect the result (Elixir's Task).

``task = Task.start(fn, *args)`` spawns ``fn`` linked to the caller (so a crash
takes the caller down, as Elixir's ``Task.async``) and monitored;
``await task.wait(timeout)`` returns its result. Use a :class:`TaskSupervisor`
for tasks that must crash alone (``async_nolink``: the caller gets the crash as
a :class:`TaskError` from ``wait``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import beamlet
from beamlet import ANY, Atom, Down, Pid, Ref
from beamlet.otp.dynamic_supervisor import DynamicSupervisor

_REPLY = Atom("task_reply")


class TaskError(Exception):
    """The task exited before returning a result (its exit ``reason``)."""

    def __init__(self, pid: Pid, reason: Any) -> None:
        super().__init__(f"task {pid!r} exited: {reason!r}")
        self.pid = pid
        self.reason = reason


async def _run(
    owner: Pid, ref: Ref, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> None:
    beamlet.send(owner, (ref, _REPLY, await fn(*args)))


class Task:
    """A running task: ``pid``, and the monitor ``ref`` its result is tagged with."""

    __slots__ = ("owner", "pid", "ref")

    def __init__(self, pid: Pid, ref: Ref, owner: Pid) -> None:
        self.pid = pid
        self.ref = ref
        self.owner = owner

    def __repr__(self) -> str:
        return f"Task({self.pid!r})"

    @classmethod
    def start(cls, fn: Callable[..., Awaitable[Any]], *args: Any) -> Task:
        """Run ``fn(*args)`` in a new process linked to and monitored by the caller."""
        me = beamlet.self()
        pid = beamlet.spawn_link(_deferred, me, fn, args)
        ref = beamlet.monitor(pid)
        beamlet.send(pid, ref)
        return cls(pid, ref, me)

    async def wait(self, timeout: float | None = 5.0) -> Any:
        """The task's result. Raises :class:`TaskError` if it exited without one
        and ``TimeoutError`` after ``timeout`` (the task keeps running: see
        :meth:`shutdown`)."""
        self._check_owner()
        msg = await beamlet.receive(
            (self.ref, _REPLY, ANY), Down(self.ref, ANY, ANY), timeout=timeout
        )
        return self._result(msg)

    async def yield_(self, timeout: float = 5.0) -> tuple[bool, Any] | None:
        """``(True, result)``, ``(False, exit_reason)`` if it exited, or None if it
        is still running after ``timeout`` (Elixir's Task.yield)."""
        self._check_owner()
        try:
            msg = await beamlet.receive(
                (self.ref, _REPLY, ANY), Down(self.ref, ANY, ANY), timeout=timeout
            )
        except TimeoutError:
            return None
        try:
            return (True, self._result(msg))
        except TaskError as e:
            return (False, e.reason)

    async def shutdown(self, timeout: float | str = 5.0) -> tuple[bool, Any] | None:
        """Stop the task (``"shutdown"``, then ``"kill"`` after ``timeout``;
        ``"brutal_kill"`` at once). Returns ``(True, result)`` if it had finished,
        else None."""
        self._check_owner()
        beamlet.unlink(self.pid)
        try:
            msg = await beamlet.receive((self.ref, _REPLY, ANY), timeout=0)
            beamlet.demonitor(self.ref, flush=True)
            return (True, msg[2])
        except TimeoutError:
            pass
        beamlet.exit(self.pid, "kill" if timeout == "brutal_kill" else "shutdown")
        try:
            t = (
                None
                if timeout == "brutal_kill"
                else (None if timeout == "infinity" else float(timeout))
            )
            msg = await beamlet.receive(
                (self.ref, _REPLY, ANY), Down(self.ref, ANY, ANY), timeout=t
            )
        except TimeoutError:
            beamlet.exit(self.pid, "kill")
            msg = await beamlet.receive((self.ref, _REPLY, ANY), Down(self.ref, ANY, ANY))
        if type(msg) is Down:
            return None
        beamlet.demonitor(self.ref, flush=True)
        return (True, msg[2])

    def _check_owner(self) -> None:
        if beamlet.self() != self.owner:
            raise RuntimeError("only the process that started a task can wait for it")

    def _result(self, msg: Any) -> Any:
        if type(msg) is Down:
            raise TaskError(self.pid, msg.reason)
        beamlet.demonitor(self.ref, flush=True)
        return msg[2]


async def _deferred(owner: Pid, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    ref = await beamlet.receive(Ref)  # the owner's monitor ref tags the reply
    await _run(owner, ref, fn, args)


class TaskSupervisor(DynamicSupervisor):
    """Supervises tasks that crash alone (temporary children, never restarted)."""

    @staticmethod
    async def async_nolink(sup: Any, fn: Callable[..., Awaitable[Any]], *args: Any) -> Task:
        """Start a task under ``sup``, not linked to the caller; ``wait`` raises
        :class:`TaskError` if it crashes, and the caller lives on."""
        me = beamlet.self()
        spec = {
            "id": "task",
            "start": (_spawn_task, (me, fn, args)),
            "restart": "temporary",
            "shutdown": 5.0,
        }
        pid = await DynamicSupervisor.start_child(sup, spec)
        ref = beamlet.monitor(pid)
        beamlet.send(pid, ref)
        return Task(pid, ref, me)

    @staticmethod
    async def start_task(sup: Any, fn: Callable[..., Awaitable[Any]], *args: Any) -> Pid:
        """Fire and forget: run ``fn(*args)`` under ``sup``; its crash is logged
        and affects nobody."""
        spec = {
            "id": "task",
            "start": (_spawn_plain, (fn, args)),
            "restart": "temporary",
            "shutdown": 5.0,
        }
        return await DynamicSupervisor.start_child(sup, spec)


async def _spawn_task(owner: Pid, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Pid:
    return beamlet.spawn_link(_deferred, owner, fn, args)


async def _spawn_plain(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Pid:
    return beamlet.spawn_link(fn, *args)


__all__ = ["Task", "TaskError", "TaskSupervisor"]
