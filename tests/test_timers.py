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
        send_after(0.01, "later", "hello")
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
