"""process_info and friends: what an operator sees."""

from __future__ import annotations

import threading

from tests.conftest import run

import beamlet
from beamlet import ANY, Down, monitor, process_info, receive, send, spawn, spawn_link


async def parked_in_receive():
    await receive("never")


def test_process_info_of_a_waiting_process():
    async def main():
        me = beamlet.self()
        pid = spawn_link(parked_in_receive)
        beamlet.register("parked", pid)
        monitor(pid)
        send(pid, "one")
        send(pid, "two")
        # A round trip through a process that is scheduled after it makes sure
        # the target has run and parked again.
        for _ in range(3):
            await beamlet.sleep(0)
        info = process_info(pid)
        # The link and the monitor, seen from this side too.
        mine = process_info(me)
        assert (mine["links"], mine["monitors"]) == ([pid], [pid])
        return me, info

    me, info = run(main, schedulers=1)
    assert info["status"] == "waiting"
    assert info["message_queue_len"] == 2
    assert info["registered_name"] == "parked"
    assert info["links"] == [me]
    assert info["monitored_by"] == [me]
    assert info["trap_exit"] is False
    assert info["initial_call"] == (__name__, "parked_in_receive", 0)
    assert info["reductions"] >= 1
    assert info["memory"] > 0
    names = [f.name for f in info["current_stacktrace"]]
    assert names[0] == "parked_in_receive" and "receive" in names[-1]


def test_process_info_of_the_caller_says_running():
    async def main():
        info = process_info(beamlet.self())
        return info["status"], info["initial_call"][1]

    assert run(main) == ("running", "test_process_info_of_the_caller_says_running.<locals>.main")


def test_process_info_of_a_dead_process_is_none():
    async def quick():
        return None

    async def main():
        pid, ref = beamlet.spawn_monitor(quick)
        await receive(Down(ref, ANY, ANY))
        return process_info(pid), beamlet.is_alive(pid), pid in beamlet.processes()

    assert run(main) == (None, False, False)


def test_monitors_are_listed_by_target():
    async def main():
        pid = spawn(parked_in_receive)
        monitor(pid)
        monitor(pid)
        return pid, process_info(beamlet.self())["monitors"]

    pid, monitors = run(main)
    assert monitors == [pid, pid]


def test_processes_lists_live_processes():
    async def main():
        pids = [spawn(parked_in_receive) for _ in range(10)]
        live = set(beamlet.processes())
        assert set(pids) <= live
        assert beamlet.self() in live

    run(main)


async def _spinner(parent):
    send(parent, "started")
    x = 0
    while True:
        x += 1


async def _sleeper(parent):
    import time

    send(parent, "started")
    while True:
        time.sleep(0.01)  # holds its thread, uses no CPU


def test_runtime_is_cpu_time_so_a_process_blocked_in_a_sleep_is_not_charged():
    """process_info's ``runtime`` is CPU seconds: the process that hogs the CPU
    ranks first, not one that holds a thread while it sleeps."""
    import time

    async def main():
        me = beamlet.self()
        sleeper = spawn(_sleeper, me)
        spinners = [spawn(_spinner, me) for _ in range(3)]
        for _ in range(4):
            await receive("started", timeout=30)

        # From here on: what they had been charged before counts for nothing
        # (without the GIL the spinners ran in parallel meanwhile). ``runtime`` is
        # a sample sysmon takes now and then, so the window of the samples must lie
        # inside the window of the process clock: the first samples are those taken
        # after ``cpu0`` was read, the last ones are read before ``cpu``.
        def runtimes():
            return [process_info(p)["runtime"] for p in spinners]

        cpu0 = time.process_time()
        stale = runtimes()
        spun0 = stale
        while any(r == s for r, s in zip(spun0, stale, strict=True)):
            await beamlet.sleep(0.001)
            spun0 = runtimes()
        deadline = time.monotonic() + 30
        while runtimes()[0] < spun0[0] + 0.3 and time.monotonic() < deadline:
            await beamlet.sleep(0.01)
        spun = [r - r0 for r, r0 in zip(runtimes(), spun0, strict=True)]
        cpu = time.process_time() - cpu0
        slept = process_info(sleeper)["runtime"]
        return spun, slept, cpu

    spun, slept, process_cpu = run(main, schedulers=1)
    assert min(spun) > 0 and slept < min(spun) / 4
    # Per-thread CPU cannot add up to more than the whole process used (wall-time
    # charging did: three spinners sharing one GIL were each charged the wall time).
    assert sum(spun) <= process_cpu + 0.01


def test_message_queue_len_counts_a_message_its_receiver_has_not_run_for_yet():
    """The message that wakes a waiting process is handed to it directly
    (signals.deliver); until the process runs it is in neither its inbox nor
    its queue, and was not counted (the observer's top by "msgq" once showed
    499 of 500 on a free-threaded run)."""

    async def main():
        pid = spawn(parked_in_receive)
        await beamlet.sleep(0)  # it runs and waits
        before = process_info(pid)["message_queue_len"]
        send(pid, "one")  # wakes it; with one scheduler it cannot run before we yield
        woken = process_info(pid)
        send(pid, "two")
        return before, woken["status"], woken["message_queue_len"], process_info(pid)

    before, status, one, info = run(main, schedulers=1)
    assert (before, status, one) == (0, "runnable", 1)
    assert info["message_queue_len"] == 2


def test_message_queue_len_counts_every_message_while_its_owner_moves_them():
    """[MON-7] A count taken from another scheduler while the receiver moves its
    inbox to its queue (signals.drain) missed the messages in between (the
    observer's top showed 472 of 500 on a free-threaded run). Every message
    sent before the count is counted once: the receiver takes none."""

    async def main():
        pid = spawn(parked_in_receive)
        wrong = []
        for sent in range(1, 3001):
            send(pid, sent)  # wakes it on the other scheduler, to drain
            n = process_info(pid)["message_queue_len"]
            if n != sent:
                wrong.append((sent, n))
        return wrong

    assert run(main, schedulers=2) == []


def test_memory_counts_the_queued_messages():
    async def main():
        pid = spawn(parked_in_receive)
        await beamlet.sleep(0)
        before = process_info(pid)["memory"]
        for _ in range(10):
            send(pid, b"x" * 100_000)  # shared, not copied: 100 KB each
        for _ in range(3):
            await beamlet.sleep(0)
        return before, process_info(pid)["memory"]

    before, after = run(main, schedulers=1)
    assert after - before >= 10 * 100_000


def test_process_info_never_reads_a_running_threads_frames_on_a_free_threaded_build(
    monkeypatch,
):
    """Reading the frames of a coroutine another thread runs is a use-after-free
    on a free-threaded build (CPython gh-118680): there a process that is not
    waiting shows its function only; a waiting one its whole stack."""
    import sys

    import pytest

    from beamlet._kernel.parker import GIL

    if GIL:
        pytest.skip("with the GIL, the frames of a running process are read")

    def no_frames():
        raise AssertionError("sys._current_frames() on a free-threaded build")

    monkeypatch.setattr(sys, "_current_frames", no_frames)

    async def busy(parent):
        send(parent, ("started", beamlet.self()))
        while True:
            pass

    async def main():
        runner = spawn(busy, beamlet.self())
        await receive(("started", runner), timeout=30)
        waiter = spawn(parked_in_receive)
        while process_info(waiter)["status"] != "waiting":
            await beamlet.sleep(0)
        running, waiting = process_info(runner), process_info(waiter)
        beamlet.exit(runner, "kill")
        return running, waiting

    running, waiting = run(main)
    assert running["status"] == "running"
    assert [f.name for f in running["current_stacktrace"]] == ["busy"]
    assert running["memory"] > 0
    names = [f.name for f in waiting["current_stacktrace"]]
    assert names[0] == "parked_in_receive" and "receive" in names[-1]


def test_a_process_is_gone_from_processes_once_its_down_arrives():
    """A DOWN (or an exit signal) tells of a death after the fact: the dead
    process is no longer among processes() nor counted by statistics(). The
    table entry went last, after every link and monitor had been told, and a
    watcher on another core could see its dead target listed."""
    from beamlet._kernel import signals
    from beamlet._kernel.context import current_runtime
    from beamlet._kernel.runtime import NoDistribution
    from beamlet.terms import Atom, Pid

    checked = threading.Event()
    seen = []

    async def quick():
        await receive("go")  # not before both monitors are in place

    async def main():
        rt = current_runtime()
        me = beamlet.self()
        # A second watcher, on another node: telling it goes through the
        # distribution hook, which waits here until main has looked.
        far = Pid(1, node=Atom("far@nowhere"))

        class Far(NoDistribution):
            def route(self, pid, item, sender):
                if pid == far:
                    checked.wait(30)

        rt.distribution = Far(rt)
        pid, ref = beamlet.spawn_monitor(quick)
        assert signals.add_monitor(rt, pid, rt.make_ref(), far)
        send(pid, "go")
        await receive(Down(ref, pid, ANY), timeout=30)
        seen.append((pid in beamlet.processes(), beamlet.statistics().processes))
        checked.set()
        return me

    try:
        run(main, schedulers=2)
    finally:
        checked.set()
    assert seen == [(False, 1)]


def test_a_coroutines_awaits_are_read_only_while_it_is_suspended():
    """The stack, memory and code walks follow cr_await only while a coroutine
    is suspended: CPython reads it off the frame's value stack, which is not
    valid while the frame executes (introspection.awaited; observer.top
    segfaulted reading a runaway's)."""
    import types

    from beamlet._kernel.introspection import awaited, format_stack

    @types.coroutine
    def pause():
        yield "trap"

    seen = []

    async def leaf():
        seen.append(awaited(outer))  # outer executes now: it drives this
        await pause()

    async def top():
        await leaf()

    outer = top()
    assert awaited(outer) is None  # created, not started
    assert outer.send(None) == "trap"
    inner = awaited(outer)
    assert seen == [None] and inner.cr_code is leaf.__code__
    assert type(awaited(inner)) is types.GeneratorType  # pause(), at its yield
    assert awaited(awaited(inner)) is None
    assert [f.name for f in format_stack(outer)] == ["top", "leaf", "pause"]
    outer.close()
    assert awaited(outer) is None and awaited("not a coroutine") is None
