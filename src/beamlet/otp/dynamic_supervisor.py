"""DynamicSupervisor: children started on demand (Elixir's DynamicSupervisor,
OTP's simple_one_for_one). The restart machinery -- intensity, period,
try-again restarts, shutdown -- is the one Supervisor uses (supervisor.py's
``_Supervising``)."""

from __future__ import annotations

from typing import Any

from beamlet import Pid
from beamlet.otp import gen
from beamlet.otp.errors import StartError
from beamlet.otp.supervisor import _Child, _start, _Supervising, child_spec


class DynamicSupervisor(_Supervising):
    """Children started on demand, each restarted alone (one_for_one), at most
    ``max_children`` (None: no limit).

    ``sup = await DynamicSupervisor.start_link(intensity=1, period=5.0,
    max_children=None, name=None)``; ``pid = await DynamicSupervisor.start_child(sup, child)``.
    """

    _kind = "dynamic supervisor"

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
        self._init_supervising(intensity, period)
        self.max_children = max_children
        # Insertion-ordered: start order, and O(1) removal of one of many children.
        self.children: dict[_Child, None] = {}

    def _children(self) -> list[_Child]:
        return list(self.children)

    def _drop(self, child: _Child) -> None:
        del self.children[child]

    @staticmethod
    async def start_child(sup: Any, child: Any) -> Pid:
        """Start ``child`` (a child spec or a shorthand) under ``sup``; returns its pid.
        Raises StartError (``"max_children"`` past the limit)."""
        result = await gen.call(sup, ("start_child", child), timeout=None)
        if result[0] != "ok":
            raise StartError(result[1])
        pid: Pid = result[1]
        return pid

    @staticmethod
    async def terminate_child(sup: Any, pid: Pid) -> None:
        """Stop the child ``pid`` and forget it. Raises KeyError if it is not a child."""
        result = await gen.call(sup, ("terminate_child", pid), timeout=None)
        if result != "ok":
            raise KeyError(pid)

    @staticmethod
    async def which_children(sup: Any) -> list[tuple[None, Pid | str | None, str]]:
        """[(None, pid, type)]: Supervisor's shape, with no ids (OTP's ``undefined``);
        ``"restarting"`` instead of the pid while a failed restart waits to be tried again."""
        answer: list[tuple[None, Pid | str | None, str]] = await gen.call(
            sup, ("which_children",), timeout=None
        )
        return answer

    @staticmethod
    async def count_children(sup: Any) -> dict[str, int]:
        answer: dict[str, int] = await gen.call(sup, ("count_children",), timeout=None)
        return answer

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        op = request[0]
        if op == "start_child":
            if self.max_children is not None and len(self.children) >= self.max_children:
                return ("error", "max_children")
            new = _Child(child_spec(request[1]))
            try:
                self._set_pid(new, await _start(new.spec))
            except StartError as e:
                return ("error", e.reason)
            self.children[new] = None
            return ("ok", new.pid)
        if op == "terminate_child":
            child = self.by_pid.get(request[1]) if type(request[1]) is Pid else None
            if child is None:
                return ("error", "not_found")
            await self._stop_all([child])
            del self.children[child]
            return "ok"
        if op == "which_children":
            return [(None, self._status(c), c.spec.type) for c in self.children]
        if op == "count_children":
            return self._counts()
        return ("error", ("unknown_request", request))


__all__ = ["DynamicSupervisor"]
