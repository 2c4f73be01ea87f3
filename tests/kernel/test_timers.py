"""Timers: send_after, cancel_timer, sleep ([TIMER-*])."""

from __future__ import annotations

import sys
import time

import pytest
from tests.conftest import run

import beamlet
from beamlet import cancel_timer, receive, send, send_after, spawn
from beamlet._kernel.timers import CANCELLED, FIRED, PENDING


def test_send_after_delivers_the_message_later():
    async def main():
        t0 = time.monotonic()
        send_after(0.02, beamlet.self(), "tick")
        msg = await receive(timeout=30)
        return msg, time.monotonic() - t0

    msg, waited = run(main)
    assert msg == "tick" and waited >= 0.02


def test_send_after_to_a_name_resolves_the_name_when_it_fires():
    async def main():
        # Registered just after: 0.2 s leaves room on a loaded machine (at
        # 0.01 s the timer fired first 1 run in 20 of the free-threaded rounds).
        send_after(0.2, "later", "hello")
        beamlet.register("later", beamlet.self())
        return await receive(timeout=30)

    assert run(main) == "hello"


def test_a_cancelled_timer_never_fires_and_reports_the_time_left():
    async def main():
        ref = send_after(60, beamlet.self(), "never")
        left = cancel_timer(ref)
        again = cancel_timer(ref)
        send_after(0.01, beamlet.self(), "probe")
        first = await receive(timeout=30)
        return left, again, first

    left, again, first = run(main)
    assert 59 < left <= 60 and again is None and first == "probe"


def test_cancelling_a_fired_timer_returns_none():
    async def main():
        ref = send_after(0, beamlet.self(), "now")
        await receive("now")
        return cancel_timer(ref)

    assert run(main) is None


def test_a_timer_to_a_process_that_exited_is_cancelled():
    async def quick():
        return None

    async def main():
        pid, mref = beamlet.spawn_monitor(quick)
        ref = send_after(60, pid, "late")
        await receive(beamlet.Down(mref, beamlet.ANY, beamlet.ANY))
        return cancel_timer(ref)

    assert run(main) is None


def test_sleep_lets_other_processes_run_and_is_not_woken_by_messages():
    async def pinger(to):
        send(to, "ping")

    from beamlet import send

    async def main():
        spawn(pinger, beamlet.self())
        t0 = time.monotonic()
        await beamlet.sleep(0.02)
        slept = time.monotonic() - t0
        return slept, await receive(timeout=0)

    slept, msg = run(main)
    assert slept >= 0.02 and msg == "ping"


class _Payload:
    """A message whose lifetime a weakref can watch (shared, not copied, by send)."""


beamlet.register_immutable(_Payload)


def test_a_cancelled_timer_lets_go_of_its_message_at_once():
    """[TIMER-1] Cancelling frees what the timer holds, not at its deadline."""
    import gc
    import weakref

    async def main():
        payload = _Payload()
        watch = weakref.ref(payload)
        ref = send_after(3600, beamlet.self(), payload)
        armed = beamlet.statistics().timers
        del payload
        gc.collect()
        assert watch() is not None, "the armed timer does not hold its message"
        cancel_timer(ref)
        gc.collect()
        assert watch() is None, "the cancelled timer still holds its message"
        return armed, beamlet.statistics().timers

    armed, after = run(main)
    assert armed >= 1 and after == armed - 1


def test_timers_aimed_at_a_process_go_when_it_exits():
    """[TIMER-1] Erlang: "the timer is automatically canceled if the process
    exits": 10,000 hour-long timers aimed at a process are not kept for the hour."""

    async def sink():
        await receive("never")

    async def main():
        base = beamlet.statistics().timers
        pid, ref = beamlet.spawn_monitor(sink)
        refs = [send_after(3600, pid, ("tick", i)) for i in range(10_000)]
        armed = beamlet.statistics().timers - base
        beamlet.exit(pid, "kill")
        await receive(beamlet.Down(ref, pid, beamlet.ANY), timeout=30)
        left = beamlet.statistics().timers - base
        return armed, left, {cancel_timer(r) for r in refs[:10]}

    assert run(main) == (10_000, 0, {None})


def test_a_timer_to_a_dead_pid_is_not_armed():
    """[TIMER-1] "...canceled if the process referred to by the pid is not alive"."""

    async def quick():
        pass

    async def main():
        pid, ref = beamlet.spawn_monitor(quick)
        await receive(beamlet.Down(ref, pid, beamlet.ANY), timeout=30)
        base = beamlet.statistics().timers
        tref = send_after(3600, pid, "lost")
        return beamlet.statistics().timers - base, cancel_timer(tref)

    assert run(main) == (0, None)


def test_many_timers_to_one_process_all_fire_and_leave_nothing_behind():
    async def main():
        me = beamlet.self()
        base = beamlet.statistics().timers
        for i in range(100):
            send_after(0.001 * (i % 10), me, i)
        got = [await receive(timeout=30) for _ in range(100)]
        assert sorted(got) == list(range(100))
        return beamlet.statistics().timers - base

    assert run(main) == 0


# A receive's timeout timer stays armed after the receive, for the next one
# (Process.timer / Process.deadline): these pin what that must not change.
# One scheduler: a process spawned before a receive runs while it waits, so
# each short receive below is answered whatever the machine's load.


async def _send_now(to, msg):
    send(to, msg)


async def _send_after_sleeping(to, msg, seconds):
    # Its sleep's timer is armed after, and goes off after, the receive timer
    # left over by the caller: that one has gone off when this message comes.
    await beamlet.sleep(seconds)
    send(to, msg)


def _own_timer():
    from beamlet._kernel import context

    return context.current_process().timer


def _until_fired(timer):
    """Run (not wait) until ``timer`` has gone off: the timer thread fires it
    while this process holds its scheduler."""
    deadline = time.monotonic() + 30  # a bound, not a condition of the test
    while timer.state != FIRED and time.monotonic() < deadline:
        pass
    assert timer.state == FIRED


def test_a_later_deadline_outlives_the_timer_a_shorter_receive_left():
    """A receive(timeout=0.05) answered at once leaves its timer armed; the next
    receive (30 s) keeps that timer, which goes off during its wait: the wait
    goes on (the timer is armed again for its deadline, without waking the
    process) until the message."""

    async def main():
        me = beamlet.self()
        spawn(_send_now, me, "first")
        first = await receive("first", timeout=0.05)
        left = _own_timer()
        spawn(_send_after_sleeping, me, "second", 0.1)
        before = beamlet.process_info(me)["reductions"]
        second = await receive("second", timeout=30)
        resumed = beamlet.process_info(me)["reductions"] - before
        assert (first, second) == ("first", "second")
        assert left.state == FIRED and _own_timer() is not left  # armed again
        assert resumed == 2  # the receive's own reduction, and one resume: by the message only
        assert beamlet.statistics().timers == 0

    run(main, schedulers=1)


def test_a_left_over_timer_that_goes_off_as_a_receive_parks_is_armed_again():
    """The timer a receive kept goes off after the receive looked at it and
    before its scheduler parks it (forced): the process is not parked, looks
    again, finds its deadline not reached, and waits on (no TimeoutError)."""
    from beamlet._kernel import context
    from beamlet._kernel.scheduler import Scheduler

    loop_code = Scheduler.loop.__code__

    class RacingInbox(list):
        timer = None

        def __len__(self):
            timer = RacingInbox.timer
            if timer is not None and sys._getframe(1).f_code is loop_code:
                # The scheduler is deciding whether to park the process.
                RacingInbox.timer = None
                _until_fired(timer)
            return super().__len__()

    async def main():
        me = beamlet.self()
        proc = context.current_process()
        spawn(_send_now, me, "first")
        await receive("first", timeout=0.05)
        left = proc.timer
        proc.inbox = RacingInbox(proc.inbox or ())
        RacingInbox.timer = left
        spawn(_send_after_sleeping, me, "second", 0.1)
        second = await receive("second", timeout=30)
        assert RacingInbox.timer is None  # the interleaving did happen
        assert second == "second"
        assert left.state == FIRED and proc.timer is not left

    run(main, schedulers=1)


def test_a_left_over_timer_neither_wakes_nor_ends_a_wait_without_deadline():
    """Gone off while the process ran, then a wait without deadline: the
    process parks (it does not spin), until its message."""

    async def main():
        me = beamlet.self()
        spawn(_send_now, me, "quick")
        await receive("quick", timeout=0.02)  # leaves its timer armed for +0.02
        _until_fired(_own_timer())
        spawn(_send_after_sleeping, me, "late", 0.1)
        before = beamlet.process_info(me)["reductions"]
        msg = await receive("late")
        resumed = beamlet.process_info(me)["reductions"] - before
        assert msg == "late"
        assert resumed < 10  # woken by the message, not spinning on the timer
        assert beamlet.statistics().timers == 0

    run(main, schedulers=1)


def test_a_shorter_deadline_after_a_longer_one_still_times_out():
    async def main():
        me = beamlet.self()
        spawn(_send_now, me, "x")
        await receive("x", timeout=3600)  # leaves an hour-long timer armed
        with pytest.raises(TimeoutError):
            await receive("never", timeout=0.01)
        assert beamlet.statistics().timers == 0

    run(main, schedulers=1)


def test_sleep_and_blocking_after_a_left_over_timer():
    """sleep drops a left-over timer and sleeps its own time; blocking() is
    neither ended nor spun by one that went off."""

    async def main():
        me = beamlet.self()
        spawn(_send_now, me, "x")
        await receive("x", timeout=3600)
        hour = _own_timer()
        await beamlet.sleep(0.01)
        assert hour.state == CANCELLED
        spawn(_send_now, me, "y")
        await receive("y", timeout=0.02)
        _until_fired(_own_timer())
        before = beamlet.process_info(me)["reductions"]
        assert await beamlet.blocking(time.sleep, 0.1) is None
        assert beamlet.process_info(me)["reductions"] - before < 10
        assert beamlet.statistics().timers == 0

    run(main, schedulers=1)


def test_a_left_over_timer_goes_with_its_process():
    """Not counted by statistics() while its process waits without a deadline,
    and cancelled when the process exits: nothing outlives it."""
    from beamlet._kernel import context

    async def child(parent):
        spawn(_send_now, beamlet.self(), "x")
        await receive("x", timeout=3600)
        send(parent, "armed")
        await receive("stop")

    async def main():
        pid = spawn(child, beamlet.self())
        proc = context.current_runtime().table[pid.id]
        ref = beamlet.monitor(pid)
        await receive("armed", timeout=30)
        timer = proc.timer  # the child's left-over timer
        armed = timer is not None and timer.state == PENDING
        in_heap = [t for t in _armed_timers() if t.arg is proc]
        # Nobody waits with a deadline (the child waits without one, we run):
        # statistics() counts neither left-over timer.
        counted = beamlet.statistics().timers
        send(pid, "stop")
        await receive(beamlet.Down(ref, beamlet.ANY, beamlet.ANY), timeout=30)
        assert armed and in_heap == [timer] and counted == 0
        assert timer.state == CANCELLED
        assert [t for t in _armed_timers() if t.arg is proc] == []

    def _armed_timers():
        timers = context.current_runtime().timers
        return [t for t in list(timers._heap) if t.state == PENDING]

    run(main, schedulers=1)
