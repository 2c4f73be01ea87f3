"""The version 6 handshake, from bytes: both sides, against each other and
against hand-made messages laid out as erl_dist_protocol.md describes."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beamlet.distribution.handshake import (
    BEAMLET_FLAGS,
    DFLAG_MANDATORY_25_DIGEST,
    DFLAG_NAME_ME,
    DFLAG_PUBLISHED,
    DFLAG_V4_NC,
    MANDATORY_25,
    REQUIRED_FLAGS,
    Acceptor,
    Complete,
    Event,
    Failed,
    Initiator,
    Send,
    digest,
    flag_names,
    simultaneous_status,
)
from beamlet.terms import Atom


def _sent(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Send))


def _run(a: Initiator, b: Acceptor) -> tuple[list[Event], list[Event]]:
    """Shuttle bytes between the two machines until both are done."""
    a_events = a.start()
    b_events: list[Event] = []
    to_b = _sent(a_events)
    for _ in range(10):
        if a.done and b.done:
            break
        new_b = b.receive(to_b) if to_b and not b.done else []
        b_events += new_b
        to_a = _sent(new_b)
        new_a = a.receive(to_a) if to_a and not a.done else []
        a_events += new_a
        to_b = _sent(new_a)
    return a_events, b_events


def test_digest_is_md5_of_cookie_and_decimal_challenge() -> None:
    assert digest(12345, "secret") == hashlib.md5(b"secret12345").digest()
    assert digest(0xFFFFFFFF, b"c") == hashlib.md5(b"c4294967295").digest()


def test_the_flag_values_are_those_of_dist_h() -> None:
    assert DFLAG_MANDATORY_25_DIGEST == 0x4000000
    assert DFLAG_V4_NC == 1 << 34
    assert MANDATORY_25 == 0x1070F94  # DFLAG_DIST_MANDATORY_25, dist.h
    assert REQUIRED_FLAGS & ~BEAMLET_FLAGS == 0
    assert "FRAGMENTS" in flag_names(BEAMLET_FLAGS)


def test_initiator_and_acceptor_agree() -> None:
    a = Initiator("a@h", "cookie", 11, peer_name="b@h", hidden=True)
    b = Acceptor("b@h", "cookie", 22)
    a_events, b_events = _run(a, b)
    (a_done,) = [e for e in a_events if isinstance(e, Complete)]
    (b_done,) = [e for e in b_events if isinstance(e, Complete)]
    assert (a_done.peer_name, a_done.peer_creation) == (Atom("b@h"), 22)
    assert (b_done.peer_name, b_done.peer_creation) == (Atom("a@h"), 11)
    assert b_done.peer_hidden and not a_done.peer_hidden
    assert a_done.flags == b_done.flags == BEAMLET_FLAGS & ~DFLAG_PUBLISHED


@pytest.mark.parametrize("side", ["initiator", "acceptor"])
def test_wrong_cookie_is_a_clear_failure_on_the_checking_side(side: str) -> None:
    a = Initiator("a@h", "one", 1)
    b = Acceptor("b@h", "two", 2)
    a_events, b_events = _run(a, b)
    # B checks A's digest first, so B is the one that notices.
    (failure,) = [e for e in b_events if isinstance(e, Failed)]
    assert failure.reason == "bad_cookie"
    assert not any(isinstance(e, Complete) for e in a_events + b_events)
    assert not a.done or isinstance(a.result, Failed)


def test_initiator_detects_a_bad_ack() -> None:
    a = Initiator("a@h", "c", 1, challenge=lambda: 7)
    a.start()
    chal = struct.pack(">cQIIH", b"N", BEAMLET_FLAGS, 99, 5, 3) + b"b@h"
    (reply,) = a.receive(struct.pack(">H", 3) + b"sok" + struct.pack(">H", len(chal)) + chal)
    assert isinstance(reply, Send)
    assert reply.data[2:] == b"r" + struct.pack(">I", 7) + digest(99, "c")
    (fail,) = a.receive(struct.pack(">H", 17) + b"a" + digest(7, "other"))
    assert isinstance(fail, Failed) and fail.reason == "bad_cookie"


def test_send_name_layout() -> None:
    a = Initiator("py@127.0.0.1", "c", 0x01020304, hidden=True)
    (send,) = a.start()
    assert isinstance(send, Send)
    body = send.data
    assert struct.unpack(">H", body[:2])[0] == len(body) - 2
    tag, flags, creation, nlen = struct.unpack_from(">cQIH", body, 2)
    assert (tag, creation, body[17:]) == (b"N", 0x01020304, b"py@127.0.0.1")
    assert nlen == 12 and not flags & DFLAG_PUBLISHED


def test_acceptor_by_bytes_and_leftover_goes_to_the_next_phase() -> None:
    b = Acceptor("b@h", "c", 5, challenge=lambda: 424242)
    name = struct.pack(">cQIH", b"N", BEAMLET_FLAGS, 9, 3) + b"a@h"
    status, chal = b.receive(struct.pack(">H", len(name)) + name)
    assert isinstance(status, Send) and status.data == b"\x00\x03sok"
    assert isinstance(chal, Send)
    _, _, challenge, creation, _ = struct.unpack_from(">cQIIH", chal.data, 2)
    assert (challenge, creation) == (424242, 5)
    reply = b"r" + struct.pack(">I", 77) + digest(424242, "c")
    ack, done = b.receive(struct.pack(">H", 21) + reply + b"\0\0\0\0rest")
    assert isinstance(ack, Send) and ack.data == b"\x00\x11a" + digest(77, "c")
    assert isinstance(done, Complete) and done.leftover == b"\0\0\0\0rest"


def test_peer_without_otp26_flags_is_refused() -> None:
    b = Acceptor("b@h", "c", 5)
    name = struct.pack(">cQIH", b"N", MANDATORY_25, 9, 3) + b"a@h"
    (fail,) = b.receive(struct.pack(">H", len(name)) + name)
    assert isinstance(fail, Failed) and fail.reason == "missing_flags"
    assert "V4_NC" in fail.detail and "UNLINK_ID" in fail.detail


def test_mandatory_25_digest_stands_for_the_otp25_set() -> None:
    flags = DFLAG_MANDATORY_25_DIGEST | (REQUIRED_FLAGS & ~MANDATORY_25)
    b = Acceptor("b@h", "c", 5)
    name = struct.pack(">cQIH", b"N", flags, 9, 3) + b"a@h"
    events = b.receive(struct.pack(">H", len(name)) + name)
    assert not any(isinstance(e, Failed) for e in events)


def test_simultaneous_connect_rule() -> None:
    # B has its own attempt pending; the greater name wins.
    assert simultaneous_status("b@h", "a@h") == "nok"
    assert simultaneous_status("a@h", "b@h") == "ok_simultaneous"


@pytest.mark.parametrize("status", ["nok", "not_allowed"])
def test_refusal_status_reaches_the_initiator(status: str) -> None:
    a = Initiator("a@h", "c", 1)
    b = Acceptor("b@h", "c", 2, status=lambda name, flags, creation: status)
    _run(a, b)
    assert isinstance(b.result, Failed) and b.result.status == status
    assert isinstance(a.result, Failed) and a.result.reason == "status"
    assert a.result.status == status


def test_alive_then_true_continues() -> None:
    a = Initiator("a@h", "c", 1)
    b = Acceptor("b@h", "c", 2, status=lambda *_: "alive")
    _run(a, b)
    assert isinstance(a.result, Complete) and isinstance(b.result, Complete)
    assert b.replaces_existing


def test_ok_simultaneous_continues() -> None:
    a = Initiator("b@h", "c", 1)
    b = Acceptor("a@h", "c", 2, status=lambda name, *_: simultaneous_status("a@h", name))
    _run(a, b)
    assert isinstance(a.result, Complete)


def test_wrong_node_answering_is_refused() -> None:
    a = Initiator("a@h", "c", 1, peer_name="x@h")
    b = Acceptor("b@h", "c", 2)
    _run(a, b)
    assert isinstance(a.result, Failed) and a.result.reason == "wrong_node"


def test_dynamic_names_are_refused_cleanly() -> None:
    b = Acceptor("b@h", "c", 5)
    name = struct.pack(">cQIH", b"N", BEAMLET_FLAGS | DFLAG_NAME_ME, 9, 1) + b"h"
    status, fail = b.receive(struct.pack(">H", len(name)) + name)
    assert isinstance(status, Send) and status.data == b"\x00\x0csnot_allowed"
    assert isinstance(fail, Failed) and fail.reason == "unsupported"


def test_old_send_name_then_complement() -> None:
    b = Acceptor("b@h", "c", 5, challenge=lambda: 1000)
    low = BEAMLET_FLAGS & 0xFFFFFFFF
    name = b"n" + struct.pack(">HI", 5, low) + b"a@h"
    events = b.receive(struct.pack(">H", len(name)) + name)
    assert [e.data[2:4] for e in events if isinstance(e, Send)] == [b"so", b"N\x00"]
    comp = b"c" + struct.pack(">II", BEAMLET_FLAGS >> 32, 77)
    reply = b"r" + struct.pack(">I", 1) + digest(1000, "c")
    events = b.receive(struct.pack(">H", 9) + comp + struct.pack(">H", 21) + reply)
    done = events[-1]
    assert isinstance(done, Complete) and done.peer_creation == 77
    assert done.peer_flags == BEAMLET_FLAGS


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x00", b"\x00\x01X", b"\x00\x05Nabcd", b"\xff\xff"],
)
def test_garbage_fails_without_raising(garbage: bytes) -> None:
    b = Acceptor("b@h", "c", 5)
    events = b.receive(garbage)
    if events:
        assert isinstance(events[-1], Failed)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_handshake_never_raises(data: bytes, initiator: bool) -> None:
    machine: Initiator | Acceptor
    if initiator:
        machine = Initiator("a@h", "c", 1)
        machine.start()
    else:
        machine = Acceptor("b@h", "c", 2)
    events = machine.receive(data)
    assert all(isinstance(e, (Send, Failed, Complete)) for e in events)
    assert not any(isinstance(e, Complete) for e in events)  # no cookie, no entry
