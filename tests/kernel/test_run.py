"""beamlet.run: starting, results, errors, shutdown."""

from __future__ import annotations

import logging
import threading

import pytest
from tests.conftest import run

import beamlet
from beamlet import ProcessExit, receive, send, spawn, spawn_link


def test_run_returns_what_main_returns(schedulers):
    async def main(a, b):
        return a + b

    assert beamlet.run(main, 2, 3, schedulers=schedulers) == 5


def test_run_reraises_the_exception_main_raised():
    async def main():
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        run(main)


def test_run_raises_process_exit_when_main_exits_with_a_reason():
    async def main():
        raise ProcessExit("shutdown")

    with pytest.raises(ProcessExit) as info:
        run(main)
    assert info.value.reason == "shutdown"


def test_main_killed_by_a_linked_crash_raises_the_crash():
    async def crasher():
        raise ValueError("child failed")

    async def main():
        spawn_link(crasher)
        await receive()

    with pytest.raises(ValueError, match="child failed"):
        run(main)


def test_when_main_returns_every_other_process_is_killed_and_run_returns():
    events = []

    async def forever():
        try:
            await receive()
        finally:
            events.append("cleaned up")

    async def main():
        for _ in range(100):
            spawn(forever)
        return len(beamlet.processes())

    assert run(main) == 101
    assert events == ["cleaned up"] * 100


def test_scheduler_threads_are_gone_after_run():
    async def main():
        return 1

    before = {t.name for t in threading.enumerate()}
    run(main)
    after = {t.name for t in threading.enumerate() if t.is_alive()}
    assert not {n for n in after - before if n.startswith("beamlet")}


def test_kernel_functions_outside_a_runtime_raise_runtime_error():
    with pytest.raises(RuntimeError, match="no beamlet runtime"):
        spawn(lambda: None)
    with pytest.raises(RuntimeError):
        beamlet.self()


def test_run_inside_a_running_runtime_is_refused():
    async def main():
        async def inner():
            return 1

        with pytest.raises(RuntimeError, match="already running"):
            beamlet.run(inner)
        return "ok"

    assert run(main) == "ok"


def test_spawn_of_a_plain_function_raises_type_error_at_once():
    def not_async():
        return 1

    async def main():
        with pytest.raises(TypeError, match="async"):
            spawn(not_async)
        with pytest.raises(TypeError):
            spawn(42)
        return "ok"

    assert run(main) == "ok"


def test_spawn_accepts_partials_and_async_callable_objects():
    import functools

    class Worker:
        async def __call__(self, parent, tag):
            send(parent, tag)

    async def tagger(parent, tag):
        send(parent, tag)

    async def main():
        me = beamlet.self()
        spawn(functools.partial(tagger, me), "partial")
        spawn(Worker(), me, "object")
        return sorted([await receive(), await receive()])

    assert run(main) == ["object", "partial"]


def test_a_crashing_process_is_logged_with_its_traceback(caplog):
    async def crasher():
        raise ZeroDivisionError("bad math")

    async def main():
        _, ref = beamlet.spawn_monitor(crasher)
        return await receive(beamlet.Down(ref, beamlet.ANY, beamlet.ANY))

    with caplog.at_level(logging.ERROR, logger="beamlet"):
        down = run(main)
    assert isinstance(down.reason, ZeroDivisionError)
    records = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is not None and records[0].exc_info[0] is ZeroDivisionError


def test_a_process_that_exits_with_process_exit_is_not_logged(caplog):
    async def quitter():
        raise ProcessExit("shutdown")

    async def main():
        _, ref = beamlet.spawn_monitor(quitter)
        return (await receive(beamlet.Down(ref, beamlet.ANY, beamlet.ANY))).reason

    with caplog.at_level(logging.ERROR, logger="beamlet"):
        assert run(main) == "shutdown"
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]


def test_awaiting_an_asyncio_object_kills_only_that_process():
    import asyncio

    async def confused():
        await asyncio.sleep(0)

    async def main():
        _, ref = beamlet.spawn_monitor(confused)
        down = await receive(beamlet.Down(ref, beamlet.ANY, beamlet.ANY))
        assert type(down.reason) is RuntimeError
        assert "beamlet trap" in str(down.reason)

    run(main)


def test_gc_thresholds_are_restored_after_run():
    import gc

    before = gc.get_threshold()

    async def main():
        return gc.get_threshold()

    during = run(main, gc_thresholds=(1234, 5, 6))
    assert during == (1234, 5, 6)
    assert gc.get_threshold() == before


def test_the_first_gc_threshold_grows_with_the_live_processes_and_is_restored():
    """docs/process-model.md, "The garbage collector": while many processes
    live, collections come in proportion to them (GC_PER_PROCESS allocations
    per live process), so their cost per allocation stays constant."""
    import gc
    import time

    from beamlet._kernel.api import GC_PER_PROCESS

    before = gc.get_threshold()
    n = 20_000

    async def idle():
        await beamlet.receive()

    async def main():
        pids = [beamlet.spawn(idle) for _ in range(n)]
        deadline = time.monotonic() + 30
        while gc.get_threshold()[0] < GC_PER_PROCESS * n * 3 // 4:  # (within a quarter)
            assert time.monotonic() < deadline, gc.get_threshold()
            await beamlet.sleep(0.05)
        grown = gc.get_threshold()
        for pid in pids:
            beamlet.exit(pid, "kill")
        return grown

    grown = run(main, gc_thresholds=(1234, 5, 6))
    assert grown[1:] == (5, 6) and grown[0] >= GC_PER_PROCESS * n * 3 // 4
    assert gc.get_threshold() == before
