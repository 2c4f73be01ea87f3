"""What looking costs: beamlet.observer's top, system and trace on a node
with many processes (issue 16's cost figures).

Run: PYTHONPATH=src python3 benchmarks/observer_cost.py [--processes 100000] [--repeat 5]

Prints, for N idle processes (blocked in a receive) and one runaway:

* ``top(window=1.0)``: CPU time the call spends (both snapshots, the
  ranking, the rows), thread CPU time of the scheduler that runs it, the
  window's wait excluded (it waits in a receive); per ranking (cpu, memory,
  msgq, reductions). Target: <= 200 ms over 100,000 processes.
* a view refreshed once a second (``top("cpu", 30, 1.0)`` and ``system()``,
  what ``beamlet top`` and the dashboard do): CPU per second in percent of
  one scheduler. Target: <= 5 %.
* tracing 50 calls (``trace(target, max=100)``: 50 calls and 50 returns) of
  a function whose body takes about B microseconds, by function and by
  process: the traced process's time for those 50 calls over its time for
  50 untraced ones. Target: <= 2x.

Medians of ``--repeat`` runs. The machines here are noisy: compare within
one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import beamlet
from beamlet import observer, receive, send, spawn


async def idle() -> None:
    await receive("never")


async def runaway() -> None:
    x = 0
    while True:
        x += 1


def body(n: int) -> int:
    """About ``n`` microseconds of work (calibrated below)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def _calibrate(us: float) -> int:
    n = 1000
    t = time.perf_counter()
    for _ in range(100):
        body(n)
    per = (time.perf_counter() - t) / 100 / n
    return max(1, round(us * 1e-6 / per))


async def _traced_loop(parent: Any, n: int, calls: int) -> None:
    """Calls body(n) ``calls`` times for each "go"; answers with the time taken."""
    while True:
        msg = await receive()
        if msg == "stop":
            return
        t = time.perf_counter()
        for _ in range(calls):
            body(n)
        send(parent, ("took", time.perf_counter() - t))


async def _top_cost(by: str) -> float:
    """Thread CPU seconds of ``top(by, 30, window=0)``: both snapshots back to
    back, the ranking and the rows, in one turn of the calling process."""
    before = time.thread_time()
    await observer.top(by, 30, 0)
    return time.thread_time() - before


async def main(n_procs: int, repeat: int, body_us: list[float]) -> None:
    t = time.perf_counter()
    for _ in range(n_procs):
        spawn(idle)
    hog = spawn(runaway)
    print(f"{n_procs:,} idle processes and 1 runaway, spawned in {time.perf_counter() - t:.1f} s")
    print(f"python {sys.version.split()[0]}, GIL {'on' if observer.system()['gil'] else 'off'}")

    # ---- top
    print("\ntop(by, n=30): CPU ms per call (both snapshots, ranking, rows), median")
    for by in ("cpu", "memory", "msgq", "reductions"):
        costs = [await _top_cost(by) for _ in range(repeat)]
        print(f"  {by:<11} {statistics.median(costs) * 1000:7.1f} ms  (target <= 200 ms)")
    # The same through a real 1 s window: the OS process's CPU time over
    # top(window=1.0) minus over sleep(1.0) (sysmon, timers), the runaway
    # killed first (its thread's CPU would drown the difference).
    observer.kill(hog)
    base, full = [], []
    for _ in range(min(repeat, 3)):
        before = time.process_time()
        await beamlet.sleep(1.0)
        base.append(time.process_time() - before)
        before = time.process_time()
        await observer.top("cpu", 30, 1.0)
        full.append(time.process_time() - before)
    print(
        f"  cpu, window=1.0: {(statistics.median(full) - statistics.median(base)) * 1000:.1f} ms"
        f" of CPU ({statistics.median(full) * 1000:.1f} ms with the window's"
        f" {statistics.median(base) * 1000:.1f} ms of idle-node CPU)"
    )

    # ---- a view refreshed once a second
    per_refresh = []
    for _ in range(repeat):
        before = time.thread_time()
        await observer.top("cpu", 30, 0)
        observer.system()
        per_refresh.append(time.thread_time() - before)
    r = statistics.median(per_refresh)
    print(
        f"\na view refreshed once a second (top + system): {r * 1000:.1f} ms per refresh"
        f" = {r * 100:.1f} % of one scheduler (target <= 5 %)"
    )

    # ---- trace
    print("\ntrace: time of 50 calls of body() traced (max=100: 50 calls + 50 returns) / untraced")
    me = beamlet.self()
    for us in body_us:
        n = _calibrate(us)
        worker = spawn(_traced_loop, me, n, 50)
        ratios: dict[str, list[float]] = {"function": [], "process": []}
        per_event: dict[str, list[float]] = {"function": [], "process": []}
        for _ in range(repeat):
            for kind in ("function", "process"):
                send(worker, "go")
                _, base = await receive(("took", beamlet.ANY))
                ref = observer.trace(body if kind == "function" else worker, max=100, timeout=30)
                send(worker, "go")
                _, traced = await receive(("took", beamlet.ANY))
                events = 0
                while True:
                    msg = await receive(timeout=30)
                    if msg[0] == "trace_done" and msg[1] == ref:
                        break
                    events += 1
                assert events == 100, events
                ratios[kind].append(traced / base)
                per_event[kind].append((traced - base) / events * 1e6)
        send(worker, "stop")
        med = {k: statistics.median(v) for k, v in ratios.items()}
        ev = {k: statistics.median(v) for k, v in per_event.items()}
        print(
            f"  body ~{us:g} us: by function {med['function']:.2f}x"
            f" ({ev['function']:.1f} us per event), by process {med['process']:.2f}x"
            f" ({ev['process']:.1f} us per event)  (target <= 2x)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--schedulers", type=int, default=None)
    parser.add_argument(
        "--body-us",
        type=float,
        nargs="+",
        default=[1.0, 10.0, 100.0],
        help="the traced function's body, microseconds (default 1 10 100)",
    )
    args = parser.parse_args()
    beamlet.run(main, args.processes, args.repeat, args.body_us, schedulers=args.schedulers)
