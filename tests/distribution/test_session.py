"""DistSession: two sessions talking to each other through memory, with a
fake clock for ticks and timeouts."""

from __future__ import annotations

from typing import Any

from beamlet.distribution import control as c
from beamlet.distribution.handshake import Acceptor, Complete, Failed, Initiator, Send
from beamlet.distribution.session import BadMessage, DistSession, Message
from beamlet.terms import Atom, Pid


def _bytes(events: list[Any]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Send))


def _pair(cookie_b: str = "c") -> tuple[DistSession, DistSession, list[Any], list[Any]]:
    a = DistSession(Initiator("a@h", "c", 1, peer_name="b@h", hidden=True), tick_time=60)
    b = DistSession(Acceptor("b@h", cookie_b, 2), tick_time=60)
    a_events = a.start(0.0)
    b_events = b.start(0.0)
    to_b = _bytes(a_events)
    while to_b:
        new_b = b.receive(to_b, 0.0)
        b_events += new_b
        new_a = a.receive(_bytes(new_b), 0.0) if _bytes(new_b) else []
        a_events += new_a
        to_b = _bytes(new_a)
    return a, b, a_events, b_events


def test_sessions_connect_and_exchange_messages() -> None:
    a, b, a_events, _ = _pair()
    assert a.connected and b.connected
    assert any(isinstance(e, Complete) for e in a_events)
    pid_on_b = Pid(5, 0)
    # b sends a its local pid; a sees it as b's pid, and sends it back
    data = b.send(c.RegSend(pid_on_b, Atom("svc")), (pid_on_b, b"hi"), now=1.0)
    (msg,) = a.receive(data, 1.0)
    assert isinstance(msg, Message) and msg.control.to_name == "svc"
    remote = msg.payload[0]
    assert remote == Pid(5, 0, Atom("b@h"), 2)
    (back,) = b.receive(a.send(c.SendSender(Pid(1, 0), remote), Atom("ok"), now=1.0), 1.0)
    assert isinstance(back, Message) and back.control.to_pid == pid_on_b  # local again


def test_big_messages_travel_in_fragments() -> None:
    a, b, _, _ = _pair()
    big = bytes(300_000)
    data = a.send(c.Send(Pid(5, 0, Atom("b@h"), 2)), big, now=0.0)
    events = [e for i in range(0, len(data), 1000) for e in b.receive(data[i : i + 1000], 0.0)]
    assert [type(e) for e in events] == [Message]
    assert events[0].payload == big
    assert b.decoder.fragmented_messages == 1


def test_wrong_cookie_closes_both_sides() -> None:
    a, b, _, _ = _pair(cookie_b="other")
    assert isinstance(b.closed, Failed) and b.closed.reason == "bad_cookie"
    assert not a.connected


def test_ticks_and_the_tick_timeout() -> None:
    a, b, _, _ = _pair()
    assert a.poll(10.0) == []
    assert a.next_deadline(10.0) == 5.0
    (tick,) = a.poll(15.0)
    assert tick == Send(b"\0\0\0\0")
    assert b.receive(tick.data, 15.0) == []  # a tick is activity, not a message
    assert b.poll(70.0) == [Send(b"\0\0\0\0")]  # b's own tick is due; a was heard at 15
    (gone,) = b.poll(75.0)
    assert isinstance(gone, Failed) and gone.reason == "net_tick_timeout"
    assert not b.connected


def test_setup_timeout() -> None:
    s = DistSession(Acceptor("b@h", "c", 2), setup_time=7)
    s.start(0.0)
    assert s.poll(6.0) == []
    (fail,) = s.poll(7.0)
    assert isinstance(fail, Failed) and fail.reason == "setup_timeout"


def test_a_bad_term_loses_one_message_not_the_connection() -> None:
    a, b, _, _ = _pair()
    bad = b"\x00\x00\x00\x05\x83D\x00h\x99"  # a tuple tag with a missing body
    good = a.send(c.Link(Pid(1, 0), Pid(5, 0, Atom("b@h"), 2)), now=0.0)
    events = b.receive(bad + good, 0.0)
    assert isinstance(events[0], BadMessage) and not events[0].fatal
    assert isinstance(events[1], Message) and b.connected


def test_a_bad_atom_cache_header_is_fatal() -> None:
    _, b, _, _ = _pair()
    events = b.receive(b"\x00\x00\x00\x04\x83D\x01\x08", 0.0)
    assert isinstance(events[0], BadMessage) and events[0].fatal
    assert isinstance(events[1], Failed) and not b.connected


def test_an_oversized_frame_is_fatal() -> None:
    _, b, _, _ = _pair()
    events = b.receive(b"\xff\xff\xff\xff", 0.0)
    assert isinstance(events[-1], Failed) and events[-1].reason == "protocol"
