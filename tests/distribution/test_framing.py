"""2- and 4-byte framing: any chunking gives the same packets; ticks; limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beamlet.distribution.framing import TICK, FrameError, PacketReader, frame


@given(
    st.lists(st.binary(max_size=300), max_size=20),
    st.sampled_from([2, 4]),
    st.data(),
)
def test_packets_survive_arbitrary_chunking(
    packets: list[bytes], header: int, data: st.DataObject
) -> None:
    stream = b"".join(frame(p, header) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = PacketReader(header)
    got: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got += reader.feed(stream[prev:cut])
        prev = cut
    assert got == packets
    assert reader.buffered == 0


def test_an_empty_four_byte_packet_is_a_tick() -> None:
    reader = PacketReader(4)
    assert reader.feed(TICK + frame(b"x") + TICK) == [b"", b"x", b""]


def test_byte_by_byte() -> None:
    reader = PacketReader(4)
    out = [p for b in frame(b"hello") for p in reader.feed(bytes([b]))]
    assert out == [b"hello"]


def test_oversized_length_is_refused_before_buffering() -> None:
    reader = PacketReader(4, max_size=1000)
    with pytest.raises(FrameError, match="exceeds"):
        reader.feed(b"\xff\xff\xff\xff")
    with pytest.raises(FrameError):
        frame(b"x" * 70000, 2)


def test_switching_header_size_keeps_buffered_bytes() -> None:
    reader = PacketReader(2)
    reader.append(frame(b"hs", 2) + frame(b"after", 4))
    assert reader.next_packet() == b"hs"
    reader.switch(4)
    assert reader.next_packet() == b"after"
    assert reader.next_packet() is None
