"""[ALIAS-*] process aliases (docs/semantics.md)."""

from __future__ import annotations

from tests.conftest import run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Down, alias, receive, send, spawn, unalias


async def replier(to_alias, parent):
    """Sends to the alias it was given, then tells the parent it did."""
    send(to_alias, (to_alias, "via alias"))
    send(parent, "sent")


def test_a_message_sent_to_an_active_alias_arrives():
    """[ALIAS-1]"""

    async def main():
        a = alias()
        spawn(replier, a, beamlet.self())
        await receive("sent", timeout=30)
        return (await receive((a, ANY), timeout=30))[1]

    assert run(main) == "via alias"


def test_after_unalias_nothing_sent_to_the_alias_arrives():
    """[ALIAS-1] even a message already on its way (sent before, not yet handled)."""

    async def main():
        a = alias()
        pid = spawn(replier, a, beamlet.self())
        # wait until it has sent, without handling our inbox: spin on its death
        while beamlet.is_alive(pid):
            pass
        was_active = unalias(a)
        again = unalias(a)
        spawn(replier, a, beamlet.self())  # sent after unalias: dropped at send
        await receive("sent", timeout=30)
        await receive("sent", timeout=30)
        await assert_no_message((a, ANY), timeout=0)
        assert (was_active, again) == (True, False)

    run(main, schedulers=2)


def test_a_monitor_can_be_an_alias():
    """[ALIAS-2]"""

    async def main():
        target = spawn(replier_on_request)
        ref = beamlet.monitor(target, alias=True)
        send(target, ref)
        reply = await receive((ref, ANY), timeout=30)
        beamlet.exit(target, "kill")
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        return reply[1], down.reason

    async def replier_on_request():
        ref = await receive()
        send(ref, (ref, "answer"))
        await receive("never")

    assert run(main) == ("answer", "killed")


def test_sending_to_an_unknown_alias_is_dropped_silently():
    """[ALIAS-1]"""

    async def main():
        return send(beamlet.make_ref(), "nobody")

    assert run(main) == "nobody"


async def reply_to_each_ref():
    """Answers every Ref it is sent, on that Ref (as a server replies to an alias)."""
    while True:
        ref = await receive()
        send(ref, (ref, "answer"))


def test_an_alias_made_with_demonitor_goes_when_the_monitor_is_removed():
    """[ALIAS-3] demonitor deactivates it; an explicit_unalias alias stays."""

    async def main():
        target = spawn(reply_to_each_ref)
        ref = beamlet.monitor(target, alias="demonitor")
        send(target, ref)
        await receive((ref, ANY), timeout=30)
        beamlet.demonitor(ref)
        send(target, ref)  # answered on an inactive alias: dropped
        await assert_no_message((ref, ANY), timeout=0.05)
        kept = beamlet.monitor(target, alias="explicit_unalias")
        beamlet.demonitor(kept)
        send(target, kept)
        await receive((kept, ANY), timeout=30)  # still active
        assert (unalias(ref), unalias(kept)) == (False, True)

    run(main)


def test_an_alias_made_with_demonitor_goes_when_its_down_is_delivered():
    """[ALIAS-3] the reply sent before the target died still arrives; nothing after."""

    async def main():
        target = spawn(replier_on_request_then_die)
        ref = beamlet.monitor(target, alias="demonitor")
        send(target, ref)
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        reply = await receive((ref, ANY), timeout=30)  # sent before the exit: kept
        send(ref, (ref, "late"))
        await assert_no_message((ref, ANY), timeout=0.05)
        assert (reply, down) == ((ref, "answer"), Down(ref, target, "normal"))
        assert unalias(ref) is False

    async def replier_on_request_then_die():
        ref = await receive()
        send(ref, (ref, "answer"))

    run(main)


def test_monitor_refuses_an_unknown_alias_mode():
    """[ALIAS-3]"""

    async def main():
        try:
            beamlet.monitor(beamlet.self(), alias="sometimes")
        except beamlet.BadArg:
            return "BadArg", beamlet.process_info(beamlet.self())["monitors"]
        return "accepted"

    assert run(main) == ("BadArg", [])
