"""send_after timers: what one costs while armed, what is left after its target
exits, and the time to arm and cancel one."""

from __future__ import annotations

import gc
import time


def beamlet(n: int) -> dict[str, float]:
    import tracemalloc

    import beamlet as b

    async def target() -> None:
        await b.receive("never")

    async def main() -> dict[str, float]:
        pid = b.spawn(target)
        gc.collect()
        tracemalloc.start()
        m0 = tracemalloc.get_traced_memory()[0]
        refs = [b.send_after(3600, pid, "x") for _ in range(n)]
        m1 = tracemalloc.get_traced_memory()[0]
        ref_bytes = tracemalloc.get_traced_memory()[0]
        probe = [b.make_ref() for _ in range(n)]  # what the refs alone cost
        ref_bytes = tracemalloc.get_traced_memory()[0] - ref_bytes
        del probe
        per_timer = (m1 - m0) / n - 8  # minus the list slot holding each ref
        del refs
        b.exit(pid, "kill")
        while b.statistics().timers:
            await b.sleep(0.001)
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - m0) / n
        tracemalloc.stop()
        me = b.self()
        t0 = time.perf_counter()
        for _ in range(n):
            b.cancel_timer(b.send_after(3600, me, "x"))
        us = (time.perf_counter() - t0) / n * 1e6
        return {
            "bytes_per_timer": per_timer,
            "kernel_bytes_per_timer": per_timer - (ref_bytes / n - 8),
            "held_after_exit_B": max(0.0, held),
            "us_per_set_and_cancel": us,
        }

    return b.run(main)
