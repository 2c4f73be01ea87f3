"""[ALIAS-*] process aliases (docs/semantics.md)."""

from __future__ import annotations

from tests.conftest import run

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
        try:
            await receive((a, ANY), timeout=0)
            return was_active, again, "leaked"
        except TimeoutError:
            return was_active, again, "dropped"

    assert run(main, schedulers=2) == (True, False, "dropped")


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
