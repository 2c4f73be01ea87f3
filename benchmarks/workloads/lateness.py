"""Responsiveness next to runaways: a pinger wakes every 1 ms for T ms and
round-trips to an echo process while K processes spin in `while True: x += 1`
(or, with sleepers=1, block in time.sleep). p50/p99 of how late each tick ran.
The first 0.5 s (while sysmon finds and hands off the runaways) is not counted
in the steady-state figures; `p99_all_ms` counts it."""

from __future__ import annotations

import time

from benchmarks.workloads.common import percentile


def _summary(late: list[float], warm: int) -> dict[str, float]:
    steady = late[warm:] or late
    return {
        "p50_ms": percentile(steady, 0.5) * 1000,
        "p99_ms": percentile(steady, 0.99) * 1000,
        "p99_all_ms": percentile(late, 0.99) * 1000,
    }


WARM_MS = 500


def beamlet(k: int, ms: int, sleepers: int = 0) -> dict[str, float]:
    import beamlet as b

    async def runaway() -> None:
        x = 0
        while True:
            x += 1

    async def sleeper() -> None:
        while True:
            time.sleep(1.0)

    async def echo() -> None:
        while True:
            sender, m = await b.receive()
            b.send(sender, m)

    async def main() -> dict[str, float]:
        for _ in range(k):
            b.spawn(sleeper if sleepers else runaway)
        e = b.spawn(echo)
        me = b.self()
        late = []
        nxt = time.perf_counter()
        for _ in range(WARM_MS + ms):
            nxt += 0.001
            await b.sleep(max(0.0, nxt - time.perf_counter()))
            late.append(max(0.0, time.perf_counter() - nxt))
            b.send(e, (me, 1))
            await b.receive()
        return _summary(late, WARM_MS)

    return b.run(main)


def beamlet_sleepers(k: int, ms: int) -> dict[str, float]:
    return beamlet(k, ms, sleepers=1)


def _watchdog(ticks: list[float], seconds: float = 3.0) -> None:
    """Report starvation for real: if the pinger has not ticked twice after
    ``seconds``, print the result and end the process (the loop never returns)."""
    import json
    import os
    import threading

    def check() -> None:
        time.sleep(seconds)
        if len(ticks) < 2:
            out = {"p50_ms": float("inf"), "p99_ms": float("inf"), "p99_all_ms": float("inf")}
            print(
                json.dumps(
                    {"metrics": out, "note": f"starved: {len(ticks)} tick(s) in {seconds:.0f} s"}
                ),
                flush=True,
            )
            os._exit(0)

    threading.Thread(target=check, daemon=True).start()


def asyncio(k: int, ms: int) -> dict[str, float]:
    import asyncio as aio

    async def runaway() -> None:
        x = 0
        while True:
            x += 1

    async def main() -> dict[str, float]:
        tasks = [aio.create_task(runaway()) for _ in range(k)]  # noqa: F841 - kept alive
        late: list[float] = []
        _watchdog(late)
        nxt = time.perf_counter()
        for _ in range(WARM_MS + ms):
            nxt += 0.001
            await aio.sleep(max(0.0, nxt - time.perf_counter()))
            late.append(max(0.0, time.perf_counter() - nxt))
        return _summary(late, WARM_MS)

    return aio.run(main())


def gevent(k: int, ms: int) -> dict[str, float]:
    import gevent as g

    def runaway() -> None:
        x = 0
        while True:
            x += 1

    for _ in range(k):
        g.spawn(runaway)
    late: list[float] = []
    _watchdog(late)
    nxt = time.perf_counter()
    for _ in range(WARM_MS + ms):
        nxt += 0.001
        g.sleep(max(0.0, nxt - time.perf_counter()))
        late.append(max(0.0, time.perf_counter() - nxt))
    return _summary(late, WARM_MS)
