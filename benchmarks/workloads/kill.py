"""Kill a process that is running a busy loop (never awaits), R times, while K
other runaways run: p50/p99 ms from exit(pid, "kill") to its DOWN."""

from __future__ import annotations

import time

from benchmarks.workloads.common import percentile


def beamlet(k: int, rounds: int) -> dict[str, float]:
    import beamlet as b

    async def runaway(parent: b.Pid | None) -> None:
        if parent is not None:
            b.send(parent, "started")
        x = 0
        while True:
            x += 1

    async def main() -> dict[str, float]:
        for _ in range(k):
            b.spawn(runaway, None)
        me = b.self()
        times = []
        for _ in range(rounds):
            pid, ref = b.spawn_monitor(runaway, me)
            await b.receive("started")
            t0 = time.perf_counter()
            b.exit(pid, "kill")
            await b.receive(b.Down(ref, b.ANY, b.ANY))
            times.append(time.perf_counter() - t0)
        return {"p50_ms": percentile(times, 0.5) * 1000, "p99_ms": percentile(times, 0.99) * 1000}

    return b.run(main)
