"""Echo throughput: C loopback TCP connections at once, each client sending a
64-byte message, waiting for its echo, and again, M times: round trips per
second, all connections together (a round trip = one message echoed).

As in echo_rtt: the server is a process per connection echoing in active
mode; each client is a process doing send, then recv of 64 bytes in passive
mode. The clock runs from the moment every connection is open until the last
client is done. asyncio and uvloop use streams."""

from __future__ import annotations

import time

from benchmarks.workloads.netcommon import (
    HOST,
    MSG,
    beamlet_acceptor,
    beamlet_hand_to_echo,
    run_asyncio,
)


def beamlet(conns: int, msgs: int) -> dict[str, float]:
    import beamlet as b
    from beamlet import net

    async def client(parent: b.Pid, port: int) -> None:
        c = await net.connect(HOST, port, timeout=30)
        b.send(parent, "ready")
        await b.receive("go")
        for _ in range(msgs):
            await net.send(c, MSG)
            await net.recv(c, 64, timeout=30)
        net.close(c)
        b.send(parent, "done")

    async def main() -> dict[str, float]:
        ls = net.listen(0, HOST)
        port = net.sockname(ls)[1]
        b.spawn(beamlet_acceptor, ls, beamlet_hand_to_echo)
        me = b.self()
        clients = [b.spawn(client, me, port) for _ in range(conns)]
        for _ in clients:
            await b.receive("ready", timeout=60)
        t0 = time.perf_counter()
        for pid in clients:
            b.send(pid, "go")
        for _ in clients:
            await b.receive("done", timeout=120)
        dt = time.perf_counter() - t0
        return {"msgs_per_s": conns * msgs / dt}

    return b.run(main)  # type: ignore[no-any-return]


def _aio(conns: int, msgs: int, loop: str) -> dict[str, float]:
    import asyncio as aio

    ended: list[int] = []
    all_ended = aio.Event()  # (binds to the running loop when first awaited)

    async def handle(reader: aio.StreamReader, writer: aio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        ended.append(1)
        if len(ended) == conns:
            all_ended.set()

    async def client(go: aio.Event, port: int, ready: list[int]) -> None:
        reader, writer = await aio.open_connection(HOST, port)
        ready.append(1)
        await go.wait()
        for _ in range(msgs):
            writer.write(MSG)
            await writer.drain()
            await reader.readexactly(64)
        writer.close()

    async def main() -> dict[str, float]:
        server = await aio.start_server(handle, HOST, 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        go = aio.Event()
        ready: list[int] = []
        tasks = [aio.create_task(client(go, port, ready)) for _ in range(conns)]
        while len(ready) < conns:
            await aio.sleep(0.001)
        t0 = time.perf_counter()
        go.set()
        await aio.gather(*tasks)
        dt = time.perf_counter() - t0
        await all_ended.wait()  # every handler saw the end of its stream
        server.close()
        return {"msgs_per_s": conns * msgs / dt}

    return run_asyncio(main, loop)  # type: ignore[no-any-return]


def asyncio(conns: int, msgs: int) -> dict[str, float]:
    return _aio(conns, msgs, "asyncio")


def uvloop(conns: int, msgs: int) -> dict[str, float]:
    return _aio(conns, msgs, "uvloop")
