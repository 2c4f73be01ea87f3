"""call_local: gen:call's round trip to a local pid as one kernel operation.

It must do what monitor(alias="demonitor") + send + receive + demonitor(flush)
do (docs/semantics.md, "A local call"): these check the results and the state
it leaves behind, not its speed.
"""

from __future__ import annotations

import pytest
from tests.conftest import run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Atom, BadArg, Down, call_local, receive, send, spawn

CALL = Atom("$gen_call")


async def echo_server(replies=1):
    """Answers ``replies`` gen calls with ("echo", request), to the alias."""
    for _ in range(replies):
        _label, (_pid, tag), request = await receive((CALL, ANY, ANY))
        send(tag[1], (tag, ("echo", request)))


def assert_clean(me, server=None):
    """Nothing of the call is left: no monitor, no alias, no monitored_by entry."""
    from beamlet._kernel import context

    assert beamlet.process_info(me)["monitors"] == []
    if server is not None:
        info = beamlet.process_info(server)
        assert info is None or info["monitored_by"] == []
    assert not context.current_process().aliases


def test_a_call_gets_the_reply_message_and_leaves_nothing_behind(schedulers):
    async def main():
        me = beamlet.self()
        server = spawn(echo_server, 3)
        replies = [await call_local(server, CALL, ["req", i], 30) for i in range(3)]
        assert all(type(r[0]) is tuple and r[0][0] == "alias" for r in replies)
        assert [r[1] for r in replies] == [("echo", ["req", i]) for i in range(3)]
        assert_clean(me, server)

    run(main, schedulers=schedulers)


def test_the_request_is_copied_and_the_envelope_has_the_gen_call_shape():
    async def server(parent):
        msg = await receive()
        send(parent, ("got", msg))
        _label, (_pid, tag), request = msg
        request.append("server's")
        send(tag[1], (tag, "ok"))

    async def main():
        me = beamlet.self()
        pid = spawn(server, me)
        mine = ["caller's"]
        reply = await call_local(pid, CALL, mine, 30)
        _, (label, (from_pid, tag), _request) = await receive(("got", ANY), timeout=30)
        assert (reply[1], label, from_pid, tag[0]) == ("ok", "$gen_call", me, "alias")
        assert type(tag[1]) is beamlet.Ref
        assert mine == ["caller's"]

    run(main)


def test_messages_queued_before_the_call_stay_queued_in_order(schedulers):
    async def main():
        me = beamlet.self()
        for m in ("a", ("b", 1), "c"):
            send(me, m)
        reply = await call_local(spawn(echo_server), CALL, "x", 30)
        rest = [await receive(timeout=0) for _ in range(3)]
        assert (reply[1], rest) == (("echo", "x"), ["a", ("b", 1), "c"])

    run(main, schedulers=schedulers)


def test_a_dead_server_answers_noproc_at_once():
    async def quick():
        pass

    async def main():
        me = beamlet.self()
        pid, ref = beamlet.spawn_monitor(quick)
        await receive(Down(ref, ANY, ANY), timeout=30)
        got = await call_local(pid, CALL, "x", 30)
        assert type(got) is Down and got.pid == pid and got.reason == "noproc"
        assert_clean(me)
        await assert_no_message(timeout=0)

    run(main)


def test_a_server_dying_during_the_call_answers_its_exit_reason(schedulers):
    async def dies():
        await receive((CALL, ANY, ANY))
        raise beamlet.ProcessExit("boom")

    async def main():
        me = beamlet.self()
        send(me, "unrelated")
        got = await call_local(spawn(dies), CALL, "x", 30)
        assert type(got) is Down and got.reason == "boom"
        assert_clean(me)
        assert await receive(timeout=0) == "unrelated"

    run(main, schedulers=schedulers)


def test_a_timed_out_call_drops_the_late_reply_and_leaves_nothing_behind(schedulers):
    async def late(parent):
        _label, (_pid, tag), _request = await receive((CALL, ANY, ANY))
        await receive("go")
        send(tag[1], (tag, "too late"))
        send(parent, "sent")

    async def main():
        me = beamlet.self()
        server = spawn(late, me)
        with pytest.raises(TimeoutError):
            await call_local(server, CALL, "x", 0.01)
        assert_clean(me, server)
        send(server, "go")
        await receive("sent", timeout=30)
        await assert_no_message(timeout=0)  # the late reply never reached the mailbox

    run(main, schedulers=schedulers)


def test_a_reply_sent_to_the_pid_with_the_tag_is_accepted_too():
    async def server():
        _label, (pid, tag), _request = await receive((CALL, ANY, ANY))
        send(pid, (tag, "to the pid"))

    async def main():
        assert (await call_local(spawn(server), CALL, "x", 30))[1] == "to the pid"

    run(main)


def test_only_a_local_pid_can_be_called():
    async def main():
        for dest in ("a_name", (beamlet.self(), "x"), beamlet.Pid(1, 0, Atom("other@host"))):
            with pytest.raises(BadArg):
                await call_local(dest, CALL, "x", 1)

    run(main)


def test_a_request_that_cannot_be_copied_raises_and_sets_nothing_up():
    async def main():
        me = beamlet.self()
        server = spawn(echo_server)
        with pytest.raises(TypeError):
            await call_local(server, CALL, (x for x in ()), 30)  # a generator
        assert_clean(me, server)

    run(main)


def test_a_killed_caller_leaves_nothing_on_the_server():
    async def caller(server):
        await call_local(server, CALL, "x", None)

    async def silent():
        await receive("never")

    async def main():
        server = spawn(silent)
        pid, ref = beamlet.spawn_monitor(caller, server)
        while not beamlet.process_info(server)["monitored_by"]:
            await beamlet.sleep(0)
        beamlet.exit(pid, "kill")
        await receive(Down(ref, pid, "killed"), timeout=30)
        assert beamlet.process_info(server)["monitored_by"] == []

    run(main, schedulers=1)


def test_a_request_to_a_waiting_server_goes_behind_what_is_in_its_inbox():
    """As a message does ([SIG-1]): handed over only if nothing is in the
    server's inbox. Forced: a message appended without the lock, its sender
    not yet back to wake the server, then the call."""
    from beamlet._kernel import context
    from beamlet._kernel.process import WAITING

    async def server():
        first = await receive()
        _label, (_pid, tag), _request = await receive((CALL, ANY, ANY))
        send(tag[1], (tag, first))

    async def main():
        pid = spawn(server)
        await beamlet.sleep(0)  # it runs and waits
        proc = context.current_runtime().table[pid.id]
        assert proc.state == WAITING and not proc.inbox
        if proc.inbox is None:
            proc.inbox = ["first"]
        else:
            proc.inbox.append("first")
        reply = await call_local(pid, CALL, "x", 30)
        assert reply[1] == "first"

    run(main, schedulers=1)
