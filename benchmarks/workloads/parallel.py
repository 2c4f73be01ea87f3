"""Multi-core workloads (issue 12): what a second scheduler buys.

``cpu_bound``: P processes each summing a range of N ints, all at once;
seconds until all are done. ``pairs``: P ping-pong pairs, R round trips each,
all at once; round trips per second. ``cpu_bound`` also reports
``threads_seconds``: the same sums in as many plain threads, in the same
process -- the machine's own 2-vs-1 ratio, beside beamlet's. Run with ``--schedulers 1,2`` (and on a
free-threaded build with ``--python``): under the GIL a second scheduler cannot
run Python code at the same time as the first.
"""

from __future__ import annotations

import os
import time


def _threads_cpu(threads: int, procs: int, n: int) -> float:
    """The machine's ceiling for ``cpu_bound``: the same sums in ``threads``
    plain threads (no runtime), seconds. On a VM whose cores are shared, two
    threads do not always buy two cores: the ratio of this figure at 1 and 2
    threads is what a scheduler can hope for, measured in the same run."""
    import threading

    def work() -> None:
        for _ in range(procs // threads):
            total = 0
            for i in range(n):
                total += i

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def beamlet_cpu(procs: int, n: int) -> dict[str, float]:
    import beamlet as b

    async def work(parent: b.Pid) -> None:
        total = 0
        for i in range(n):
            total += i
        b.send(parent, total)

    async def main() -> dict[str, float]:
        me = b.self()
        t0 = time.perf_counter()
        for _ in range(procs):
            b.spawn(work, me)
        for _ in range(procs):
            await b.receive()
        return {"seconds": time.perf_counter() - t0}

    out: dict[str, float] = b.run(main)
    # The same work in as many plain threads as beamlet had schedulers.
    from beamlet._kernel.scheduler import default_schedulers

    threads = int(os.environ.get("BENCH_SCHEDULERS") or default_schedulers())
    out["threads_seconds"] = _threads_cpu(threads, procs, n)
    return out


def beamlet_pairs(pairs: int, rounds: int) -> dict[str, float]:
    import beamlet as b

    async def echo() -> None:
        while True:
            sender, m = await b.receive()
            b.send(sender, m)

    async def pinger(parent: b.Pid) -> None:
        e = b.spawn(echo)
        me = b.self()
        for i in range(rounds):
            b.send(e, (me, i))
            await b.receive()
        b.exit(e, "kill")
        b.send(parent, "done")

    async def main() -> dict[str, float]:
        me = b.self()
        t0 = time.perf_counter()
        for _ in range(pairs):
            b.spawn(pinger, me)
        for _ in range(pairs):
            await b.receive()
        return {"roundtrips_per_s": pairs * rounds / (time.perf_counter() - t0)}

    return b.run(main)
