"""[SIG-*] signal ordering (docs/semantics.md)."""

from __future__ import annotations

from tests.conftest import run

import beamlet
from beamlet import ANY, Exit, receive, send, spawn


def test_messages_from_one_sender_arrive_in_the_order_sent():
    """[SIG-1]"""

    async def sender(to, n):
        for i in range(n):
            send(to, (beamlet.self(), i))

    async def main():
        me = beamlet.self()
        senders = [spawn(sender, me, 2000) for _ in range(4)]
        seen = {p: [] for p in senders}
        for _ in range(8000):
            p, i = await receive(timeout=30)
            seen[p].append(i)
        for p, got in seen.items():
            assert got == list(range(2000)), p

    run(main)


def test_a_message_sent_before_an_exit_signal_is_received_first():
    """[SIG-1] a message and an exit signal from one sender keep their order."""

    async def sender(to):
        send(to, "last words")
        beamlet.exit(to, "bye")

    async def main():
        beamlet.process_flag("trap_exit", True)
        pid = spawn(sender, beamlet.self())
        assert await receive(timeout=30) == "last words"
        assert await receive(timeout=30) == Exit(pid, "bye")

    run(main)


def test_signals_to_a_waiting_process_are_handled_when_it_wakes():
    """[SIG-1] link then message from the same sender: the link is in place
    by the time the message is read."""

    async def linker(to):
        beamlet.link(to)
        send(to, "linked now")
        await receive("never")  # stays alive, and linked, while main looks

    async def main():
        me = beamlet.self()
        pid = spawn(linker, me)
        await receive("linked now", timeout=30)
        assert beamlet.process_info(me)["links"] == [pid]
        assert beamlet.process_info(pid)["links"] == [me]

    run(main)


_ = ANY
