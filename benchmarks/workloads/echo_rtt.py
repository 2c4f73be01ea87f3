"""Echo round trips over one loopback TCP connection, 64-byte messages, while
K processes spin in `while True: x += 1`: p50/p99 µs per round trip.

Server and client both run in the runtime under test. The server is a process
per connection (an acceptor hands each accepted socket to a new process, which
echoes in active mode); the client is a process that sends 64 bytes and then
receives 64 in passive mode, n times (or until ``cap_ms`` has passed). With
runaways, the first 0.5 s (while sysmon finds and hands them off) is not
counted in p50/p99; ``p99_all_us`` counts it. asyncio and uvloop use streams
(``asyncio.start_server`` / ``open_connection``); with K > 0 they starve, which
a watchdog reports."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from benchmarks.workloads.common import percentile
from benchmarks.workloads.netcommon import (
    HOST,
    MSG,
    beamlet_acceptor,
    beamlet_hand_to_echo,
    run_asyncio,
    watchdog,
)

WARM_TRIPS = 200  # uncounted round trips (connection and caches warm)
WARM_S = 0.5  # with runaways: uncounted time while sysmon finds them


def _summary(lat: list[float], warm: int, k: int, n: int) -> dict[str, object]:
    steady = lat[warm:] or lat
    out: dict[str, object] = {
        "p50_us": percentile(steady, 0.5) * 1e6,
        "p99_us": percentile(steady, 0.99) * 1e6,
    }
    if k:
        out["p99_all_us"] = percentile(lat, 0.99) * 1e6
    if len(steady) < n:
        out["note"] = f"time cap: {len(steady)} of {n} round trips counted"
    return out


async def _rounds(
    trip: Callable[[], Awaitable[None]], k: int, n: int, cap_ms: int, progress: list[float]
) -> int:
    """Round trips (``await trip()``) into ``progress``: the warm-up, then n
    (or until cap_ms has passed); returns how many were warm-up."""
    t_start = time.perf_counter()
    warm = 0
    while warm < WARM_TRIPS or (k and time.perf_counter() - t_start < WARM_S):
        t0 = time.perf_counter()
        await trip()
        progress.append(time.perf_counter() - t0)
        warm += 1
    deadline = time.perf_counter() + cap_ms / 1000
    for _ in range(n):
        t0 = time.perf_counter()
        await trip()
        t1 = time.perf_counter()
        progress.append(t1 - t0)
        if t1 > deadline:
            break
    return warm


def beamlet(k: int, n: int, cap_ms: int) -> dict[str, object]:
    import beamlet as b
    from beamlet import net

    async def runaway() -> None:
        x = 0
        while True:
            x += 1

    async def main() -> dict[str, object]:
        for _ in range(k):
            b.spawn(runaway)
        ls = net.listen(0, HOST)
        b.spawn(beamlet_acceptor, ls, beamlet_hand_to_echo)
        c = await net.connect(HOST, net.sockname(ls)[1], timeout=30)

        async def trip() -> None:
            await net.send(c, MSG)
            await net.recv(c, 64, timeout=30)

        lat: list[float] = []
        warm = await _rounds(trip, k, n, cap_ms, lat)
        net.close(c)
        return _summary(lat, warm, k, n)

    return b.run(main)  # type: ignore[no-any-return]


def _aio(k: int, n: int, cap_ms: int, loop: str) -> dict[str, object]:
    import asyncio as aio

    async def runaway() -> None:
        x = 0
        while True:
            x += 1

    ended = aio.Event()

    async def handle(reader: aio.StreamReader, writer: aio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        ended.set()

    async def main() -> dict[str, object]:
        lat: list[float] = []
        tasks = [aio.create_task(runaway()) for _ in range(k)]  # noqa: F841 - kept alive
        if k:
            watchdog(lat, ("p50_us", "p99_us", "p99_all_us"))
        server = await aio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await aio.open_connection(HOST, port)

        async def trip() -> None:
            writer.write(MSG)
            await writer.drain()
            await reader.readexactly(64)

        warm = await _rounds(trip, k, n, cap_ms, lat)
        writer.close()
        await ended.wait()  # the handler saw the end of the stream
        server.close()
        return _summary(lat, warm, k, n)

    return run_asyncio(main, loop)  # type: ignore[no-any-return]


def asyncio(k: int, n: int, cap_ms: int) -> dict[str, object]:
    return _aio(k, n, cap_ms, "asyncio")


def uvloop(k: int, n: int, cap_ms: int) -> dict[str, object]:
    return _aio(k, n, cap_ms, "uvloop")
