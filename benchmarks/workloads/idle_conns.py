"""N idle loopback TCP connections, both ends in this OS process: bytes per
connection as RSS growth / N, and µs per connection opened.

Server side: an acceptor pool hands each accepted socket to a new process,
which blocks in a passive recv. Client side: C processes open N/C connections
each and hold the sockets. So one connection counts: two sockets (the handles
and the OS descriptors' user-space part; the kernel's socket buffers are not in
RSS), the server's process, and 1/(N/C) of a client process. asyncio and
uvloop: ``start_server`` with a handler task per connection blocked in
``reader.read``; C tasks holding N/C (reader, writer) pairs each. Needs 2N
descriptors and a bit: RLIMIT_NOFILE is raised as far as allowed, and the
workload is skipped (with a note) if that is not enough."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from benchmarks.workloads.common import rss
from benchmarks.workloads.netcommon import HOST, beamlet_acceptor, raise_nofile, run_asyncio

ACCEPTORS = 10
SPARE_FDS = 200


def _skip(n: int) -> dict[str, Any] | None:
    need = 2 * n + SPARE_FDS
    have = raise_nofile(need)
    if have < need:
        return {
            "bytes_per_conn": None,
            "us_per_conn": None,
            "note": f"skipped: {n} connections need {need} descriptors, RLIMIT_NOFILE allows {have}",
        }
    return None


def beamlet(n: int, clients: int) -> dict[str, Any]:
    skip = _skip(n)
    if skip is not None:
        return skip
    import beamlet as b
    from beamlet import net

    def hand_to_conn(parent: b.Pid) -> Callable[[net.Socket], None]:
        def on_socket(s: net.Socket) -> None:
            net.controlling_process(s, b.spawn(conn, s, parent))

        return on_socket

    async def conn(s: net.Socket, parent: b.Pid) -> None:
        b.send(parent, "up")
        await net.recv(s, 0)  # blocks: the peer never sends

    async def client(parent: b.Pid, port: int, count: int) -> None:
        held = [await net.connect(HOST, port, timeout=60) for _ in range(count)]
        b.send(parent, ("held", len(held)))
        await b.receive()  # holds them until the run ends

    async def main() -> dict[str, Any]:
        me = b.self()
        ls = net.listen(0, HOST, backlog=4096)
        port = net.sockname(ls)[1]
        for _ in range(ACCEPTORS):
            b.spawn(beamlet_acceptor, ls, hand_to_conn(me))
        await b.sleep(0.05)
        gc.collect()
        r0 = rss()
        t0 = time.perf_counter()
        each, extra = divmod(n, clients)
        for i in range(clients):
            b.spawn(client, me, port, each + (i < extra))
        for _ in range(n):
            await b.receive("up", timeout=60)
        for _ in range(clients):
            await b.receive(("held", b.ANY), timeout=60)
        t1 = time.perf_counter()
        while b.statistics().run_queue:  # every server process in its recv
            await b.sleep(0.01)
        r1 = rss()
        return {"bytes_per_conn": (r1 - r0) / n, "us_per_conn": (t1 - t0) / n * 1e6}

    return b.run(main)  # type: ignore[no-any-return]


def _aio(n: int, clients: int, loop: str) -> dict[str, Any]:
    skip = _skip(n)
    if skip is not None:
        return skip
    import asyncio as aio

    up: list[int] = []
    gone: list[int] = []

    async def handle(reader: aio.StreamReader, writer: aio.StreamWriter) -> None:
        up.append(1)
        await reader.read(65536)  # blocks: the peer never sends
        writer.close()
        gone.append(1)

    async def client(port: int, count: int, held: list[Any]) -> None:
        for _ in range(count):
            held.append(await aio.open_connection(HOST, port))
        await aio.Event().wait()  # holds them until the run ends

    async def main() -> dict[str, Any]:
        server = await aio.start_server(handle, HOST, 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        await aio.sleep(0.05)
        gc.collect()
        r0 = rss()
        t0 = time.perf_counter()
        each, extra = divmod(n, clients)
        held: list[Any] = []
        tasks = [aio.create_task(client(port, each + (i < extra), held)) for i in range(clients)]
        while len(up) < n or len(held) < n:
            await aio.sleep(0.001)
        t1 = time.perf_counter()
        await aio.sleep(0.05)  # every handler in its read
        r1 = rss()
        for t in tasks:
            t.cancel()
        for _, writer in held:
            writer.close()
        server.close()
        while len(gone) < n:  # let the handlers see the end of their stream
            await aio.sleep(0.01)
        return {"bytes_per_conn": (r1 - r0) / n, "us_per_conn": (t1 - t0) / n * 1e6}

    return run_asyncio(main, loop)  # type: ignore[no-any-return]


def asyncio(n: int, clients: int) -> dict[str, Any]:
    return _aio(n, clients, "asyncio")


def uvloop(n: int, clients: int) -> dict[str, Any]:
    return _aio(n, clients, "uvloop")
