"""[EXIT-*] exit signals (docs/semantics.md)."""

from __future__ import annotations

from tests.conftest import run
from tests.kernel.semantics.helpers import die_with, pingable, sync_with, wait_forever

import beamlet
from beamlet import ANY, Down, Exit, exit, monitor, receive, send, spawn, spawn_link, spawn_monitor


def test_exit_kill_cannot_be_trapped_and_the_victim_dies_killed():
    """[EXIT-3]"""

    async def main():
        pid, ref = spawn_monitor(pingable, True)
        exit(pid, "kill")
        return (await receive(Down(ref, pid, ANY), timeout=30)).reason

    assert run(main) == "killed"


def test_the_links_of_a_killed_process_get_killed():
    """[EXIT-3]"""

    async def main():
        beamlet.process_flag("trap_exit", True)
        pid = spawn_link(wait_forever)
        exit(pid, "kill")
        return (await receive(Exit(pid, ANY), timeout=30)).reason

    assert run(main) == "killed"


def test_a_trapping_process_gets_exit_signals_as_messages():
    """[EXIT-4]"""

    async def main():
        beamlet.process_flag("trap_exit", True)
        me = beamlet.self()
        spawn(wait_forever)  # a bystander

        async def sender():
            exit(me, "custom reason")
            exit(me, "normal")

        s = spawn(sender)
        assert await receive(Exit, timeout=30) == Exit(s, "custom reason")
        assert await receive(Exit, timeout=30) == Exit(s, "normal")

    run(main)


def test_a_normal_exit_signal_is_ignored_by_a_process_not_trapping_exits():
    """[EXIT-5]"""

    async def main():
        pid = spawn(pingable)
        exit(pid, "normal")
        await sync_with(pid)  # it handled the signal before the ping
        assert beamlet.is_alive(pid)

    run(main)


def test_exit_self_normal_ends_the_caller():
    """[EXIT-5]"""

    async def quitter():
        exit(beamlet.self(), "normal")
        raise AssertionError("not reached")

    async def main():
        pid, ref = spawn_monitor(quitter)
        return (await receive(Down(ref, pid, ANY), timeout=30)).reason

    assert run(main) == "normal"


def test_an_abnormal_exit_signal_kills_with_the_same_reason():
    """[EXIT-6]"""

    async def main():
        pid, ref = spawn_monitor(pingable)
        exit(pid, ("shutdown", "for maintenance"))
        return (await receive(Down(ref, pid, ANY), timeout=30)).reason

    assert run(main) == ("shutdown", "for maintenance")


def test_dying_with_reason_kill_sends_a_trappable_kill():
    """[EXIT-7]"""

    async def middle(parent):
        beamlet.process_flag("trap_exit", True)
        child = spawn_link(die_with, "kill")
        send(child, "go")
        send(parent, await receive(Exit(child, ANY), timeout=30))

    async def bystander(killer_to_be, parent):
        beamlet.link(killer_to_be)
        send(parent, "linked")  # the LINK signal is already in the killer's inbox
        await receive("never")

    async def main():
        me = beamlet.self()
        spawn(middle, me)
        trapped = await receive(Exit, timeout=30)
        # a non-trapping partner dies with "kill", not "killed"
        killer = spawn(die_with, "kill")
        b, ref = spawn_monitor(bystander, killer, me)
        await receive("linked", timeout=30)
        send(killer, "go")
        down = await receive(Down(ref, b, ANY), timeout=30)
        return trapped.reason, down.reason

    assert run(main) == ("kill", "kill")


def test_exit_to_a_dead_process_does_nothing():
    """[EXIT-8]"""

    async def main():
        pid, ref = spawn_monitor(die_with, "normal")
        send(pid, "go")
        await receive(Down(ref, pid, ANY), timeout=30)
        exit(pid, "kill")
        exit(pid, "whatever")
        return "still here"

    assert run(main) == "still here"


def test_a_crash_propagates_along_a_chain_of_links():
    """[EXIT-6] + [LINK-1]"""

    async def link_chain(n, parent):
        if n == 0:
            # It reports itself: the ("child", ...) messages of the others come
            # from different senders, in no set order (MSG-1 orders one pair).
            send(parent, ("bottom", beamlet.self()))
            await receive("go")
            raise ValueError("bottom")
        child = spawn_link(link_chain, n - 1, parent)
        send(parent, ("child", child))
        await receive("never")

    async def main():
        top, ref = spawn_monitor(link_chain, 5, beamlet.self())
        for _ in range(5):
            await receive(("child", ANY), timeout=30)
        _, bottom = await receive(("bottom", ANY), timeout=30)
        send(bottom, "go")
        reason = (await receive(Down(ref, top, ANY), timeout=30)).reason
        return type(reason), str(reason)

    assert run(main) == (ValueError, "bottom")


_ = monitor
