"""Small processes the semantics tests are built from."""

from __future__ import annotations

import beamlet
from beamlet import receive, send


async def wait_forever() -> None:
    await receive("never")


async def die_with(reason) -> None:
    """Wait for "go", then end with ``reason`` (an exception is raised)."""
    await receive("go")
    if isinstance(reason, BaseException):
        raise reason
    raise beamlet.ProcessExit(reason)


async def echo() -> None:
    """Answers ("ping", sender) with "pong": a round trip through a process
    proves every signal sent to it before the ping has been handled."""
    while True:
        msg = await receive()
        if isinstance(msg, tuple) and msg[0] == "ping":
            send(msg[1], "pong")


async def sync_with(pid) -> None:
    """Round trip through an `echo`-like process (it must answer pings)."""
    send(pid, ("ping", beamlet.self()))
    await receive("pong", timeout=30)


async def pingable(trap: bool = False) -> None:
    """Answers pings (trapping exits if ``trap``); ignores every other message."""
    beamlet.process_flag("trap_exit", trap)
    while True:
        msg = await receive()
        if isinstance(msg, tuple) and msg and msg[0] == "ping":
            send(msg[1], "pong")
