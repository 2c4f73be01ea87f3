"""Length-prefixed framing for the distribution protocol (sans-I/O).

erl_dist_protocol.md, "Distribution Handshake": every handshake message is
preceded by a 2-byte big-endian length (``{packet, 2}``).  "Protocol between
Connected Nodes": after the handshake every packet has a 4-byte big-endian
length (``{packet, 4}``), and a packet of length 0 is a *tick* (keep-alive).

:class:`PacketReader` takes whatever chunks the socket delivers and returns
the complete packets; :func:`frame` does the reverse.  A length above
``max_size`` raises :class:`FrameError` before anything is buffered for it,
so a hostile peer cannot make us allocate what it announces.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["DEFAULT_MAX_PACKET", "TICK", "FrameError", "PacketReader", "frame"]

#: Largest packet accepted by default (bytes, excluding the header).
DEFAULT_MAX_PACKET: Final = 128 * 1024 * 1024

#: A tick: an empty 4-byte-framed packet.
TICK: Final = b"\x00\x00\x00\x00"

_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")


class FrameError(ValueError):
    """A length header the reader refuses (too large, or a bad header size)."""


def frame(payload: bytes | bytearray | memoryview, header_size: int = 4) -> bytes:
    """Prefix ``payload`` with its length in ``header_size`` (2 or 4) bytes."""
    n = len(payload)
    if header_size == 4:
        if n > 0xFFFFFFFF:
            raise FrameError(f"packet of {n} bytes does not fit a 4-byte length")
        return _u32.pack(n) + bytes(payload)
    if header_size == 2:
        if n > 0xFFFF:
            raise FrameError(f"handshake message of {n} bytes does not fit a 2-byte length")
        return _u16.pack(n) + bytes(payload)
    raise FrameError(f"header size must be 2 or 4, not {header_size}")


class PacketReader:
    """Incremental parser of length-prefixed packets.

    ``feed(chunk)`` returns the packets completed by ``chunk`` (possibly
    none, possibly several).  With 4-byte headers an empty packet (a tick)
    is returned as ``b""``.  :meth:`switch` changes the header size (2 during
    the handshake, 4 after) keeping any bytes already buffered.
    """

    __slots__ = ("_buf", "_header", "max_size")

    def __init__(self, header_size: int = 4, max_size: int = DEFAULT_MAX_PACKET) -> None:
        if header_size not in (2, 4):
            raise FrameError(f"header size must be 2 or 4, not {header_size}")
        self._header = header_size
        self._buf = bytearray()
        self.max_size = max_size

    @property
    def header_size(self) -> int:
        return self._header

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a packet."""
        return len(self._buf)

    def switch(self, header_size: int) -> None:
        """Use ``header_size``-byte lengths from now on (keeps buffered bytes)."""
        if header_size not in (2, 4):
            raise FrameError(f"header size must be 2 or 4, not {header_size}")
        self._header = header_size

    def take_buffered(self) -> bytes:
        """Remove and return the bytes not yet parsed into packets."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` without parsing it (see :meth:`next_packet`)."""
        self._buf += data

    def next_packet(self) -> bytes | None:
        """Remove and return the next complete packet, or None if there is none
        yet.  Lets a caller switch the header size between two packets."""
        buf = self._buf
        h = self._header
        if len(buf) < h:
            return None
        (n,) = (_u32 if h == 4 else _u16).unpack_from(buf, 0)
        if n > self.max_size:
            raise FrameError(f"packet length {n} exceeds the limit of {self.max_size} bytes")
        if len(buf) < h + n:
            return None
        packet = bytes(buf[h : h + n])
        del buf[: h + n]
        return packet

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Buffer ``data`` and return every packet now complete."""
        buf = self._buf
        buf += data
        packets: list[bytes] = []
        h = self._header
        unpack = _u32.unpack_from if h == 4 else _u16.unpack_from
        while len(buf) >= h:
            (n,) = unpack(buf, 0)
            if n > self.max_size:
                raise FrameError(f"packet length {n} exceeds the limit of {self.max_size} bytes")
            if len(buf) < h + n:
                break
            packets.append(bytes(buf[h : h + n]))
            del buf[: h + n]
        return packets
