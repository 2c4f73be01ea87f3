"""Agent: a process holding one value, read and updated by functions (Elixir's Agent).

::

    agent = await Agent.start_link(lambda: {})
    await Agent.update(agent, lambda d: {**d, "k": 1})
    assert await Agent.get(agent, lambda d: d["k"]) == 1

The functions run inside the agent process, one at a time; a function that
raises crashes the agent (and the caller's ``get`` raises ServerExit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from beamlet import Pid
from beamlet.otp import gen
from beamlet.otp.gen_server import GenServer, stop


class Agent(GenServer):
    @classmethod
    async def start_link(  # type: ignore[override]
        cls, initial: Callable[[], Any] | Any = None, name: str | None = None
    ) -> Pid:
        """``initial``: a function returning the first value, or the value itself."""
        return await super().start_link(initial, name=name)

    @classmethod
    async def start(cls, initial: Callable[[], Any] | Any = None, name: str | None = None) -> Pid:  # type: ignore[override]
        return await super().start(initial, name=name)

    async def init(self, initial: Any) -> None:
        self.value = initial() if callable(initial) else initial

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        op, fn = request
        if op == "get":
            return fn(self.value)
        if op == "update":
            self.value = fn(self.value)
            return "ok"
        if op == "get_and_update":
            reply, self.value = fn(self.value)
            return reply
        raise ValueError(f"unknown agent request {op!r}")

    async def handle_cast(self, request: Any) -> None:
        self.value = request(self.value)

    @staticmethod
    async def get(
        agent: Any, fn: Callable[[Any], Any] = lambda v: v, timeout: float | None = 5.0
    ) -> Any:
        return await gen.call(agent, ("get", fn), timeout)

    @staticmethod
    async def update(agent: Any, fn: Callable[[Any], Any], timeout: float | None = 5.0) -> None:
        await gen.call(agent, ("update", fn), timeout)

    @staticmethod
    async def get_and_update(
        agent: Any, fn: Callable[[Any], tuple[Any, Any]], timeout: float | None = 5.0
    ) -> Any:
        """``fn(value) -> (reply, new_value)``."""
        return await gen.call(agent, ("get_and_update", fn), timeout)

    @staticmethod
    def cast(agent: Any, fn: Callable[[Any], Any]) -> None:
        """Update without waiting."""
        gen.cast(agent, fn)

    @staticmethod
    async def stop(agent: Any, reason: Any = "normal", timeout: float | None = None) -> None:
        await stop(agent, reason, timeout)


__all__ = ["Agent"]
