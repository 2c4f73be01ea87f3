"""skynet: a tree of 1,000,000 leaf processes (10 children per node), summing
0..999,999: total seconds."""

from __future__ import annotations

import time


def beamlet(size: int) -> dict[str, float]:
    import beamlet as b

    async def skynet(parent: b.Pid, num: int, size: int) -> None:
        if size == 1:
            b.send(parent, num)
            return
        me = b.self()
        child = size // 10
        for i in range(10):
            b.spawn(skynet, me, num + i * child, child)
        total = 0
        for _ in range(10):
            total += await b.receive()
        b.send(parent, total)

    async def main() -> dict[str, float]:
        t0 = time.perf_counter()
        b.spawn(skynet, b.self(), 0, size)
        total = await b.receive()
        return {"seconds": time.perf_counter() - t0, "sum": total}

    return b.run(main)


def asyncio(size: int) -> dict[str, float]:
    import asyncio as aio

    async def skynet(num: int, size: int) -> int:
        if size == 1:
            return num
        child = size // 10
        tasks = [aio.create_task(skynet(num + i * child, child)) for i in range(10)]
        return sum(await aio.gather(*tasks))

    async def main() -> dict[str, float]:
        t0 = time.perf_counter()
        total = await skynet(0, size)
        return {"seconds": time.perf_counter() - t0, "sum": total}

    return aio.run(main())


def gevent(size: int) -> dict[str, float]:
    import gevent as g

    def skynet(num: int, size: int) -> int:
        if size == 1:
            return num
        child = size // 10
        lets = [g.spawn(skynet, num + i * child, child) for i in range(10)]
        g.joinall(lets)
        return sum(x.value for x in lets)

    t0 = time.perf_counter()
    total = skynet(0, size)
    return {"seconds": time.perf_counter() - t0, "sum": total}
