"""A token passed round a ring of N processes, R rounds: µs per hop."""

from __future__ import annotations

import time


def beamlet(n: int, rounds: int, sysmon: bool = True) -> dict[str, float]:
    import beamlet as b

    async def node(nxt: b.Pid) -> None:
        while True:
            m = await b.receive()
            b.send(nxt, m)
            if m == 0:
                return

    async def main() -> dict[str, float]:
        nxt = b.self()
        for _ in range(n - 1):
            nxt = b.spawn(node, nxt)
        t0 = time.perf_counter()
        b.send(nxt, rounds)
        while True:
            m = await b.receive()
            if m <= 0:
                break
            b.send(nxt, m - 1)
        return {"us_per_hop": (time.perf_counter() - t0) / (n * rounds) * 1e6}

    if not sysmon:
        from beamlet._kernel import sysmon as sm

        sm.Sysmon.start = lambda self: None  # type: ignore[method-assign]
    return b.run(main)


def beamlet_no_sysmon(n: int, rounds: int) -> dict[str, float]:
    return beamlet(n, rounds, sysmon=False)


def asyncio(n: int, rounds: int) -> dict[str, float]:
    import asyncio as aio

    async def node(inbox: aio.Queue[int], out: aio.Queue[int]) -> None:
        while True:
            m = await inbox.get()
            out.put_nowait(m)
            if m == 0:
                return

    async def main() -> dict[str, float]:
        first: aio.Queue[int] = aio.Queue()
        mine = first
        queues = [aio.Queue() for _ in range(n - 1)]
        prev = first
        tasks = []
        for q in queues:
            tasks.append(aio.create_task(node(prev, q)))
            prev = q
        mine = prev
        t0 = time.perf_counter()
        first.put_nowait(rounds)
        while True:
            m = await mine.get()
            if m <= 0:
                break
            first.put_nowait(m - 1)
        first.put_nowait(0)
        return {"us_per_hop": (time.perf_counter() - t0) / (n * rounds) * 1e6}

    return aio.run(main())


def gevent(n: int, rounds: int) -> dict[str, float]:
    import gevent as g
    import gevent.queue

    def node(inbox: gevent.queue.Queue, out: gevent.queue.Queue) -> None:
        while True:
            m = inbox.get()
            out.put(m)
            if m == 0:
                return

    first = gevent.queue.Queue()
    prev = first
    for _ in range(n - 1):
        q = gevent.queue.Queue()
        g.spawn(node, prev, q)
        prev = q
    mine = prev
    t0 = time.perf_counter()
    first.put(rounds)
    while True:
        m = mine.get()
        if m <= 0:
            break
        first.put(m - 1)
    return {"us_per_hop": (time.perf_counter() - t0) / (n * rounds) * 1e6}
