"""observer.trace: calls and returns of a process or a function as messages,
limited in number and time, removed when done (OBS-8)."""

from __future__ import annotations

import sys

import pytest
from tests.conftest import run

import beamlet
from beamlet import ANY, Atom, BadArg, Down, observer, receive, send, spawn
from beamlet.observer import _trace


def work(x, label="w"):
    return x * 2


async def worker(parent):
    """Calls work(i) for every ("go", i) it gets; answers ("done", i)."""
    send(parent, ("ready", beamlet.self()))
    while True:
        _, i = await receive(("go", ANY))
        work(i)
        send(parent, ("done", i))


async def drive(pid, *numbers):
    for i in numbers:
        send(pid, ("go", i))
        await receive(("done", i))


async def events(ref, timeout=5.0):
    """The events of trace ``ref`` up to its trace_done: (events, done)."""
    got = []
    while True:
        msg = await receive(
            (Atom("trace"), ref, ANY, ANY, ANY, ANY),
            (Atom("trace_done"), ref, ANY, ANY),
            timeout=timeout,
        )
        if msg[0] == "trace_done":
            return got, msg
        got.append(msg)


def no_instrumentation_left():
    assert _trace.running() is None
    if sys.version_info >= (3, 12):
        for tool in range(6):
            assert sys.monitoring.get_tool(tool) != "beamlet.observer.trace"


def test_a_function_trace_delivers_calls_and_returns_and_stops_at_max():
    async def main():
        me = beamlet.self()
        pid = spawn(worker, me)
        await receive(("ready", pid))
        ref = observer.trace(work, max=4, timeout=5)
        await drive(pid, 1, 2, 3)
        got, done = await events(ref)
        assert _trace.profiled_schedulers() == 0  # (3.11: every profile function removed)
        return pid, ref, got, done

    pid, ref, got, done = run(main)
    assert [(e[2], e[3], e[5]) for e in got] == [
        (pid, "call", "x=1, label='w'"),
        (pid, "return", "2"),
        (pid, "call", "x=2, label='w'"),
        (pid, "return", "4"),
    ]
    assert all(e[4] == f"{work.__module__}.work" for e in got)
    assert done == (Atom("trace_done"), ref, 4, "max")
    no_instrumentation_left()


def test_a_process_trace_sees_only_that_process():
    def helper(v):
        return v + 1

    async def traced(parent):
        send(parent, ("ready", beamlet.self()))
        _, i = await receive(("go", ANY))
        work(helper(i))
        send(parent, ("done", i))
        await receive("never")

    async def main():
        me = beamlet.self()
        other = spawn(worker, me)
        await receive(("ready", other))
        pid = spawn(traced, me)
        await receive(("ready", pid))
        ref = observer.trace(pid, max=4, timeout=5)
        await drive(other, 7)  # another process calling work: not traced
        await drive(pid, 10)
        got, done = await events(ref)
        assert _trace.profiled_schedulers() == 0
        return pid, got, done

    pid, got, done = run(main)
    assert [(e[2], e[3], e[4].rsplit(".", 1)[-1], e[5]) for e in got] == [
        (pid, "call", "helper", "v=10"),
        (pid, "return", "helper", "11"),
        (pid, "call", "work", "x=11, label='w'"),
        (pid, "return", "work", "22"),
    ]
    assert done[2:] == (4, "max")
    no_instrumentation_left()


async def idle(parent=None):
    if parent is not None:
        send(parent, "waiting")
    await receive("never")


def test_a_trace_stops_at_its_timeout_and_when_its_target_exits():
    async def main():
        ref = observer.trace(work, max=50, timeout=0.05)
        first = await events(ref)
        pid = spawn(idle, beamlet.self())
        # Traced once it waits: its start (a call of idle) is not in the trace,
        # on a free-threaded build it may run in parallel at once.
        await receive("waiting", timeout=30)
        ref2 = observer.trace(pid, max=50, timeout=30)
        observer.kill(pid)
        second = await events(ref2)
        return ref, first, second

    ref, (got, done), (got2, done2) = run(main)
    assert got == [] and done == (Atom("trace_done"), ref, 0, "timeout")
    assert got2 == [] and done2[2:] == (0, "target_exited")
    no_instrumentation_left()


def test_a_trace_is_removed_when_its_caller_dies():
    async def caller(parent):
        ref = observer.trace(work, max=50, timeout=30)
        send(parent, ("tracing", ref, _trace._running.watcher))

    async def main():
        spawn(caller, beamlet.self())
        _, _ref, watcher = await receive(("tracing", ANY, ANY))
        mon = beamlet.monitor(watcher)
        await receive(Down(mon, watcher, ANY), timeout=5)
        work(1)  # nobody traces it any more
        return _trace.running()

    assert run(main) is None
    no_instrumentation_left()


def test_a_trace_by_name_and_with_a_recipient():
    async def sink(parent):
        got = await events_for_any()
        send(parent, ("sink", got))

    async def events_for_any():
        got = []
        while True:
            msg = await receive(timeout=5)
            got.append(msg)
            if msg[0] == "trace_done":
                return got

    async def main():
        me = beamlet.self()
        pid = spawn(worker, me)
        await receive(("ready", pid))
        s = spawn(sink, me)
        ref = observer.trace(f"{work.__module__}.work", max=2, timeout=5, to=s)
        await drive(pid, 5)
        _, got = await receive(("sink", ANY))
        return ref, got

    ref, got = run(main)
    assert [m[3] for m in got[:-1]] == ["call", "return"]
    assert got[-1] == (Atom("trace_done"), ref, 2, "max")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"max": None}, "max=None would trace without end"),
        ({"max": 0}, "max must be an int"),
        ({"max": -5}, "max must be an int"),
        ({"max": 1.5}, "max must be an int"),
        ({"max": 10**9}, "max must be an int"),
        ({"timeout": None}, "timeout must be a number"),
        ({"timeout": 0}, "timeout must be in"),
        ({"timeout": 10**6}, "timeout must be in"),
    ],
)
def test_trace_refuses_unlimited_or_bad_limits(kwargs, words):
    async def main():
        with pytest.raises(BadArg) as e:
            observer.trace(work, **kwargs)
        return str(e.value)

    assert words in run(main)
    no_instrumentation_left()


def test_trace_refuses_bad_targets_and_a_second_trace():
    async def main():
        errors = []
        for target in (42, "no_such_module_xyz.f", f"{work.__module__}.nope", len, beamlet.self()):
            try:
                observer.trace(target)
            except BadArg as e:
                errors.append(str(e))
        ref = observer.trace(work, max=1, timeout=5)
        try:
            observer.trace(work)
        except BadArg as e:
            errors.append(str(e))
        work(0)
        await events(ref)
        return errors

    errors = run(main)
    assert len(errors) == 6
    assert "another trace is running" in errors[-1]
    assert "cannot receive its own trace" in errors[-2]
    no_instrumentation_left()
