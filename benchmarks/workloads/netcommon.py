"""What the network workloads (group "net") share: the loopback address, the
descriptor limit, running asyncio code on uvloop's loop, and the watchdog that
reports a starved asyncio loop (as lateness.py does)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

HOST = "127.0.0.1"
MSG = b"x" * 64


def raise_nofile(need: int) -> int:
    """Raise RLIMIT_NOFILE to ``need`` descriptors if the hard limit (or, as
    root, the kernel's nr_open) allows; returns the soft limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return need
    if hard == resource.RLIM_INFINITY or hard >= need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return need
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # root only
        return need
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return int(hard)


def run_asyncio(main: Callable[[], Coroutine[Any, Any, Any]], loop: str) -> Any:
    """``asyncio.run(main())`` on the standard loop or on uvloop's."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    import asyncio

    return asyncio.run(main())


def watchdog(progress: list[Any], keys: tuple[str, ...], seconds: float = 3.0) -> None:
    """Report starvation for real: if ``progress`` has fewer than 2 entries
    after ``seconds``, print every metric as "starved" (inf) and end the
    process (a loop held by a coroutine that never yields never returns)."""

    def check() -> None:
        time.sleep(seconds)
        if len(progress) < 2:
            out = dict.fromkeys(keys, "inf")
            note = f"starved: {len(progress)} round trip(s) in {seconds:.0f} s"
            print(json.dumps({"metrics": out, "note": note}), flush=True)
            os._exit(0)

    threading.Thread(target=check, daemon=True).start()


async def beamlet_acceptor(ls: Any, on_socket: Callable[[Any], None]) -> None:
    """A beamlet acceptor process: ``on_socket(sock)`` for each connection
    accepted on ``ls``, until ``ls`` closes (the run is over)."""
    import errno

    from beamlet import net

    while True:
        try:
            s = await net.accept(ls)
        except OSError as e:
            if e.errno == errno.EBADF:
                return  # the listening socket closed: the run is over
            continue  # a connection that failed before it was accepted
        on_socket(s)


async def beamlet_echo(s: Any) -> None:
    """A beamlet connection process echoing in active mode, once it owns ``s``."""
    import beamlet as b
    from beamlet import net

    await b.receive("go")
    net.setopts(s, active=True)
    while True:
        m = await b.receive()
        if type(m) is net.Tcp:
            await net.send(s, m.data)
        else:
            return  # TcpClosed


def beamlet_hand_to_echo(s: Any) -> None:
    """Start an echo process for ``s`` and hand the socket to it."""
    import beamlet as b
    from beamlet import net

    pid = b.spawn(beamlet_echo, s)
    net.controlling_process(s, pid)
    b.send(pid, "go")
