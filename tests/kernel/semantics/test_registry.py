"""[REG-*] registered names (docs/semantics.md)."""

from __future__ import annotations

import pytest
from tests.conftest import run
from tests.kernel.semantics.helpers import die_with, wait_forever

import beamlet
from beamlet import (
    ANY,
    BadArg,
    Down,
    register,
    registered,
    send,
    spawn,
    spawn_monitor,
    unregister,
    whereis,
)


def test_register_refuses_a_taken_name():
    """[REG-1]"""

    async def main():
        a, b = spawn(wait_forever), spawn(wait_forever)
        register("svc", a)
        with pytest.raises(BadArg, match="already registered"):
            register("svc", b)
        assert whereis("svc") == a

    run(main)


def test_register_refuses_a_dead_process():
    """[REG-1]"""

    async def main():
        pid, ref = spawn_monitor(die_with, "normal")
        send(pid, "go")
        await beamlet.receive(Down(ref, pid, ANY), timeout=30)
        with pytest.raises(BadArg):
            register("ghost", pid)
        return whereis("ghost")

    assert run(main) is None


def test_register_refuses_a_second_name():
    """[REG-1]"""

    async def main():
        pid = spawn(wait_forever)
        register("one", pid)
        with pytest.raises(BadArg, match="already registered as"):
            register("two", pid)
        return sorted(n for n in registered() if n in ("one", "two"))

    assert run(main) == ["one"]


def test_a_name_is_released_when_its_process_dies():
    """[REG-2]"""

    async def main():
        pid, ref = spawn_monitor(die_with, "normal")
        register("temp", pid)
        send("temp", "go")
        await beamlet.receive(Down(ref, pid, ANY), timeout=30)
        assert whereis("temp") is None
        replacement = spawn(wait_forever)
        register("temp", replacement)
        assert whereis("temp") == replacement

    run(main)


def test_unregister_and_whereis():
    """[REG-2]"""

    async def main():
        pid = spawn(wait_forever)
        register("x", pid)
        unregister("x")
        with pytest.raises(BadArg):
            unregister("x")
        with pytest.raises(BadArg):
            send("x", "hello")
        register("x", pid)  # the process may be named again
        assert whereis("x") == pid
        assert whereis("nobody") is None

    run(main)


async def _named_then_die(name, parent):
    try:
        register(name, beamlet.self())
    except BadArg:
        send(parent, ("named", False))
        return
    send(parent, ("named", True))
    await beamlet.receive("go")


async def _watch_many_times(pid, times, parent):
    for _ in range(times):
        beamlet.monitor(pid)
    send(parent, "watching")
    await beamlet.receive("never")


def test_a_dead_processs_name_is_free_once_its_down_or_exit_arrives(fast_switching):
    """[REG-2] The name goes before links and monitors are told (as on the BEAM),
    so whoever restarts a named process on its Down or Exit can take the name.
    (Another process monitors the dying one 2,000 times: telling those takes
    long enough for a second scheduler to run the first one told.)"""

    async def main():
        me = beamlet.self()
        beamlet.process_flag("trap_exit", True)
        refused = 0
        for i in range(30):
            if i % 2:
                pid, ref = spawn_monitor(_named_then_die, "svc", me)
            else:
                pid = beamlet.spawn_link(_named_then_die, "svc", me)
            if not (await beamlet.receive(("named", ANY), timeout=30))[1]:
                refused += 1
                continue
            watcher = spawn(_watch_many_times, pid, 2000, me)
            await beamlet.receive("watching", timeout=30)
            send(pid, "go")
            if i % 2:
                await beamlet.receive(Down(ref, pid, ANY), timeout=30)
            else:
                await beamlet.receive(beamlet.Exit(pid, ANY), timeout=30)
            try:
                register("svc", me)
            except BadArg:
                refused += 1
            else:
                unregister("svc")
            beamlet.exit(watcher, "kill")
        return refused

    assert run(main, schedulers=2) == 0
