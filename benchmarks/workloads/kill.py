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


def beamlet_many(k: int, _rounds: int) -> dict[str, float]:
    """k runaways, each running on its own thread, killed at once: seconds from
    the first exit() to the last DOWN (the issue's kill_1000 target: <= 1 s)."""
    import beamlet as b

    async def runaway(parent: b.Pid) -> None:
        b.send(parent, "started")
        x = 0
        while True:
            x += 1

    async def main() -> dict[str, float]:
        me = b.self()
        procs = [b.spawn_monitor(runaway, me) for _ in range(k)]
        for _ in procs:
            await b.receive("started")
        deadline = time.monotonic() + 120
        while b.statistics().held_by_runaways < k and time.monotonic() < deadline:
            await b.sleep(0.01)  # until sysmon has given every runaway its thread
        held = b.statistics().held_by_runaways
        t0 = time.perf_counter()
        for pid, _ in procs:
            b.exit(pid, "kill")
        for pid, ref in procs:
            await b.receive(b.Down(ref, pid, b.ANY))
        return {"all_dead_s": time.perf_counter() - t0, "held_by_runaways": held}

    return b.run(main)


def beamlet_spree(k: int, rounds: int) -> dict[str, float]:
    """k runaways spawned, then killed, by a process that never yields between
    (a supervisor shutting down the workers it just started), ``rounds``
    times: seconds from the first exit() to the last DOWN, median and worst
    round. The killer runs for longer than a slice, so it is a runaway itself:
    where runaways take turns (throttle.py) it kills in its turns only."""
    import beamlet as b

    async def runaway() -> None:
        x = 0
        while True:
            x += 1

    async def main() -> dict[str, float]:
        times = []
        for _ in range(rounds):
            procs = [b.spawn_monitor(runaway) for _ in range(k)]
            t0 = time.perf_counter()
            for pid, _ in procs:
                b.exit(pid, "kill")
            for pid, ref in procs:
                await b.receive(b.Down(ref, pid, b.ANY))
            times.append(time.perf_counter() - t0)
        return {"p50_s": percentile(times, 0.5), "worst_s": max(times)}

    return b.run(main)
