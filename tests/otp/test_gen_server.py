"""GenServer: start, call, cast, info, stop, terminate, errors, late replies."""

from __future__ import annotations

import logging

import pytest
from tests.conftest import run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Atom, Down, receive, send, spawn
from beamlet.otp import (
    CallError,
    CallTimeout,
    GenServer,
    NoReply,
    ServerExit,
    StartError,
    Stop,
    call,
    cast,
    get_state,
    replace_state,
    reply,
    stop,
)


class Counter(GenServer):
    async def init(self, start=0, trap=False):
        self.count = start
        if trap:
            beamlet.process_flag("trap_exit", True)

    async def handle_call(self, request, from_):
        match request:
            case "get":
                return self.count
            case ("add", n):
                self.count += n
                return self.count
            case "crash":
                raise ValueError("crash requested")
            case ("stop", reason):
                return Stop(reason, "bye")
            case ("later", who):
                send(who, ("from", from_))
                return NoReply
            case "ignore":
                return NoReply

    async def handle_cast(self, request):
        if request == "inc":
            self.count += 1
        elif request == "stop":
            return Stop("normal")

    async def handle_info(self, msg):
        if isinstance(msg, tuple) and msg[0] == "report":
            send(msg[1], ("count", self.count))

    async def terminate(self, reason):
        watcher = beamlet.whereis("terminate_watcher")
        if watcher is not None:
            send(watcher, ("terminated", reason))


def test_start_link_returns_after_init_and_calls_get_replies():
    async def main():
        pid = await Counter.start_link(41)
        await call(pid, ("add", 1))
        return await call(pid, "get")

    assert run(main) == 42


def test_cast_and_info_are_handled_in_order():
    async def main():
        pid = await Counter.start_link()
        for _ in range(3):
            cast(pid, "inc")
        send(pid, ("report", beamlet.self()))
        return await receive(("count", ANY), timeout=30)

    assert run(main) == ("count", 3)


def test_a_named_server_is_reachable_by_name_and_the_name_is_exclusive():
    async def main():
        await Counter.start_link(7, name="counter")
        value = await call("counter", "get")
        with pytest.raises(StartError) as info:
            await Counter.start_link(name="counter")
        return value, info.value.reason[0]

    assert run(main) == (7, "already_started")


def test_init_failure_raises_start_error_and_the_caller_survives(caplog):
    class Broken(GenServer):
        async def init(self):
            raise RuntimeError("no config")

    async def main():
        with pytest.raises(StartError) as info:
            await Broken.start_link()
        return type(info.value.reason).__name__

    with caplog.at_level(logging.ERROR):
        assert run(main) == "RuntimeError"
    assert any(
        "crash report" in r.getMessage() and "failed in init" in r.getMessage()
        for r in caplog.records
    )


def test_a_failed_start_returns_once_the_process_has_exited_and_its_name_is_free():
    # OTP 26+ proc_lib: start_link waits for a process whose init failed to exit.
    class Refuses(GenServer):
        async def init(self):
            return Stop("no")

    async def main():
        for _ in range(3000):  # (without the wait: seen registered ~1 in 200)
            with pytest.raises(StartError):
                await Refuses.start_link(name="refuser")
            assert beamlet.whereis("refuser") is None
        return True

    assert run(main)


def test_init_may_refuse_with_stop():
    class Refuses(GenServer):
        async def init(self):
            return Stop("not_today")

    async def main():
        with pytest.raises(StartError) as info:
            await Refuses.start()
        return info.value.reason

    assert run(main) == "not_today"


def test_a_call_to_a_dead_server_raises_server_exit_noproc():
    async def main():
        pid = await Counter.start()
        await stop(pid)
        with pytest.raises(ServerExit) as a:
            await call(pid, "get")
        with pytest.raises(ServerExit) as b:
            await call("nobody_here", "get")
        return a.value.reason, b.value.reason

    assert run(main) == ("noproc", "noproc")


def test_a_server_crash_in_a_call_raises_in_the_caller_with_the_reason(caplog):
    async def main():
        pid = await Counter.start()
        with pytest.raises(ServerExit) as info:
            await call(pid, "crash")
        return type(info.value.reason), beamlet.is_alive(pid)

    with caplog.at_level(logging.ERROR):
        assert run(main) == (ValueError, False)
    report = [r for r in caplog.records if "crash report" in r.getMessage()]
    assert (
        report
        and "last message" in report[0].getMessage()
        and "crash requested" in report[0].getMessage()
    )


def test_a_crash_report_names_the_server_by_its_name_only_if_it_has_one(caplog):
    async def main():
        for name in (None, "named_counter"):
            pid = await Counter.start(name=name)
            with pytest.raises(ServerExit):
                await call(pid, "crash")
        return beamlet.self()

    with caplog.at_level(logging.ERROR, logger="beamlet.otp"):
        parent = run(main)
    reports = [r.getMessage() for r in caplog.records if "crash report" in r.getMessage()]
    assert len(reports) == 2
    assert f"(parent {parent!r}) crashed in a callback" in reports[0]
    assert "registered as" not in reports[0]
    assert f"(registered as 'named_counter', parent {parent!r})" in reports[1]


def test_a_call_times_out_and_the_late_reply_never_reaches_the_mailbox():
    async def main():
        pid = await Counter.start()
        me = beamlet.self()
        with pytest.raises(CallTimeout):
            await call(pid, ("later", me), timeout=0.05)
        # the server kept from_; it replies now, after we gave up
        _, from_ = await receive(("from", ANY), timeout=30)
        reply(from_, "too late")
        # a normal call afterwards works, and nothing else is in the mailbox
        value = await call(pid, "get")
        await assert_no_message(timeout=0)
        return value

    assert run(main) == 0


def test_a_deferred_reply_with_noreply():
    class Deferred(GenServer):
        async def init(self):
            self.waiting = []

        async def handle_call(self, request, from_):
            if request == "wait":
                self.waiting.append(from_)
                return NoReply
            for f in self.waiting:
                reply(f, "released")
            return len(self.waiting)

    async def waiter(server, parent):
        send(parent, await call(server, "wait"))

    async def main():
        server = await Deferred.start_link()
        for _ in range(3):
            spawn(waiter, server, beamlet.self())
        # make sure all three wait: count them through the server
        while (await get_state(server))["waiting"].__len__() < 3:
            await beamlet.sleep(0)
        released = await call(server, "release")
        got = [await receive(timeout=30) for _ in range(3)]
        return released, got

    assert run(main) == (3, ["released"] * 3)


def test_stop_from_handle_call_replies_then_terminates():
    async def main():
        beamlet.register("terminate_watcher", beamlet.self())
        pid = await Counter.start()
        ref = beamlet.monitor(pid)
        answer = await call(pid, ("stop", "done"))
        terminated = await receive(("terminated", ANY), timeout=30)
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        return answer, terminated[1], down.reason

    assert run(main) == ("bye", "done", "done")


def test_stop_without_a_reply_from_handle_call_replies_none_and_stops():
    class Quitter(GenServer):
        async def handle_call(self, request, from_):
            return Stop("normal")

        async def terminate(self, reason):
            send("terminate_watcher", ("terminated", reason))

    async def main():
        beamlet.register("terminate_watcher", beamlet.self())
        pid = await Quitter.start()
        ref = beamlet.monitor(pid)
        answer = await call(pid, "quit")
        terminated = await receive(("terminated", ANY), timeout=30)
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        return answer, terminated[1], down.reason

    assert run(main) == (None, "normal", "normal")


def test_stop_runs_terminate_and_waits_for_the_exit():
    async def main():
        beamlet.register("terminate_watcher", beamlet.self())
        pid = await Counter.start()
        await stop(pid, "shutdown")
        return await receive(("terminated", ANY), timeout=0), beamlet.is_alive(pid)

    assert run(main) == (("terminated", "shutdown"), False)


def test_terminate_runs_on_parent_shutdown_only_when_trapping_exits():
    async def parent(trap, report_to):
        pid = await Counter.start_link(0, trap)
        send(report_to, ("child", pid))
        await receive("never")

    async def main():
        beamlet.register("terminate_watcher", beamlet.self())
        for trap in (True, False):
            p = spawn(parent, trap, beamlet.self())
            _, child = await receive(("child", ANY), timeout=30)
            ref = beamlet.monitor(child)
            beamlet.exit(p, "shutdown")  # the parent dies: the child gets exit "shutdown"
            down = await receive(Down(ref, ANY, ANY), timeout=30)
            assert down.reason == "shutdown", trap
            if trap:
                assert await receive(("terminated", ANY), timeout=0) == ("terminated", "shutdown")
            else:
                await assert_no_message(("terminated", ANY), timeout=0)

    run(main)


def test_get_state_and_replace_state():
    async def main():
        pid = await Counter.start_link(5)
        before = await get_state(pid)
        after = await replace_state(pid, lambda s: {**s, "count": 100})
        return before, after, await call(pid, "get")

    assert run(main) == ({"count": 5}, {"count": 100}, 100)


def test_the_wire_format_is_erlangs_gen_call():
    """A hand-written Erlang-style caller gets the reply: ('$gen_call', {Pid, Tag}, Req)."""

    async def main():
        pid = await Counter.start_link(3)
        tag = beamlet.make_ref()
        send(pid, (Atom("$gen_call"), (beamlet.self(), tag), "get"))
        return await receive((tag, ANY), timeout=30)

    tag_reply = run(main)
    assert tag_reply[1] == 3


def test_a_cast_to_a_dead_server_or_unknown_name_is_dropped():
    async def main():
        cast("nobody", "inc")
        pid = await Counter.start()
        await stop(pid)
        cast(pid, "inc")
        return "fine"

    assert run(main) == "fine"


class SelfCaller(GenServer):
    """Calls itself from a callback, by every form of its address."""

    async def handle_call(self, request, from_):
        if request == "get":
            return "unreachable"
        try:
            # Without the check this waits for the 1 s timeout: "timeout", not "calling_self".
            if request == "stop me":
                await stop(beamlet.self(), timeout=1)
            else:
                await call(request, "get", timeout=1)
        except CallError as e:
            return (e.reason, str(e))
        return "no error"


def test_a_server_that_calls_itself_gets_calling_self_at_once():
    async def main():
        pid = await SelfCaller.start_link(name="selfish")
        answers = [
            await call(pid, target)
            for target in (pid, "selfish", ("selfish", beamlet.node()), "stop me")
        ]
        return answers, beamlet.is_alive(pid)

    answers, alive = run(main)
    assert [reason for reason, _ in answers] == ["calling_self"] * 4
    assert "cannot wait for its own reply" in answers[0][1]
    assert alive  # the error is the caller's to handle; uncaught, it crashes the server


def test_a_plain_process_calling_itself_gets_calling_self():
    async def main():
        try:
            await call(beamlet.self(), "anything", timeout=1)
        except CallError as e:
            return type(e).__name__, e.reason

    assert run(main) == ("CallError", "calling_self")
