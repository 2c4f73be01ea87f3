"""[LINK-*] links (docs/semantics.md)."""

from __future__ import annotations

from tests.conftest import run
from tests.helpers import assert_no_message
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
    """[LINK-1] both sides hold the link, and either side's death reaches the
    other: the side that called link() and the side it linked to."""

    async def linker(target):
        link(target)
        send(target, "linked")  # after the LINK signal: handled before this is read
        await receive("go")
        raise ProcessExit("linker died")

    async def main():
        beamlet.process_flag("trap_exit", True)
        me = beamlet.self()
        # We link to a: a's death reaches us.
        a = spawn(pingable)
        link(a)
        await sync_with(a)  # a has handled the LINK signal
        assert beamlet.process_info(me)["links"] == [a]
        assert beamlet.process_info(a)["links"] == [me]
        beamlet.exit(a, "a died")
        assert await receive(Exit(a, ANY), timeout=30) == Exit(a, "a died")
        assert beamlet.process_info(me)["links"] == []
        # b links to us: b's death reaches us.
        b = spawn(linker, me)
        await receive("linked", timeout=30)
        assert beamlet.process_info(me)["links"] == [b]
        assert beamlet.process_info(b)["links"] == [me]
        send(b, "go")
        assert await receive(Exit(b, ANY), timeout=30) == Exit(b, "linker died")
        assert beamlet.process_info(me)["links"] == []

    run(main)


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
        assert beamlet.process_info(beamlet.self())["links"] == [pid]
        assert beamlet.process_info(pid)["links"] == [beamlet.self()]
        beamlet.exit(pid, "boom")
        assert await receive(Exit(pid, ANY), timeout=30) == Exit(pid, "boom")
        await assert_no_message(Exit(pid, ANY), timeout=0)

    run(main)


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
        assert await receive(Exit(dead, ANY), timeout=30) == Exit(dead, "noproc")
        assert beamlet.process_info(beamlet.self())["links"] == []

    run(main)


def test_after_unlink_the_partner_death_has_no_effect():
    """[LINK-4] and the link is gone on both sides."""

    async def partner(parent):
        await receive("go")  # the UNLINK signal came before "go": handled by now
        send(parent, ("links", beamlet.process_info(beamlet.self())["links"]))
        raise ProcessExit("crash")

    async def main():
        me = beamlet.self()
        pid = spawn_link(partner, me)
        unlink(pid)
        assert beamlet.process_info(me)["links"] == []
        ref = beamlet.monitor(pid)
        send(pid, "go")
        assert await receive(("links", ANY), timeout=30) == ("links", [])
        assert await receive(Down(ref, pid, ANY), timeout=30) == Down(ref, pid, "crash")
        assert beamlet.process_info(me)["links"] == []
        return "survived"

    assert run(main) == "survived"
