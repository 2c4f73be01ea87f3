"""Message isolation (docs/semantics.md, [MSG-*])."""

from __future__ import annotations

import dataclasses
import enum
import threading

import pytest
from tests.conftest import run

import beamlet
from beamlet import receive, send, spawn
from beamlet._kernel.copying import copy_message, is_frozen


async def keeper():
    """Keeps the first message it gets; sends it back on request."""
    kept = await receive()
    while True:
        sender = await receive()
        send(sender, kept)


def test_mutating_a_sent_list_does_not_change_what_the_receiver_got():
    async def main():
        data = {"items": [1, 2, 3]}
        pid = spawn(keeper)
        send(pid, data)
        data["items"].append(4)
        send(pid, beamlet.self())
        return await receive()

    assert run(main) == {"items": [1, 2, 3]}


def test_the_receiver_cannot_mutate_what_the_sender_holds():
    async def mutator(parent):
        got = await receive()
        got.append("mutated")
        send(parent, "done")

    async def main():
        data = [1]
        pid = spawn(mutator, beamlet.self())
        send(pid, data)
        await receive("done")
        return data

    assert run(main) == [1]


def test_immutable_values_are_shared_not_copied():
    big = b"x" * 10_000_000
    value = (1, "two", big, None, (3.0, frozenset({4})))
    assert copy_message(value) is value
    assert copy_message(big) is big


def test_mutable_parts_are_copied_and_immutable_parts_shared():
    inner = ("shared",)
    value = ([1], inner)
    out = copy_message(value)
    assert out == value and out is not value
    assert out[0] is not value[0]
    assert out[1] is inner


def test_copies_keep_their_types():
    Point = dataclasses.make_dataclass("Point", ["x", "y"])
    for value in ([1, [2]], {"a": {1, 2}}, {3}, bytearray(b"ab"), Point(1, [2])):
        out = copy_message(value)
        assert out == value and type(out) is type(value) and out is not value


def test_enum_members_and_registered_immutables_are_shared():
    class Color(enum.Enum):
        RED = 1

    @beamlet.register_immutable
    @dataclasses.dataclass(frozen=True)
    class Money:
        cents: int

    m = Money(5)
    assert copy_message(Color.RED) is Color.RED
    assert copy_message(m) is m
    assert is_frozen((Color.RED, m))


def test_a_value_that_cannot_be_copied_is_refused_in_the_sender():
    async def main():
        with pytest.raises(TypeError, match="cannot send"):
            send(beamlet.self(), threading.Lock())
        return "sender still alive"

    assert run(main) == "sender still alive"


def test_sending_to_a_dead_pid_is_silently_dropped_and_returns_the_message():
    async def quick():
        return None

    async def main():
        pid, ref = beamlet.spawn_monitor(quick)
        await receive(beamlet.Down(ref, beamlet.ANY, beamlet.ANY))
        return send(pid, "hello?")

    assert run(main) == "hello?"


def test_sending_to_an_unregistered_name_raises_badarg():
    async def main():
        with pytest.raises(beamlet.BadArg, match="nobody"):
            send("nobody", 1)
        return "ok"

    assert run(main) == "ok"


def test_a_send_from_a_thread_running_in_a_context_copied_from_a_process_wakes_the_receiver():
    # asyncio (call_soon_threadsafe, to_thread) runs callbacks in a copy of the
    # caller's context: a thread may see a scheduler's context variable. Its
    # sends must still wake the receiver (not push to that scheduler's queue
    # as if they came from it, without a wake-up).
    import contextvars
    import threading
    import time

    from beamlet import process_info, receive, self, send

    async def main():
        me = self()
        ctx = contextvars.copy_context()

        def later():
            deadline = time.monotonic() + 5
            while (process_info(me) or {}).get("status") != "waiting":
                if time.monotonic() > deadline:
                    return
                time.sleep(0.001)
            ctx.run(send, me, "from a copied context")

        threading.Thread(target=later).start()
        return await receive(timeout=5)

    assert beamlet.run(main, schedulers=1) == "from a copied context"
