"""The inbox protocol (docs/process-model.md, "The inbox"): a message to a
process that is not waiting is appended without a lock, so a receiver that
parks as a sender appends must still be woken, once, and see every message in
the order each sender sent it ([SIG-1])."""

from __future__ import annotations

import random
import sys

import pytest
from tests.conftest import run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, alias, receive, send, sleep, spawn
from beamlet._kernel.process import WAITING


@pytest.fixture
def switch_often():
    """Threads change hands every microsecond: the windows between a
    receiver parking and a sender appending are crossed far more often."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("schedulers", [2, 4])
def test_no_message_is_lost_or_reordered_while_receivers_park_and_wake(schedulers, switch_often):
    """[SIG-1] Senders send in bursts while their receiver keeps parking: in a
    plain receive, in a selective receive with unrelated messages queued, and
    between yields. A lost wake-up shows as a receive that times out."""
    senders, each = 6, 1500

    async def sender(to, seed):
        rng = random.Random(seed)
        me = beamlet.self()
        i = 0
        while i < each:
            for _ in range(rng.randint(1, 40)):
                if i == each:
                    break
                send(to, (me, i))
                i += 1
            await sleep(0)

    async def receiver(parent, seed):
        rng = random.Random(seed)
        _, pids = await receive(("pids", ANY), timeout=30)
        got = {p: [] for p in pids}
        left = senders * each
        while left:
            mode = rng.random()
            if mode < 0.6:
                p, i = await receive(timeout=30)
            else:
                # Wait for one sender's next message: others' stay queued.
                p = rng.choice([q for q in pids if len(got[q]) < each])
                p, i = await receive((p, len(got[p])), timeout=30)
            got[p].append(i)
            left -= 1
            if mode > 0.95:
                await sleep(0)
        assert all(v == list(range(each)) for v in got.values()), "a sender's order changed"
        send(parent, "done")

    async def main():
        me = beamlet.self()
        for rnd in range(3):
            rcv = spawn(receiver, me, rnd)
            pids = [spawn(sender, rcv, rnd * 100 + k) for k in range(senders)]
            send(rcv, ("pids", pids))
            assert await receive("done", timeout=60) == "done"
        return True

    assert run(main, schedulers=schedulers)


def test_a_message_appended_without_the_lock_as_its_receiver_parks_wakes_it():
    """The one interleaving the protocol exists for, forced: the scheduler finds
    the inbox empty, a sender appends and sees the receiver not parked yet, then
    the scheduler parks it. Only the scheduler's second look at the inbox can
    wake it (without it, the message waits for the next one)."""
    from beamlet._kernel import context
    from beamlet._kernel.scheduler import Scheduler

    loop_code = Scheduler.loop.__code__

    class RacingInbox(list):
        armed = False
        owner = None

        def __len__(self):
            if RacingInbox.armed and sys._getframe(1).f_code is loop_code:
                # The scheduler is deciding whether to park the receiver: a
                # sender on another core appends right now (send's lock-free
                # path: the receiver is not WAITING yet, so nobody is woken).
                RacingInbox.armed = False
                send(RacingInbox.owner, "late")
                return 0  # what the scheduler saw just before the append
            return super().__len__()

    async def receiver(parent):
        proc = context.current_process()
        RacingInbox.owner = proc.pid
        proc.inbox = RacingInbox()
        RacingInbox.armed = True
        send(parent, ("got", await receive()))

    async def main():
        spawn(receiver, beamlet.self())
        return await receive(("got", ANY), timeout=10)

    assert run(main, schedulers=1) == ("got", "late")
    assert not RacingInbox.armed  # the interleaving did happen


def test_a_receiver_that_parks_while_a_sender_appends_is_woken_by_the_sender():
    """The other side, forced: a sender sees its receiver running, the receiver
    then parks (its inbox still empty), then the sender appends. Only the
    sender's second look at the state can wake it."""
    import time

    from beamlet._kernel import context

    entered = []

    class SlowInbox(list):
        receiver = None

        def append(self, item):
            if item == "late" and SlowInbox.receiver is not None:
                proc = SlowInbox.receiver
                entered.append(True)
                deadline = time.monotonic() + 10
                while proc.state != WAITING and time.monotonic() < deadline:
                    time.sleep(0.0001)  # the receiver parks on the other scheduler
                SlowInbox.receiver = None
            super().append(item)

    async def receiver(parent):
        proc = context.current_process()
        proc.inbox = SlowInbox()
        SlowInbox.receiver = proc
        send(parent, ("ready", proc.pid))
        while not entered:  # running (not WAITING) until the sender is inside send
            pass
        send(parent, ("got", await receive()))

    async def main():
        spawn(receiver, beamlet.self())
        _, pid = await receive(("ready", ANY), timeout=10)
        send(pid, "late")
        return await receive(("got", ANY), timeout=10)

    assert run(main, schedulers=2) == ("got", "late")
    assert entered


def test_a_message_to_the_alias_of_a_waiting_owner_goes_behind_its_inbox():
    """A message to an alias whose owner waits is handed over bare only if
    nothing is in the owner's inbox; otherwise it goes behind what is there
    ([SIG-1]). Forced: a message appended without the lock, its sender not yet
    back to wake the owner, then the reply to the alias."""
    from beamlet._kernel import context

    async def replier(owner, a):
        proc = context.current_runtime().table[owner.id]
        # One scheduler: the owner waits (in receive) while this runs.
        assert proc.state == WAITING and not proc.inbox
        # What send's lock-free path does for a sender that saw the owner
        # running an instant ago: the append, the wake-up still to come.
        if proc.inbox is None:
            proc.inbox = [("first", beamlet.self())]
        else:
            proc.inbox.append(("first", beamlet.self()))
        send(a, "reply")

    async def main():
        a = alias()
        spawn(replier, beamlet.self(), a)
        first = await receive(timeout=30)
        second = await receive(timeout=30)
        assert first[0] == "first"
        assert second == "reply"

    run(main, schedulers=1)


def test_a_message_to_an_inactive_alias_of_a_waiting_owner_does_not_wake_it():
    """The sender read the alias's owner just before the owner dropped it
    (forced: the owner's own table loses it, the runtime's not yet); the owner
    then waits. The message is dropped, and the owner is not woken for it."""
    from beamlet._kernel import context

    async def replier(owner, a):
        send(a, "late")
        send(owner, ("status", beamlet.process_info(owner)["status"]))

    async def main():
        a = alias()
        del context.current_process().aliases[a]  # unalias, half done
        spawn(replier, beamlet.self(), a)
        assert await receive(timeout=30) == ("status", "waiting")
        await assert_no_message(timeout=0)

    run(main, schedulers=1)
