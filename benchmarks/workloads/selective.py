"""A request/reply call tagged with a fresh reference while J unrelated messages
sit in the caller's mailbox: µs per call. beamlet and Erlang scan the mailbox
(the receive marker skips the old messages); asyncio and gevent have no
mailbox, so they measure a call through a future / a one-shot queue."""

from __future__ import annotations

import time


def beamlet(junk: int, calls: int) -> dict[str, float]:
    import beamlet as b

    async def server() -> None:
        while True:
            sender, ref, req = await b.receive()
            b.send(sender, (ref, req))

    async def main() -> dict[str, float]:
        me = b.self()
        srv = b.spawn(server)
        for i in range(junk):
            b.send(me, ("junk", i))
        t0 = time.perf_counter()
        for i in range(calls):
            ref = b.make_ref()
            b.send(srv, (me, ref, i))
            await b.receive((ref, b.ANY))
        return {"us_per_call": (time.perf_counter() - t0) / calls * 1e6}

    return b.run(main)


def asyncio(junk: int, calls: int) -> dict[str, float]:
    import asyncio as aio

    async def server(inbox: aio.Queue[tuple[aio.Future[int], int]]) -> None:
        while True:
            fut, req = await inbox.get()
            fut.set_result(req)

    async def main() -> dict[str, float]:
        loop = aio.get_running_loop()
        inbox: aio.Queue[tuple[aio.Future[int], int]] = aio.Queue()
        task = aio.create_task(server(inbox))
        t0 = time.perf_counter()
        for i in range(calls):
            fut = loop.create_future()
            inbox.put_nowait((fut, i))
            await fut
        dt = time.perf_counter() - t0
        task.cancel()
        return {"us_per_call": dt / calls * 1e6}

    return aio.run(main())


def gevent(junk: int, calls: int) -> dict[str, float]:
    import gevent as g
    import gevent.event
    import gevent.queue

    inbox = gevent.queue.Queue()

    def server() -> None:
        while True:
            res, req = inbox.get()
            res.set(req)

    g.spawn(server)
    t0 = time.perf_counter()
    for i in range(calls):
        res = gevent.event.AsyncResult()
        inbox.put((res, i))
        res.get()
    return {"us_per_call": (time.perf_counter() - t0) / calls * 1e6}
