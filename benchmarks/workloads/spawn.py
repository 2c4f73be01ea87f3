"""spawn N processes that each block waiting for a message: µs per spawn and
bytes per blocked process (RSS growth / N)."""

from __future__ import annotations

import gc
import time

from benchmarks.workloads.common import rss


def beamlet(n: int) -> dict[str, float]:
    import beamlet as b

    async def blocked() -> None:
        await b.receive()

    async def main() -> dict[str, float]:
        gc.collect()
        r0 = rss()
        t0 = time.perf_counter()
        for _ in range(n):
            b.spawn(blocked)
        t1 = time.perf_counter()
        while b.statistics().run_queue:  # let every process run once and block
            await b.sleep(0.01)
        r1 = rss()
        g0 = time.perf_counter()
        gc.collect()
        g1 = time.perf_counter()
        return {
            "us_per_spawn": (t1 - t0) / n * 1e6,
            "bytes_per_proc": (r1 - r0) / n,
            "full_gc_ms": (g1 - g0) * 1000,
        }

    return b.run(main)


def asyncio(n: int) -> dict[str, float]:
    import asyncio as aio

    async def blocked(q: aio.Queue[object]) -> None:
        await q.get()

    async def main() -> dict[str, float]:
        gc.collect()
        r0 = rss()
        t0 = time.perf_counter()
        tasks = [aio.create_task(blocked(aio.Queue())) for _ in range(n)]
        t1 = time.perf_counter()
        await aio.sleep(0)
        await aio.sleep(0)
        r1 = rss()
        for t in tasks:
            t.cancel()
        return {"us_per_spawn": (t1 - t0) / n * 1e6, "bytes_per_proc": (r1 - r0) / n}

    return aio.run(main())


def gevent(n: int) -> dict[str, float]:
    import gevent as g
    import gevent.queue

    def blocked(q: gevent.queue.Queue) -> None:
        q.get()

    gc.collect()
    r0 = rss()
    t0 = time.perf_counter()
    lets = [g.spawn(blocked, gevent.queue.Queue()) for _ in range(n)]
    t1 = time.perf_counter()
    g.sleep(0)
    r1 = rss()
    g.killall(lets)
    return {"us_per_spawn": (t1 - t0) / n * 1e6, "bytes_per_proc": (r1 - r0) / n}
