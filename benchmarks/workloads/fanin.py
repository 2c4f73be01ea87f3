"""S senders x M messages each → 1 receiver: messages per second."""

from __future__ import annotations

import time


def beamlet(senders: int, each: int) -> dict[str, float]:
    import beamlet as b

    async def sender(to: b.Pid) -> None:
        for i in range(each):
            b.send(to, i)

    async def main() -> dict[str, float]:
        me = b.self()
        total = senders * each
        t0 = time.perf_counter()
        for _ in range(senders):
            b.spawn(sender, me)
        for _ in range(total):
            await b.receive()
        return {"msgs_per_s": total / (time.perf_counter() - t0)}

    return b.run(main)


def asyncio(senders: int, each: int) -> dict[str, float]:
    import asyncio as aio

    async def sender(q: aio.Queue[int]) -> None:
        for i in range(each):
            q.put_nowait(i)
            if i % 100 == 99:
                await aio.sleep(0)  # a coroutine that never awaits would not interleave

    async def main() -> dict[str, float]:
        q: aio.Queue[int] = aio.Queue()
        total = senders * each
        t0 = time.perf_counter()
        tasks = [aio.create_task(sender(q)) for _ in range(senders)]  # noqa: F841 - kept alive
        for _ in range(total):
            await q.get()
        return {"msgs_per_s": total / (time.perf_counter() - t0)}

    return aio.run(main())


def gevent(senders: int, each: int) -> dict[str, float]:
    import gevent as g
    import gevent.queue

    q = gevent.queue.Queue()

    def sender() -> None:
        for i in range(each):
            q.put(i)

    total = senders * each
    t0 = time.perf_counter()
    for _ in range(senders):
        g.spawn(sender)
    for _ in range(total):
        q.get()
    return {"msgs_per_s": total / (time.perf_counter() - t0)}
