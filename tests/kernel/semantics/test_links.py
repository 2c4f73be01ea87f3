"""[LINK-*] links (docs/semantics.md)."""

from __future__ import annotations

import pytest
from tests.conftest import run
from tests.kernel.semantics.helpers import die_with, pingable, sync_with

import beamlet
from beamlet import (
    ANY,
    Down,
    Exit,
    ProcessExit,
    link,
    receive,
    send,
    spawn,
    spawn_link,
    spawn_monitor,
    unlink,
)


def test_a_link_is_bidirectional():
    """[LINK-1] either side's death reaches the other."""

    async def main():
        beamlet.process_flag("trap_exit", True)
        me = beamlet.self()
        a = spawn(die_with, "a died")
        link(a)
        send(a, "go")
        first = (await receive(Exit(a, ANY), timeout=30)).reason

        async def watcher(parent):
            beamlet.process_flag("trap_exit", True)
            link(parent)
            send(parent, "linked")
            send(parent, (await receive(Exit, timeout=30)).reason)

        spawn(watcher, me)
        await receive("linked", timeout=30)
        return first, me

    first, _ = run(main)
    assert first == "a died"


def test_the_partner_sees_the_linker_die():
    """[LINK-1] the side that called link() dying reaches the other side."""

    async def linker(target, parent):
        link(target)
        send(parent, "linked")
        await receive("go")
        raise ValueError("linker failed")

    async def main():
        beamlet.process_flag("trap_exit", True)
        me = beamlet.self()
        pid = spawn(linker, me, me)
        await receive("linked", timeout=30)
        send(pid, "go")
        ex = await receive(Exit(pid, ANY), timeout=30)
        return type(ex.reason).__name__

    assert run(main) == "ValueError"


def test_linking_twice_makes_one_link():
    """[LINK-1]"""

    async def main():
        beamlet.process_flag("trap_exit", True)
        pid = spawn(pingable)
        link(pid)
        link(pid)
        await sync_with(pid)
        links_of_pid = beamlet.process_info(pid)["links"]
        beamlet.exit(pid, "boom")
        first = await receive(Exit(pid, ANY), timeout=30)
        with pytest.raises(TimeoutError):
            await receive(Exit(pid, ANY), timeout=0)
        return links_of_pid == [beamlet.self()], first.reason

    assert run(main) == (True, "boom")


def test_linking_to_oneself_does_nothing():
    """[LINK-1]"""

    async def main():
        link(beamlet.self())
        return beamlet.process_info(beamlet.self())["links"]

    assert run(main) == []


def test_spawn_link_reports_a_child_that_crashes_at_once():
    """[LINK-2]"""

    async def crash_at_once():
        raise KeyError("at once")

    async def main():
        beamlet.process_flag("trap_exit", True)
        pid = spawn_link(crash_at_once)
        return type((await receive(Exit(pid, ANY), timeout=30)).reason)

    assert run(main) is KeyError


def test_link_to_a_dead_process_fails_with_noproc():
    """[LINK-3]"""

    async def linker(dead):
        try:
            link(dead)
        except ProcessExit as e:
            return_reason = e.reason
            raise ProcessExit(("caught", return_reason)) from None

    async def main():
        dead, ref = spawn_monitor(die_with, "normal")
        send(dead, "go")
        await receive(Down(ref, dead, ANY), timeout=30)
        pid, ref2 = spawn_monitor(linker, dead)
        return (await receive(Down(ref2, pid, ANY), timeout=30)).reason

    assert run(main) == ("caught", "noproc")


def test_a_trapping_process_linking_to_a_dead_one_gets_exit_noproc():
    """[LINK-3]"""

    async def main():
        beamlet.process_flag("trap_exit", True)
        dead, ref = spawn_monitor(die_with, "normal")
        send(dead, "go")
        await receive(Down(ref, dead, ANY), timeout=30)
        link(dead)
        return await receive(Exit(dead, ANY), timeout=30)

    assert run(main).reason == "noproc"


def test_after_unlink_the_partner_death_has_no_effect():
    """[LINK-4]"""

    async def main():
        pid = spawn_link(die_with, "crash")
        unlink(pid)
        ref = beamlet.monitor(pid)
        send(pid, "go")
        await receive(Down(ref, pid, ANY), timeout=30)
        return "survived", beamlet.process_info(beamlet.self())["links"]

    assert run(main) == ("survived", [])
