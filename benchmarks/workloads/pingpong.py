"""Two processes, N round trips: µs per round trip."""

from __future__ import annotations

import time


def beamlet(n: int) -> dict[str, float]:
    import beamlet as b

    async def echo() -> None:
        while True:
            sender, m = await b.receive()
            b.send(sender, m)

    async def main() -> dict[str, float]:
        e = b.spawn(echo)
        me = b.self()
        t0 = time.perf_counter()
        for i in range(n):
            b.send(e, (me, i))
            await b.receive()
        return {"us_per_roundtrip": (time.perf_counter() - t0) / n * 1e6}

    return b.run(main)


def asyncio(n: int) -> dict[str, float]:
    import asyncio as aio

    async def echo(inbox: aio.Queue[tuple[aio.Queue[int], int]]) -> None:
        while True:
            out, m = await inbox.get()
            out.put_nowait(m)

    async def main() -> dict[str, float]:
        inbox: aio.Queue[tuple[aio.Queue[int], int]] = aio.Queue()
        mine: aio.Queue[int] = aio.Queue()
        task = aio.create_task(echo(inbox))
        t0 = time.perf_counter()
        for i in range(n):
            inbox.put_nowait((mine, i))
            await mine.get()
        dt = time.perf_counter() - t0
        task.cancel()
        return {"us_per_roundtrip": dt / n * 1e6}

    return aio.run(main())


def gevent(n: int) -> dict[str, float]:
    import gevent as g
    import gevent.queue

    def echo(inbox: gevent.queue.Queue) -> None:
        while True:
            out, m = inbox.get()
            out.put(m)

    inbox = gevent.queue.Queue()
    mine = gevent.queue.Queue()
    g.spawn(echo, inbox)
    t0 = time.perf_counter()
    for i in range(n):
        inbox.put((mine, i))
        mine.get()
    return {"us_per_roundtrip": (time.perf_counter() - t0) / n * 1e6}
