"""Connections accepted per second on loopback: C client processes open and
close connections as fast as they can (T in all), while A acceptor processes
share the listening socket, each closing what it accepts right away. The clock
runs from the first connect to the T-th accept.

asyncio and uvloop: ``start_server`` (the loop accepts; its handler task closes
the connection) and C client tasks doing ``open_connection`` then ``close``
(the acceptor pool has no asyncio equivalent: A is not used)."""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks.workloads.netcommon import HOST, beamlet_acceptor, raise_nofile, run_asyncio


def beamlet(total: int, clients: int, acceptors: int) -> dict[str, float]:
    import beamlet as b
    from beamlet import net

    raise_nofile(4096)

    def close_it(parent: b.Pid) -> Callable[[net.Socket], None]:
        def on_socket(s: net.Socket) -> None:
            net.close(s)
            b.send(parent, "accepted")

        return on_socket

    async def client(port: int, count: int) -> None:
        for _ in range(count):
            net.close(await net.connect(HOST, port, timeout=30))

    async def main() -> dict[str, float]:
        me = b.self()
        ls = net.listen(0, HOST, backlog=4096)
        port = net.sockname(ls)[1]
        for _ in range(acceptors):
            b.spawn(beamlet_acceptor, ls, close_it(me))
        await b.sleep(0.05)
        each, extra = divmod(total, clients)
        t0 = time.perf_counter()
        for i in range(clients):
            b.spawn(client, port, each + (i < extra))
        for _ in range(total):
            await b.receive("accepted", timeout=60)
        dt = time.perf_counter() - t0
        return {"accepts_per_s": total / dt}

    return b.run(main)  # type: ignore[no-any-return]


def _aio(total: int, clients: int, loop: str) -> dict[str, float]:
    import asyncio as aio

    raise_nofile(4096)
    accepted: list[int] = []
    all_accepted = aio.Event()  # (binds to the running loop when first awaited)

    async def handle(reader: aio.StreamReader, writer: aio.StreamWriter) -> None:
        writer.close()
        accepted.append(1)
        if len(accepted) == total:
            all_accepted.set()

    async def client(port: int, count: int) -> None:
        for _ in range(count):
            _, writer = await aio.open_connection(HOST, port)
            writer.close()

    async def main() -> dict[str, float]:
        server = await aio.start_server(handle, HOST, 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        each, extra = divmod(total, clients)
        t0 = time.perf_counter()
        tasks = [aio.create_task(client(port, each + (i < extra))) for i in range(clients)]
        await all_accepted.wait()
        dt = time.perf_counter() - t0
        await aio.gather(*tasks)
        server.close()
        await aio.sleep(0.01)  # the transports finish closing
        return {"accepts_per_s": total / dt}

    return run_asyncio(main, loop)  # type: ignore[no-any-return]


def asyncio(total: int, clients: int, acceptors: int) -> dict[str, float]:
    return _aio(total, clients, "asyncio")


def uvloop(total: int, clients: int, acceptors: int) -> dict[str, float]:
    return _aio(total, clients, "uvloop")
