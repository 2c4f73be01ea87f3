"""Timers: send_after, cancel_timer, sleep ([TIMER-*])."""

from __future__ import annotations

import time

from tests.conftest import run

import beamlet
from beamlet import cancel_timer, receive, send_after, spawn


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
