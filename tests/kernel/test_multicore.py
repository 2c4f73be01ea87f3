"""Several schedulers: a run queue each, work stealing, the receive budget,
and how sysmon tells a stuck process from one that waits for a core.

See docs/process-model.md ("Scheduling", "Preemption by hand-off").
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from tests.conftest import run

import beamlet
from beamlet import receive, send, spawn
from beamlet._kernel import sysmon
from beamlet._kernel.parker import GIL
from beamlet._kernel.table import ShardedTable


def test_an_idle_scheduler_steals_work_queued_behind_a_busy_one():
    """Two processes spawned by one process go on its scheduler's queue; the
    other scheduler, idle, takes one of them, and both run at once, on two
    threads, without sysmon handing anything off."""
    together = threading.Barrier(2, timeout=30)

    async def worker(parent):
        # Both must be running to pass the barrier: with no stealing, the
        # second would wait behind the first (until a hand-off 10 ms later).
        together.wait()
        send(parent, threading.get_ident())

    async def main():
        me = beamlet.self()
        spawn(worker, me)
        spawn(worker, me)
        threads = {await receive(timeout=30), await receive(timeout=30)}
        stats = beamlet.statistics()
        return len(threads), stats.steals, stats.hand_offs

    threads, steals, hand_offs = run(main, schedulers=2)
    assert threads == 2
    assert steals >= 1
    assert hand_offs == 0


def test_work_spreads_over_the_schedulers():
    """Many processes spawned from one place: the scheduler that spawns them is
    not the only one that runs them (the other may run them all while the
    spawner is busy spawning). Free-threaded: under the GIL the woken
    scheduler may not get the GIL before the spawner's thread has run them
    all, and the default there is one scheduler."""
    if GIL:
        pytest.skip("under the GIL, which thread runs them is the GIL's choice")

    async def worker(parent):
        await beamlet.sleep(0)
        send(parent, threading.get_ident())

    async def main():
        me = beamlet.self()
        for _ in range(2000):
            spawn(worker, me)
        spawner = threading.get_ident()
        ran_on = {await receive(timeout=30) for _ in range(2000)}
        return ran_on - {spawner}

    assert run(main, schedulers=2)


def test_a_process_that_keeps_finding_messages_lets_others_run():
    """[RECV-4] A receive counts a reduction, and a process that never has to
    wait yields now and then: a process queued behind one that drains a
    thousand messages runs before the drain ends, on a single scheduler."""

    async def other(parent):
        send(parent, "other ran")

    async def main():
        me = beamlet.self()
        for i in range(1000):
            send(me, i)
        before = beamlet.process_info(me)["reductions"]
        spawn(other, me)  # queued behind main, on the one scheduler
        for i in range(1000):
            assert await receive(int) == i
        reductions = beamlet.process_info(me)["reductions"] - before
        # Already there: it ran while main was draining its mailbox.
        early = await receive("other ran", timeout=0)
        return early, reductions

    early, reductions = run(main, schedulers=1)
    assert early == "other ran"
    assert reductions >= 1000


def test_sysmon_tells_a_thread_that_runs_from_one_on_a_lock_or_in_a_call():
    """sysmon's view of a thread (Linux): running or ready to run, sleeping on a
    lock, or sleeping in another call."""
    me = threading.get_native_id()
    if sysmon.thread_activity(me) is None or not os.access(
        f"/proc/self/task/{me}/syscall", os.R_OK
    ):
        pytest.skip("no /proc/self/task/<tid>/stat and syscall here")
    event = threading.Event()
    ids = {}

    def on_lock():
        ids["lock"] = threading.get_native_id()
        event.wait()

    def in_call():
        ids["call"] = threading.get_native_id()
        while not event.is_set():
            time.sleep(0.05)

    def spinning():
        ids["spin"] = threading.get_native_id()
        while not event.is_set():
            pass

    threads = [threading.Thread(target=f) for f in (on_lock, in_call, spinning)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        seen = {}
        # Until each is seen doing its thing (a thread is caught between
        # states now and then: it just woke, it has not slept yet).
        while len(seen) < 3 and time.monotonic() < deadline:
            for name, want in (
                ("lock", sysmon.WAITS_LOCK),
                ("call", sysmon.WAITS_CALL),
                ("spin", sysmon.RUNS),
            ):
                if name in ids and sysmon.thread_activity(ids[name]) == want:
                    seen[name] = want
            time.sleep(0.001)
        assert seen == {"lock": sysmon.WAITS_LOCK, "call": sysmon.WAITS_CALL, "spin": sysmon.RUNS}
    finally:
        event.set()
        for t in threads:
            t.join()


def test_the_sharded_table_behaves_as_a_dict():
    table = ShardedTable()
    model: dict[int, object] = {}
    assert not table and len(table) == 0
    procs = [object() for _ in range(300)]
    for n, p in enumerate(procs):
        table[n * 7] = p  # type: ignore[assignment]
        model[n * 7] = p
    for n in range(0, 300 * 7, 3):
        assert table.get(n) is model.get(n)
    assert table[14] is model[14]
    with pytest.raises(KeyError):
        table[1]
    assert table.pop(14) is model.pop(14)
    assert table.pop(14) is None
    assert len(table) == len(model) and table
    assert sorted(map(id, table.values())) == sorted(map(id, model.values()))
