"""[MON-*] monitors (docs/semantics.md)."""

from __future__ import annotations

from tests.conftest import run
from tests.helpers import assert_no_message
from tests.kernel.semantics.helpers import die_with, pingable, sync_with

import beamlet
from beamlet import ANY, Down, demonitor, monitor, receive, send, spawn, spawn_monitor


def test_a_monitor_delivers_one_down_with_the_reason():
    """[MON-1]"""

    async def main():
        pid = spawn(die_with, ("bad", 42))
        ref = monitor(pid)
        send(pid, "go")
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        # A second monitor's Down comes after any second Down of the first.
        ref2 = monitor(pid)
        await receive(Down(ref2, ANY, ANY), timeout=30)
        await assert_no_message(Down(ref, ANY, ANY), timeout=0)
        assert down == Down(ref, pid, ("bad", 42))

    run(main)


def test_two_monitors_give_two_downs():
    """[MON-1]"""

    async def main():
        pid = spawn(die_with, "bye")
        r1, r2 = monitor(pid), monitor(pid)
        send(pid, "go")
        assert r1 != r2
        d1 = await receive(Down(r1, pid, ANY), timeout=30)
        d2 = await receive(Down(r2, pid, ANY), timeout=30)
        assert (d1, d2) == (Down(r1, pid, "bye"), Down(r2, pid, "bye"))

    run(main)


def test_a_monitor_does_not_kill_the_watcher():
    """[MON-1] monitors are one-way and ignore trap_exit."""

    async def main():
        pid, ref = spawn_monitor(die_with, RuntimeError("crash"))
        send(pid, "go")
        down = await receive(Down(ref, pid, ANY), timeout=30)
        return type(down.reason).__name__, beamlet.process_info(pid)

    assert run(main) == ("RuntimeError", None)


def test_monitoring_a_dead_process_gives_noproc():
    """[MON-2]"""

    async def main():
        pid, ref = spawn_monitor(die_with, "normal")
        send(pid, "go")
        await receive(Down(ref, pid, ANY), timeout=30)
        ref2 = monitor(pid)
        return await receive(Down(ref2, ANY, ANY), timeout=30)

    down = run(main)
    assert down.reason == "noproc"


def test_spawn_monitor_reports_a_child_that_crashes_at_once():
    """[MON-3]"""

    async def crash_at_once():
        raise OSError("immediately")

    async def main():
        pid, ref = spawn_monitor(crash_at_once)
        return type((await receive(Down(ref, pid, ANY), timeout=30)).reason)

    assert run(main) is OSError


def test_after_demonitor_no_down_arrives():
    """[MON-4]"""

    async def main():
        pid = spawn(pingable)
        ref = monitor(pid)
        was_active = demonitor(ref)
        again = demonitor(ref)
        beamlet.exit(pid, "kill")
        # A second monitor set up after the first proves the death has been
        # reported to us: its Down arrives after any Down of the first.
        ref2 = monitor(pid)
        await receive(Down(ref2, ANY, ANY), timeout=30)
        await assert_no_message(Down(ref, ANY, ANY), timeout=0)
        assert (was_active, again) == (True, False)

    run(main)


def test_demonitor_flush_removes_a_queued_down():
    """[MON-4]"""

    async def main():
        pid = spawn(die_with, "gone")
        ref = monitor(pid)
        send(pid, "go")
        # Let the Down be queued: a later monitor's Down comes after it.
        ref2 = monitor(pid)
        await receive(Down(ref2, ANY, ANY), timeout=30)
        demonitor(ref, flush=True)
        await assert_no_message(Down(ref, ANY, ANY), timeout=0)

    run(main)


class _Looked:
    """A Down's ref that counts how often a mailbox scan compares it."""

    seen = 0

    def __eq__(self, other):
        _Looked.seen += 1
        return False

    __hash__ = object.__hash__


def test_demonitor_flush_of_an_active_monitor_looks_at_no_queued_message():
    """[MON-4] An active monitor has no Down queued (draining a DOWN removes its
    monitor at once), so flush has nothing to look for: it compares no queued
    message (a call with 10,000 messages waiting stays O(1)), and every message
    stays, in order."""

    async def main():
        me = beamlet.self()
        for i in range(1000):
            send(me, Down(_Looked(), None, i))
        await assert_no_message("none", timeout=0)  # now queued, not in the inbox
        pid = spawn(die_with, "later")
        ref = monitor(pid)
        _Looked.seen = 0
        was_active = demonitor(ref, flush=True)
        seen = _Looked.seen
        rest = [await receive(timeout=0) for _ in range(1000)]
        send(pid, "go")
        assert was_active
        assert seen == 0
        assert [m.reason for m in rest] == list(range(1000))
        await assert_no_message(timeout=0)

    run(main)


_ = sync_with


def test_a_monitor_is_in_place_when_monitor_returns():
    """[MON-6] process_info of the target sees it at once, and demonitor likewise."""

    async def main():
        me = beamlet.self()
        # A target that never runs while we look: one scheduler, and we do not yield.
        target = spawn(wait_for_never)
        ref = monitor(target)
        beamlet.register("watched", target)
        named = monitor("watched")
        during = beamlet.process_info(target)["monitored_by"]
        demonitor(ref)
        demonitor(named)
        after = beamlet.process_info(target)["monitored_by"]
        beamlet.exit(target, "kill")
        assert during == [me, me]
        assert after == []

    async def wait_for_never():
        await receive("never")

    run(main, schedulers=1)
