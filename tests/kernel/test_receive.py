"""Selective receive, patterns, timeouts and the receive marker ([RECV-*])."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from tests.conftest import run

import beamlet
from beamlet import ANY, Down, Exit, make_ref, receive, send, spawn


def test_selective_receive_takes_the_first_match_and_keeps_the_rest_in_order():
    async def main():
        me = beamlet.self()
        for m in ["a", 1, "b", 2, "c"]:
            send(me, m)
        first_int = await receive(int)
        rest = [await receive(timeout=0) for _ in range(4)]
        return first_int, rest

    assert run(main) == (1, ["a", "b", 2, "c"])


def test_timeout_zero_polls_and_raises_when_nothing_matches():
    async def main():
        send(beamlet.self(), "x")
        with pytest.raises(TimeoutError):
            await receive(int, timeout=0)
        return await receive(timeout=0)

    assert run(main) == "x"


def test_a_receive_times_out_and_leaves_the_mailbox_alone():
    async def main():
        send(beamlet.self(), "unrelated")
        with pytest.raises(TimeoutError):
            await receive("never", timeout=0.01)
        return await receive(timeout=0)

    assert run(main) == "unrelated"


def test_a_message_arriving_before_the_timeout_is_received():
    async def sender(to):
        await receive("go")
        send(to, "reply")

    async def main():
        pid = spawn(sender, beamlet.self())
        send(pid, "go")
        return await receive("reply", timeout=30)

    assert run(main) == "reply"


class Point(NamedTuple):
    x: int
    y: int


@pytest.mark.parametrize(
    ("pattern", "message", "expected"),
    [
        (ANY, object, True),
        (int, 3, True),
        (int, "3", False),
        (("ok", ANY), ("ok", 1), True),
        (("ok", ANY), ("ok", 1, 2), False),
        (("ok", ANY), ["ok", 1], False),
        (("ok", int), ("ok", "x"), False),
        (Point(1, ANY), Point(1, 5), True),
        (Point(1, ANY), (1, 5), False),
        ((1, ANY), Point(1, 5), False),
        ([1, ANY], [1, 2], True),
        ({"type": "job"}, {"type": "job", "id": 4}, True),
        ({"type": "job"}, {"kind": "job"}, False),
        (lambda m: m > 10, 11, True),
        (lambda m: m > 10, 9, False),
        ("hello", "hello", True),
        (("nested", ("deep", ANY)), ("nested", ("deep", 0)), True),
    ],
)
def test_pattern_matching_rules(pattern, message, expected):
    from beamlet._kernel.matching import matches

    assert matches(pattern, message) is expected


def test_several_patterns_take_the_oldest_message_matching_any():
    async def main():
        me = beamlet.self()
        for m in ["skip", ("b", 1), ("a", 2)]:
            send(me, m)
        return await receive(("a", ANY), ("b", ANY))

    assert run(main) == ("b", 1)


def test_exit_and_down_are_pattern_matchable():
    async def quick():
        await receive("go")

    async def main():
        beamlet.process_flag("trap_exit", True)
        pid = beamlet.spawn_link(quick)
        ref = beamlet.monitor(pid)
        send(pid, "go")
        down = await receive(Down(ref, pid, ANY))
        ex = await receive(Exit(pid, "normal"))
        match down:
            case Down(r, p, "normal") if r == ref and p == pid:
                matched = True
            case _:
                matched = False
        assert matched, down
        return ex.reason

    assert run(main) == "normal"


def test_a_reply_tagged_with_a_fresh_ref_is_found_behind_older_messages():
    """The receive marker skips older messages but never loses a match."""

    async def server():
        while True:
            sender, ref, n = await receive()
            send(sender, (ref, n * 2))

    async def main():
        me = beamlet.self()
        srv = spawn(server)
        for i in range(1000):
            send(me, ("junk", i))
        results = []
        for n in range(5):
            ref = make_ref()
            send(srv, (me, ref, n))
            results.append((await receive((ref, ANY)))[1])
        # The junk is untouched and in order.
        junk = [await receive(timeout=0) for _ in range(1000)]
        assert junk == [("junk", i) for i in range(1000)]
        return results

    assert run(main) == [0, 2, 4, 6, 8]


def test_messages_arriving_while_a_receive_waits_keep_their_order():
    """[RECV-1] a waiting receive tests each arrival in turn: the first match is
    taken, the ones that do not match join the mailbox in arrival order."""

    async def sender(to, items):
        await receive("go")
        for item in items:
            send(to, item)

    async def main():
        me = beamlet.self()
        send(me, ("old", 1))
        send(me, ("old", 2))
        ref = make_ref()
        a = spawn(sender, me, [("new", 3), (ref, "first"), (ref, "second"), ("new", 4)])
        send(a, "go")
        got = await receive((ref, ANY), ("never", ANY))  # scans the old ones, then waits
        got2 = await receive((ref, ANY))
        rest = []
        while len(rest) < 4:
            rest.append(await receive(timeout=30))
        return got[1], got2[1], rest

    assert run(main, schedulers=1) == (
        "first",
        "second",
        [("old", 1), ("old", 2), ("new", 3), ("new", 4)],
    )


def test_the_marker_does_not_hide_a_message_with_an_older_ref():
    async def main():
        me = beamlet.self()
        old = make_ref()
        send(me, (old, "early"))
        fresh = make_ref()
        send(me, (fresh, "late"))
        return await receive((old, ANY)), await receive((fresh, ANY))

    early, late = run(main)
    assert early[1] == "early" and late[1] == "late"


def test_a_fresh_ref_reply_is_found_when_signals_were_pending_at_make_ref():
    """Signals (not messages) pending when the ref is made must not push the
    receive marker past the reply."""
    import time

    async def linker(parent):
        beamlet.link(parent)  # a LINK signal, then an EXIT(normal) at our death

    async def echo():
        sender, ref = await receive()
        send(sender, (ref, "pong"))

    async def main():
        me = beamlet.self()
        child = spawn(linker, me)
        deadline = time.monotonic() + 30
        # Spin without awaiting, so the signals stay in our inbox undrained.
        while beamlet.is_alive(child) and time.monotonic() < deadline:
            pass
        ref = make_ref()
        pid = spawn(echo)
        send(pid, (me, ref))
        return (await receive((ref, ANY), timeout=30))[1]

    assert run(main, schedulers=2) == "pong"


def test_receive_outside_a_process_raises():
    with pytest.raises(RuntimeError):
        receive().send(None)


def test_a_monitor_by_name_reports_the_name_in_down():
    async def named():
        beamlet.register("svc", beamlet.self())
        await receive("stop")

    async def main():
        pid = spawn(named)
        while beamlet.whereis("svc") is None:
            await beamlet.sleep(0)
        ref = beamlet.monitor("svc")
        send(pid, "stop")
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        gone = beamlet.monitor("svc")
        again = await receive(Down(gone, ANY, ANY), timeout=30)
        return down.pid, down.reason, again.pid, again.reason

    assert run(main) == ("svc", "normal", "svc", "noproc")
