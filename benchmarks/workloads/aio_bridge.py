"""The asyncio bridge (beamlet.aio) next to the usual way across a thread into
asyncio and back.

Metrics (one run measures them all, side by side):

* ``run_us``: a round trip of a trivial coroutine, idle node: ``await
  aio.run(trivial)`` in one process. asyncio: ``run_coroutine_threadsafe(
  trivial(), loop).result()`` from one plain thread.
* ``run_64_per_s``: the same, 64 processes (threads) at once: round trips per
  second, all together.
* ``call_us``: from asyncio code on a loop in another thread, a call into a
  server and back: ``await aio.call(server, i)`` into a GenServer. asyncio: a
  server *thread* taking requests from a queue and answering through
  ``call_soon_threadsafe``.
* ``blocking_us`` (beamlet only): ``await beamlet.blocking(int)``, the
  kernel's own round trip to another thread (its pool) and back: what
  ``aio.run`` is built like. Batches alternate with ``run_us``'s.
* ``hop_pair_us``: the floor: two plain threads handing a token back and forth
  through locks (one round trip = two thread hops), in batches that alternate
  with ``run_us``'s, so that both see the same moments of a noisy machine.

Latencies are the median of 20 batches (this machine's noise comes in bursts).
Standalone: ``python -m benchmarks.workloads.aio_bridge [--quick]``.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

BATCHES = 20
WARM = 500


async def trivial() -> int:
    return 1


class HopPair:
    """Two threads handing a token back and forth through locks: one round
    trip is two thread hops. ``batch(k)`` (from any thread) returns µs per
    round trip over k of them."""

    def __init__(self) -> None:
        self.ping, self.pong = threading.Lock(), threading.Lock()
        self.ping.acquire()
        self.pong.acquire()
        self.done = False
        self.thread = threading.Thread(target=self._other, daemon=True)
        self.thread.start()
        self.batch(WARM)

    def _other(self) -> None:
        while True:
            self.ping.acquire()
            if self.done:
                return
            self.pong.release()

    def batch(self, k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            self.ping.release()
            self.pong.acquire()
        return (time.perf_counter() - t0) / k * 1e6

    def close(self) -> None:
        self.done = True
        self.ping.release()
        self.thread.join()


async def _timed_async(k: int, once: Callable[[int], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        await once(i)
    return (time.perf_counter() - t0) / k * 1e6


def _timed_sync(k: int, once: Callable[[int], Any]) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        once(i)
    return (time.perf_counter() - t0) / k * 1e6


async def _batches_async(n: int, once: Callable[[int], Awaitable[Any]]) -> float:
    """Median µs per ``await once(i)`` over BATCHES batches (after a warm-up)."""
    await _timed_async(min(WARM, n), once)
    per = max(1, n // BATCHES)
    return statistics.median([await _timed_async(per, once) for _ in range(BATCHES)])


def beamlet(n_run: int, n_each: int, n_call: int) -> dict[str, object]:
    import beamlet as b
    from beamlet import aio
    from beamlet.otp import GenServer

    class Echo(GenServer):
        async def handle_call(self, request, from_):  # type: ignore[no-untyped-def]
            return request

    async def runner(parent: Any, n: int) -> None:
        await b.receive("go")
        for _ in range(n):
            await aio.run(trivial)
        b.send(parent, "done")

    async def main() -> dict[str, object]:
        out: dict[str, object] = {}
        loop = aio.loop()
        out["note"] = f"loop: {type(loop).__module__.split('.')[0]}"

        async def one_run(_i: int) -> Any:
            return await aio.run(trivial)

        # Batches of aio.run round trips alternate with batches of the thread
        # hop pair, so that both see the same moments of a noisy machine.
        async def one_blocking(_i: int) -> Any:
            return await b.blocking(int)

        hop = HopPair()
        await _timed_async(WARM, one_run)
        await _timed_async(WARM, one_blocking)
        per = max(1, n_run // BATCHES)
        runs, hops, blocks = [], [], []
        for _ in range(BATCHES):
            hops.append(await b.blocking(hop.batch, per))
            runs.append(await _timed_async(per, one_run))
            blocks.append(await _timed_async(per, one_blocking))
        hop.close()
        out["run_us"] = statistics.median(runs)
        out["hop_pair_us"] = statistics.median(hops)
        out["blocking_us"] = statistics.median(blocks)

        me = b.self()
        pids = [b.spawn(runner, me, n_each) for _ in range(64)]
        t0 = time.perf_counter()
        for pid in pids:
            b.send(pid, "go")
        for _ in pids:
            await b.receive("done")
        out["run_64_per_s"] = 64 * n_each / (time.perf_counter() - t0)

        server = await Echo.start_link()

        async def client() -> float:
            async def one_call(i: int) -> Any:
                return await aio.call(server, i)

            return await _batches_async(n_call, one_call)

        box: dict[str, float] = {}
        web = threading.Thread(target=lambda: box.update(us=asyncio.run(client())))
        web.start()
        await b.blocking(web.join)
        out["call_us"] = box["us"]
        return out

    return b.run(main)  # type: ignore[no-any-return]


def asyncio_(n_run: int, n_each: int, n_call: int) -> dict[str, object]:
    """The usual crossings, without beamlet: plain threads into a loop thread
    (``run_coroutine_threadsafe``), and asyncio code into a server thread."""
    try:
        import uvloop  # as beamlet.aio's loop: uvloop's if installed

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    out: dict[str, object] = {"note": f"loop: {type(loop).__module__.split('.')[0]}"}
    lt = threading.Thread(target=loop.run_forever, daemon=True)
    lt.start()

    def one_run(_i: int) -> Any:
        return asyncio.run_coroutine_threadsafe(trivial(), loop).result()

    hop = HopPair()
    _timed_sync(WARM, one_run)
    per = max(1, n_run // BATCHES)
    runs, hops = [], []
    for _ in range(BATCHES):
        hops.append(hop.batch(per))
        runs.append(_timed_sync(per, one_run))
    hop.close()
    out["run_us"] = statistics.median(runs)
    out["hop_pair_us"] = statistics.median(hops)

    go = threading.Event()

    def runner() -> None:
        go.wait()
        for _ in range(n_each):
            asyncio.run_coroutine_threadsafe(trivial(), loop).result()

    threads = [threading.Thread(target=runner) for _ in range(64)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    out["run_64_per_s"] = 64 * n_each / (time.perf_counter() - t0)
    loop.call_soon_threadsafe(loop.stop)
    lt.join()
    loop.close()

    import queue

    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def server() -> None:
        while True:
            item = requests.get()
            if item is None:
                return
            client_loop, fut, request = item
            client_loop.call_soon_threadsafe(fut.set_result, request)

    st = threading.Thread(target=server)
    st.start()

    async def client() -> float:
        running = asyncio.get_running_loop()

        async def one_call(i: int) -> Any:
            fut = running.create_future()
            requests.put((running, fut, i))
            return await fut

        return await _batches_async(n_call, one_call)

    out["call_us"] = asyncio.run(client())
    requests.put(None)
    st.join()
    return out


#: The suite calls a runtime's function by its name (``functions={"asyncio": "asyncio_"}``).
FUNCTIONS = {"beamlet": beamlet, "asyncio": asyncio_}

FULL = (20_000, 1_000, 20_000)
QUICK = (2_000, 100, 2_000)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="scaled down")
    p.add_argument("--runtimes", default="beamlet,asyncio")
    args = p.parse_args()
    sizes = QUICK if args.quick else FULL
    targets = {"run_us": "<= 60", "run_64_per_s": ">= 20,000", "call_us": "<= 60"}
    results = {rt: FUNCTIONS[rt](*sizes) for rt in args.runtimes.split(",")}
    names = ["run_us", "run_64_per_s", "call_us", "blocking_us", "hop_pair_us"]
    print(f"{'metric':<14}" + "".join(f"{rt:>14}" for rt in results) + "   target (beamlet)")
    for name in names:
        row = "".join(
            f"{float(r[name]):>14,.1f}" if name in r else f"{'-':>14}"  # type: ignore[arg-type]
            for r in results.values()
        )
        print(f"{name:<14}{row}   {targets.get(name, '')}")
    for rt, r in results.items():
        print(f"{rt}: {r.get('note', '')}")


if __name__ == "__main__":
    main()
