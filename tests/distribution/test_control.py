"""Control messages and packets: every message type both ways, the
distribution header with atom cache references, fragments (including the
worked example of erl_ext_dist.md), and the bounds on reassembly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beamlet.distribution import control as c
from beamlet.distribution.control import ControlDecodeError, DistDecoder, DistEncoder
from beamlet.distribution.etf import ETFContext, ETFDecodeError
from beamlet.distribution.handshake import BEAMLET_FLAGS, DFLAG_DIST_HDR_ATOM_CACHE, DFLAG_FRAGMENTS
from beamlet.terms import Atom, Pid, Ref

ME = ETFContext(Atom("py@h"), 3)
P1 = Pid(1, 0)
P2 = Pid(2, 0, Atom("erl@h"), 9)
R = Ref((1, 2, 3), Atom("erl@h"), 9)
TT = (Atom("token"), 1)

MESSAGES: list[tuple[c.Control, Any]] = [
    (c.Link(P1, P2), None),
    (c.Send(P2), {Atom("hello"): [1, 2]}),
    (c.Exit(P1, P2, Atom("normal")), None),
    (c.Unlink(P1, P2), None),
    (c.NodeLink(), None),
    (c.RegSend(P1, Atom("rex")), (Atom("call"), b"x")),
    (c.GroupLeader(P1, P2), None),
    (c.Exit2(P1, P2, Atom("kill")), None),
    (c.SendTT(P2, TT), Atom("m")),
    (c.ExitTT(P1, P2, TT, Atom("r")), None),
    (c.RegSendTT(P1, Atom("n"), TT), Atom("m")),
    (c.Exit2TT(P1, P2, TT, Atom("r")), None),
    (c.MonitorP(P1, P2, R), None),
    (c.MonitorP(P1, Atom("registered_name"), R), None),
    (c.DemonitorP(P1, P2, R), None),
    (c.MonitorPExit(P2, P1, R, Atom("noproc")), None),
    (c.SendSender(P1, P2), [1, 2, 3]),
    (c.SendSenderTT(P1, P2, TT), 1),
    (c.PayloadExit(P1, P2), (Atom("shutdown"), 1)),
    (c.PayloadExitTT(P1, P2, TT), Atom("r")),
    (c.PayloadExit2(P1, P2), Atom("kill")),
    (c.PayloadExit2TT(P1, P2, TT), Atom("kill")),
    (c.PayloadMonitorPExit(Atom("name"), P1, R), Atom("noconnection")),
    (
        c.SpawnRequest(R, P2, P2, (Atom("m"), Atom("f"), 2), [Atom("link")]),
        [1, Atom("a")],
    ),
    (
        c.SpawnRequestTT(R, P2, P2, (Atom("m"), Atom("f"), 0), [], TT),
        [],
    ),
    (c.SpawnReply(R, P2, 3, P1), None),
    (c.SpawnReply(R, P2, 0, Atom("badarg")), None),
    (c.SpawnReplyTT(R, P2, 1, P1, TT), None),
    (c.AliasSend(P1, R), Atom("hi")),
    (c.AliasSendTT(P1, R, TT), Atom("hi")),
    (c.UnlinkId(2**64 - 1, P1, P2), None),
    (c.UnlinkIdAck(7, P2, P1), None),
]


@pytest.mark.parametrize("flags", [0, BEAMLET_FLAGS], ids=["pass-through", "dist-header"])
@pytest.mark.parametrize(("ctl", "payload"), MESSAGES, ids=[type(m[0]).__name__ for m in MESSAGES])
def test_every_control_message_round_trips(ctl: c.Control, payload: Any, flags: int) -> None:
    enc = DistEncoder(ME, flags)
    packets = enc.encode(ctl, payload) if ctl.HAS_PAYLOAD else enc.encode(ctl)
    assert len(packets) == 1
    assert packets[0][:1] == (b"\x83" if flags else b"p")
    assert DistDecoder(ME).decode(packets[0]) == (ctl, payload)


@pytest.mark.parametrize("flags", [0, BEAMLET_FLAGS], ids=["pass-through", "dist-header"])
def test_a_stream_of_sends_to_several_destinations_decodes_to_each_its_own(flags: int) -> None:
    """The encoder reuses a control term it encoded before: never another one's."""
    enc = DistEncoder(ME, flags)
    dec = DistDecoder(ME)
    sends = [
        c.RegSend(P1, Atom("a")),
        c.RegSend(P1, Atom("b")),
        c.RegSend(Pid(9, 0), Atom("a")),
        c.SendSender(P1, P2),
        c.Send(P2),
        c.AliasSend(P1, R),
    ]
    for i in range(3 * len(sends)):
        ctl = sends[i % len(sends)]
        (packet,) = enc.encode(ctl, i)
        assert dec.decode(packet) == (ctl, i)


def test_pass_through_packet_layout() -> None:
    (pkt,) = DistEncoder(ME, 0).encode(c.RegSend(P1, Atom("rex")), Atom("x"))
    # 112, then two complete external terms
    assert pkt == (
        b"p\x83h\x04a\x06X\x77\x04py@h\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03"
        b"\x77\x00\x77\x03rex\x83\x77\x01x"
    )


def test_header_is_required_with_either_flag() -> None:
    assert c.uses_dist_header(DFLAG_FRAGMENTS)
    assert c.uses_dist_header(DFLAG_DIST_HDR_ATOM_CACHE)
    assert not c.uses_dist_header(BEAMLET_FLAGS & ~(DFLAG_FRAGMENTS | DFLAG_DIST_HDR_ATOM_CACHE))


def test_payload_presence_is_checked() -> None:
    enc = DistEncoder(ME, BEAMLET_FLAGS)
    with pytest.raises(ValueError, match="needs a payload"):
        enc.encode(c.Send(P2))
    with pytest.raises(ValueError, match="no payload"):
        enc.encode(c.Link(P1, P2), 1)
    dec = DistDecoder(ME)
    (pkt,) = enc.encode(c.Send(P2), 1)
    assert pkt.endswith(b"a\x01")
    with pytest.raises(ControlDecodeError, match="without its payload"):
        dec.decode(pkt[:-2])
    with pytest.raises(ControlDecodeError, match="trailing"):
        dec.decode(b"\x83D\x00h\x01a\x05j")


def test_unknown_tags_are_kept_not_fatal() -> None:
    dec = DistDecoder(ME)
    ctl, payload = dec.decode(b"\x83D\x00h\x02a\x63a\x01a\x07")
    assert ctl == c.UnknownControl((99, 1), True) and payload == 7
    with pytest.raises(ControlDecodeError, match="Link needs 3"):
        dec.decode(b"\x83D\x00h\x02a\x01a\x01")
    with pytest.raises(ControlDecodeError, match="not a tuple"):
        dec.decode(b"\x83D\x00a\x01")


def _cache_packet() -> bytes:
    """A header that stores 'a@host' at segment 4 index 10 and 'b@host' at
    segment 0 index 5 (the two 'already cached' atoms of the spec example),
    carrying NODE_LINK."""
    flags = bytes([0x8C, 0x00])  # entry 0: new, seg 4; entry 1: new, seg 0; short atoms
    refs = bytes([10, 6]) + b"a@host" + bytes([5, 6]) + b"b@host"
    return b"\x83D\x02" + flags + refs + b"h\x01a\x05"


def test_atom_cache_refs_in_the_header() -> None:
    dec = DistDecoder(ME)
    assert dec.decode(_cache_packet()) == (c.NodeLink(), None)
    # reuse both cached atoms (not new), refer to them from the control term
    pkt = b"\x83D\x02" + bytes([0x04, 0x00]) + bytes([10, 5]) + b"h\x04a\x06gR\x00"
    pkt += bytes([0, 0, 0, 1, 0, 0, 0, 0, 1]) + b"R\x01R\x01" + b"\x77\x01x"
    ctl, payload = dec.decode(pkt)
    assert ctl == c.RegSend(Pid(1, 0, Atom("a@host"), 1), Atom("b@host"))
    assert payload == Atom("x")


def _reg_send(payload: bytes, name_slot: int = 5) -> bytes:
    """REG_SEND from <a@host.1.0> to the atom cached at segment 0 ``name_slot``
    (header refs: seg 4 idx 10, seg 0 ``name_slot``; none new), then ``payload``."""
    head = b"\x83D\x02" + bytes([0x04, 0x00]) + bytes([10, name_slot])
    ctl = b"h\x04a\x06gR\x00" + bytes([0, 0, 0, 1, 0, 0, 0, 0, 1]) + b"R\x01R\x01"
    return head + ctl + payload


def test_a_repeated_header_and_control_decode_like_the_first_time() -> None:
    """A stream of messages between the same two processes repeats the header and
    the control term byte for byte: each decodes fully, whatever the payload."""
    dec = DistDecoder(ME)
    dec.decode(_cache_packet())
    to_b = c.RegSend(Pid(1, 0, Atom("a@host"), 1), Atom("b@host"))
    for i in range(3):
        assert dec.decode(_reg_send(b"a" + bytes([i]))) == (to_b, i)
    # same header, another control term (a SEND_SENDER to a pid): not the remembered one
    other = b"\x83D\x02" + bytes([0x04, 0x00]) + bytes([10, 5]) + b"h\x03a\x16gR\x00"
    other += bytes([0, 0, 0, 1, 0, 0, 0, 0, 1]) + b"gR\x00" + bytes([0, 0, 0, 2, 0, 0, 0, 0, 1])
    ctl, payload = dec.decode(other + b"a\x07")
    assert ctl == c.SendSender(Pid(1, 0, Atom("a@host"), 1), Pid(2, 0, Atom("a@host"), 1))
    assert payload == 7
    assert dec.decode(_reg_send(b"a\x09")) == (to_b, 9)
    # a bad payload after a remembered control loses that message only
    with pytest.raises(ETFDecodeError):
        dec.decode(_reg_send(b"\xff"))
    assert dec.decode(_reg_send(b"a\x0a")) == (to_b, 10)


def test_a_cache_slot_stored_again_changes_what_the_same_bytes_mean() -> None:
    """The same header bytes resolve through the cache as it is now: a header
    that stores a new atom in a slot makes every later reference to it mean the
    new atom, even in a packet identical to one decoded before."""
    dec = DistDecoder(ME)
    dec.decode(_cache_packet())
    before = dec.decode(_reg_send(b"a\x01"))
    assert before[0].to_name == Atom("b@host")
    # store 'c@host' in segment 0 index 5 (where 'b@host' was), carrying NODE_LINK
    dec.decode(b"\x83D\x01" + bytes([0x08]) + bytes([5, 6]) + b"c@host" + b"h\x01a\x05")
    after = dec.decode(_reg_send(b"a\x01"))
    assert after[0].to_name == Atom("c@host")


_SLOTS = [(seg, idx) for seg in (0, 1) for idx in (0, 1, 2)]
_TEXTS = ["a@h", "b@h", "c@h", "name"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("store"), st.sampled_from(_SLOTS), st.sampled_from(_TEXTS)),
            st.tuples(st.just("send"), st.sampled_from(_SLOTS), st.sampled_from(_SLOTS)),
        ),
        max_size=40,
    )
)
def test_cached_atoms_always_resolve_as_the_cache_says_now(ops: list[tuple[Any, ...]]) -> None:
    """Packets that store atoms in cache slots, interleaved with REG_SENDs whose
    node and name are references to slots, decode exactly as a model of the cache
    says -- the decoder's memo of repeated headers never returns a stale atom."""
    dec = DistDecoder(ME)
    cache: dict[tuple[int, int], str] = {}
    for i, op in enumerate(ops):
        if op[0] == "store":
            (seg, idx), text = op[1], op[2]
            flags = bytes([0x08 | seg])  # one new entry, short atoms
            packet = b"\x83D\x01" + flags + bytes([idx, len(text)]) + text.encode()
            assert dec.decode(packet + b"h\x01a\x05") == (c.NodeLink(), None)
            cache[(seg, idx)] = text
            continue
        node_slot, name_slot = op[1], op[2]
        if node_slot not in cache or name_slot not in cache:
            continue
        flags = bytes([(name_slot[0] << 4) | node_slot[0], 0x00])  # two refs, none new
        head = b"\x83D\x02" + flags + bytes([node_slot[1], name_slot[1]])
        ctl = b"h\x04a\x06gR\x00" + bytes([0, 0, 0, 1, 0, 0, 0, 0, 1]) + b"R\x01R\x01"
        got = dec.decode(head + ctl + b"a" + bytes([i]))
        want = c.RegSend(Pid(1, 0, Atom(cache[node_slot]), 1), Atom(cache[name_slot]))
        assert got == (want, i)


def test_long_atoms_flag_and_special_atoms_through_the_cache() -> None:
    dec = DistDecoder(ME)
    # one new entry with the LongAtoms bit (the extra half byte, high nibble)
    pkt = b"\x83D\x01" + bytes([0x18]) + bytes([3, 0, 4]) + b"true" + b"h\x02a\x63R\x00"
    ctl, _ = dec.decode(pkt)
    assert ctl == c.UnknownControl((99, True))


def test_reference_to_an_empty_cache_slot_is_an_error() -> None:
    with pytest.raises(ControlDecodeError, match="empty slot"):
        DistDecoder(ME).decode(b"\x83D\x01\x00\x07h\x01R\x00")


# The worked example of erl_ext_dist.md, "Distribution Header for fragmented
# messages": {call, <0.245.2>, {set_get_state, <<0:1024>>}} sent to 'reg'.
SPEC_FIRST = bytes(
    [131, 69, 0, 0, 2, 168, 0, 0, 5, 83, 0, 0, 0, 0, 0, 0, 0, 2,
     5, 4, 137, 9, 10, 5, 236, 3, 114, 101, 103, 9, 4, 99, 97, 108, 108,
     238, 13, 115, 101, 116, 95, 103, 101, 116, 95, 115, 116, 97, 116, 101,
     104, 4, 97, 6, 103, 82, 0, 0, 0, 0, 85, 0, 0, 0, 0, 2, 82, 1, 82, 2,
     104, 3, 82, 3, 103, 82, 0, 0, 0, 0, 245, 0, 0, 0, 2, 2,
     104, 2, 82, 4, 109, 0, 0, 0, 128]
) + bytes(103)  # fmt: skip
SPEC_SECOND = bytes([131, 70, 0, 0, 2, 168, 0, 0, 5, 83, 0, 0, 0, 0, 0, 0, 0, 1]) + bytes(25)


def test_the_fragmented_example_of_the_spec() -> None:
    dec = DistDecoder(ME)
    dec.decode(_cache_packet())
    assert dec.decode(SPEC_FIRST) is None
    assert dec.pending_fragments == 1
    ctl, payload = dec.decode(SPEC_SECOND)
    assert dec.pending_fragments == 0
    a = Atom("a@host")
    assert ctl == c.RegSend(Pid(85, 0, a, 2), Atom("reg"))
    assert payload == (Atom("call"), Pid(245, 2, a, 2), (Atom("set_get_state"), bytes(128)))


def test_fragments_round_trip_and_interleave() -> None:
    enc = DistEncoder(ME, BEAMLET_FLAGS, fragment_size=100)
    big = bytes(range(256)) * 10
    first = enc.encode(c.SendSender(P1, P2), big)
    second = enc.encode(c.RegSend(P1, Atom("n")), [big, big])
    assert len(first) == 26 and len(second) > 26
    dec = DistDecoder(ME)
    results = []
    # interleave the two sequences, and a small message in between
    for a, b in zip(first, second, strict=False):
        results += [dec.decode(a), dec.decode(b)]
    results.append(dec.decode(enc.encode(c.Link(P1, P2))[0]))
    for b in second[len(first) :]:
        results.append(dec.decode(b))
    done = [r for r in results if r is not None]
    assert done == [
        (c.SendSender(P1, P2), big),
        (c.Link(P1, P2), None),
        (c.RegSend(P1, Atom("n")), [big, big]),
    ]
    assert dec.pending_fragments == 0


def test_fragment_errors_and_bounds() -> None:
    enc = DistEncoder(ME, BEAMLET_FLAGS, fragment_size=10)
    packets = enc.encode(c.Send(P2), b"x" * 100)
    dec = DistDecoder(ME)
    with pytest.raises(ControlDecodeError, match="unknown sequence"):
        dec.decode(packets[1])
    dec.decode(packets[0])
    with pytest.raises(ControlDecodeError, match="expected"):
        dec.decode(packets[2])
    assert dec.pending_fragments == 0  # the broken sequence is dropped
    small = DistDecoder(ME, max_message=50)
    small.decode(packets[0])
    with pytest.raises(ControlDecodeError, match=r"over 50 bytes|exceed 50"):
        for p in packets[1:]:
            small.decode(p)
    few = DistDecoder(ME, max_sequences=2)
    for _ in range(2):
        few.decode(enc.encode(c.Send(P2), b"y" * 100)[0])
    with pytest.raises(ControlDecodeError, match="pending"):
        few.decode(enc.encode(c.Send(P2), b"y" * 100)[0])


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x00", b"\x83", b"\x83\x99", b"\x83E\x00", b"p", b"p\x83", b"\x83D\x05\x00"],
)
def test_malformed_packets_raise_decode_errors(packet: bytes) -> None:
    with pytest.raises(ETFDecodeError):
        DistDecoder(ME).decode(packet)


@settings(max_examples=300)
@given(st.sampled_from(MESSAGES), st.sampled_from([0, BEAMLET_FLAGS]), st.data())
def test_fuzz_packets_only_raise_decode_errors(
    msg: tuple[c.Control, Any], flags: int, data: st.DataObject
) -> None:
    ctl, payload = msg
    enc = DistEncoder(ME, flags, fragment_size=8)
    packets = [
        bytearray(p) for p in (enc.encode(ctl, payload) if ctl.HAS_PAYLOAD else enc.encode(ctl))
    ]
    k = data.draw(st.integers(0, len(packets) - 1))
    blob = packets[k]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, max(0, len(blob) - 1)))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and blob:
            blob[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del blob[i:]
        else:
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    dec = DistDecoder(ME)
    for p in packets:
        try:
            dec.decode(bytes(p))
        except ETFDecodeError:
            pass
