"""The distribution handshake, version 6 (OTP 23+), as sans-I/O state machines.

Implements erl_dist_protocol.md, "Distribution Handshake" (send_name,
status, challenge, complement, challenge_reply, challenge_ack) and
"Distribution Flags" for both sides:

* :class:`Initiator` -- node A, which connected: sends ``send_name`` ('N').
* :class:`Acceptor` -- node B, which accepted: answers with status and
  challenge, checks A's digest, proves its own.

Neither touches a socket.  Feed them the bytes read from the connection
(any chunking) with ``receive(data)``; they return a list of events:

* :class:`Send` -- bytes to write, already framed with the 2-byte length;
* :class:`Complete` -- the handshake succeeded: peer name, flags, creation;
  from then on the connection uses 4-byte framing, and ``leftover`` holds
  any bytes that already arrived past the handshake (feed them to the
  4-byte :class:`~beamlet.distribution.framing.PacketReader`);
* :class:`Failed` -- the handshake failed (``reason`` says why; a wrong
  cookie is ``reason="bad_cookie"``): close the connection.

The digest is ``MD5(cookie ++ decimal(challenge))`` ("Definitions"); digests
are compared in constant time.  Flag values come from erts/emulator/beam/dist.h
(the documentation's ``1 bsl 36`` for MANDATORY_25_DIGEST is wrong: it is
``0x4000000``).

Flags (see docs/distribution.md for the reasoning): a beamlet node offers
:data:`BEAMLET_FLAGS` (plus :data:`DFLAG_PUBLISHED` unless hidden) and refuses
a peer lacking :data:`REQUIRED_FLAGS` -- the OTP 25 mandatory set plus what
OTP 26+ insists on (V4_NC, UNLINK_ID), so a beamlet node and OTP 26+ agree on
what a connection can carry.  The negotiated flags are the intersection, as in
OTP's ``dist_util:adjust_flags/2``.

Simultaneous connect ("send_status", codes ``ok_simultaneous`` and ``nok``):
when B has its own attempt to A pending, :func:`simultaneous_status` gives
the answer by comparing the node names literally; the node layer passes its
decision through the acceptor's ``status`` callback.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from beamlet.distribution.framing import FrameError, PacketReader, frame
from beamlet.terms import Atom

__all__ = [
    "BEAMLET_FLAGS",
    "DFLAG_ALIAS",
    "DFLAG_ATOM_CACHE",
    "DFLAG_BIG_CREATION",
    "DFLAG_BIG_SEQTRACE_LABELS",
    "DFLAG_BIT_BINARIES",
    "DFLAG_DIST_HDR_ATOM_CACHE",
    "DFLAG_DIST_MONITOR",
    "DFLAG_DIST_MONITOR_NAME",
    "DFLAG_EXIT_PAYLOAD",
    "DFLAG_EXPORT_PTR_TAG",
    "DFLAG_EXTENDED_PIDS_PORTS",
    "DFLAG_EXTENDED_REFERENCES",
    "DFLAG_FRAGMENTS",
    "DFLAG_FUN_TAGS",
    "DFLAG_HANDSHAKE_23",
    "DFLAG_HIDDEN_ATOM_CACHE",
    "DFLAG_MANDATORY_25_DIGEST",
    "DFLAG_MAP_TAG",
    "DFLAG_NAME_ME",
    "DFLAG_NEW_FLOATS",
    "DFLAG_NEW_FUN_TAGS",
    "DFLAG_PUBLISHED",
    "DFLAG_SEND_SENDER",
    "DFLAG_SMALL_ATOM_TAGS",
    "DFLAG_SPAWN",
    "DFLAG_UNICODE_IO",
    "DFLAG_UNLINK_ID",
    "DFLAG_UTF8_ATOMS",
    "DFLAG_V4_NC",
    "MANDATORY_25",
    "MANDATORY_26",
    "REQUIRED_FLAGS",
    "Acceptor",
    "Complete",
    "Event",
    "Failed",
    "Initiator",
    "Send",
    "digest",
    "flag_names",
    "simultaneous_status",
]

# -- capability flags (erts/emulator/beam/dist.h) --------------------------------

DFLAG_PUBLISHED: Final = 0x1
DFLAG_ATOM_CACHE: Final = 0x2
DFLAG_EXTENDED_REFERENCES: Final = 0x4
DFLAG_DIST_MONITOR: Final = 0x8
DFLAG_FUN_TAGS: Final = 0x10
DFLAG_DIST_MONITOR_NAME: Final = 0x20
DFLAG_HIDDEN_ATOM_CACHE: Final = 0x40
DFLAG_NEW_FUN_TAGS: Final = 0x80
DFLAG_EXTENDED_PIDS_PORTS: Final = 0x100
DFLAG_EXPORT_PTR_TAG: Final = 0x200
DFLAG_BIT_BINARIES: Final = 0x400
DFLAG_NEW_FLOATS: Final = 0x800
DFLAG_UNICODE_IO: Final = 0x1000
DFLAG_DIST_HDR_ATOM_CACHE: Final = 0x2000
DFLAG_SMALL_ATOM_TAGS: Final = 0x4000
DFLAG_UTF8_ATOMS: Final = 0x10000
DFLAG_MAP_TAG: Final = 0x20000
DFLAG_BIG_CREATION: Final = 0x40000
DFLAG_SEND_SENDER: Final = 0x80000
DFLAG_BIG_SEQTRACE_LABELS: Final = 0x100000
DFLAG_EXIT_PAYLOAD: Final = 0x400000
DFLAG_FRAGMENTS: Final = 0x800000
DFLAG_HANDSHAKE_23: Final = 0x1000000
DFLAG_UNLINK_ID: Final = 0x2000000
DFLAG_MANDATORY_25_DIGEST: Final = 0x4000000
DFLAG_SPAWN: Final = 0x1 << 32
DFLAG_NAME_ME: Final = 0x2 << 32
DFLAG_V4_NC: Final = 0x4 << 32
DFLAG_ALIAS: Final = 0x8 << 32

#: DFLAG_DIST_MANDATORY_25 in dist.h: a peer without these is refused by OTP 25+.
MANDATORY_25: Final = (
    DFLAG_EXTENDED_REFERENCES
    | DFLAG_FUN_TAGS
    | DFLAG_EXTENDED_PIDS_PORTS
    | DFLAG_UTF8_ATOMS
    | DFLAG_NEW_FUN_TAGS
    | DFLAG_BIG_CREATION
    | DFLAG_NEW_FLOATS
    | DFLAG_MAP_TAG
    | DFLAG_EXPORT_PTR_TAG
    | DFLAG_BIT_BINARIES
    | DFLAG_HANDSHAKE_23
)
#: DFLAG_DIST_MANDATORY_26 in dist.h: OTP 26+ also insists on these.
MANDATORY_26: Final = DFLAG_V4_NC | DFLAG_UNLINK_ID

#: What a beamlet node requires of its peer.
REQUIRED_FLAGS: Final = MANDATORY_25 | MANDATORY_26

#: What a beamlet node offers (DFLAG_PUBLISHED is added for visible nodes).
#: DFLAG_SPAWN is left out: a node that answers SPAWN_REQUEST adds it.
BEAMLET_FLAGS: Final = (
    REQUIRED_FLAGS
    | DFLAG_MANDATORY_25_DIGEST
    | DFLAG_DIST_MONITOR
    | DFLAG_DIST_MONITOR_NAME
    | DFLAG_UNICODE_IO
    | DFLAG_DIST_HDR_ATOM_CACHE
    | DFLAG_SMALL_ATOM_TAGS
    | DFLAG_SEND_SENDER
    | DFLAG_BIG_SEQTRACE_LABELS
    | DFLAG_EXIT_PAYLOAD
    | DFLAG_FRAGMENTS
    | DFLAG_ALIAS
)

_FLAG_NAMES: Final = {
    v: k[6:] for k, v in dict(globals()).items() if k.startswith("DFLAG_") and isinstance(v, int)
}


def flag_names(flags: int) -> list[str]:
    """The names of the bits set in ``flags`` (unknown bits as hex)."""
    names = []
    bit = 1
    while bit <= flags:
        if flags & bit:
            names.append(_FLAG_NAMES.get(bit, hex(bit)))
        bit <<= 1
    return names


def _effective(flags: int) -> int:
    # MANDATORY_25_DIGEST stands for "supports everything mandatory in OTP 25".
    if flags & DFLAG_MANDATORY_25_DIGEST:
        return flags | MANDATORY_25
    return flags


def digest(challenge: int, cookie: str | bytes) -> bytes:
    """``gen_digest(Challenge, Cookie)``: MD5 of the cookie then the decimal
    challenge (an unsigned 32-bit integer)."""
    c = cookie.encode() if isinstance(cookie, str) else cookie
    return hashlib.md5(c + str(challenge & 0xFFFFFFFF).encode()).digest()


def simultaneous_status(local_name: str, peer_name: str) -> str:
    """The status B sends to A when B has its own connection attempt to A
    pending ("send_status"): ``ok_simultaneous`` if A's name is greater
    (B gives up its attempt), else ``nok`` (A's attempt is refused)."""
    return "ok_simultaneous" if peer_name.encode() > local_name.encode() else "nok"


# -- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` (already framed) to the connection."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Complete:
    """The handshake succeeded.

    ``flags`` are the negotiated flags (ours & theirs); ``peer_flags`` what
    the peer offered.  ``leftover`` are bytes received after the handshake's
    last message: the start of the 4-byte-framed stream.
    """

    peer_name: Atom
    peer_flags: int
    peer_creation: int
    flags: int
    leftover: bytes = b""

    @property
    def peer_hidden(self) -> bool:
        return not self.peer_flags & DFLAG_PUBLISHED


@dataclass(frozen=True, slots=True)
class Failed:
    """The handshake failed; close the connection.

    ``reason`` is one of: ``bad_cookie``, ``missing_flags``, ``protocol``
    (malformed or unexpected message), ``status`` (the acceptor refused us:
    see ``status``), ``refused`` (we refused the peer: see ``status``),
    ``wrong_node`` (the peer is not the node we meant to reach),
    ``unsupported``.
    """

    reason: str
    detail: str
    status: str | None = None


Event = Send | Complete | Failed

_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_name_msg = struct.Struct(">cQIH")  # 'N', flags, creation, nlen
_challenge_msg = struct.Struct(">cQIIH")  # 'N', flags, challenge, creation, nlen
_reply_msg = struct.Struct(">cI16s")  # 'r', challenge, digest


class _HandshakeError(Exception):
    def __init__(self, reason: str, detail: str, status: str | None = None) -> None:
        super().__init__(detail)
        self.failure = Failed(reason, detail, status)


def _proto(detail: str) -> _HandshakeError:
    return _HandshakeError("protocol", detail)


def _decode_name(raw: bytes) -> Atom:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _proto(f"node name is not UTF-8: {raw[:60]!r}") from None
    if "@" not in name or len(name) > 255:
        raise _proto(f"malformed node name {name[:80]!r}")
    return Atom(name)


def _random_u32() -> int:
    return secrets.randbits(32)


class _Machine:
    """What both sides share: framing, the state, the result."""

    def __init__(
        self,
        name: str,
        cookie: str | bytes,
        creation: int,
        flags: int | None,
        hidden: bool,
        challenge: Callable[[], int] | None,
    ) -> None:
        self.name = Atom(name)
        self.cookie = cookie
        self.creation = creation & 0xFFFFFFFF
        base = BEAMLET_FLAGS if flags is None else flags
        self.flags = (base & ~DFLAG_PUBLISHED) | (0 if hidden else DFLAG_PUBLISHED)
        self.flags |= DFLAG_HANDSHAKE_23
        self._challenge_source = challenge or _random_u32
        self._reader = PacketReader(2, max_size=4096)
        self.state = "start"
        self.result: Complete | Failed | None = None

    @property
    def done(self) -> bool:
        return self.result is not None

    def _send(self, payload: bytes) -> Send:
        return Send(frame(payload, 2))

    def _check_flags(self, peer_flags: int) -> None:
        missing = REQUIRED_FLAGS & ~_effective(peer_flags)
        if missing:
            raise _HandshakeError(
                "missing_flags",
                "peer lacks mandatory distribution flags: " + ", ".join(flag_names(missing)),
            )

    def _new_challenge(self, avoid: int | None = None) -> int:
        for _ in range(16):
            c = self._challenge_source() & 0xFFFFFFFF
            if c != avoid:
                return c
        raise RuntimeError("challenge source keeps returning the peer's challenge")

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes read from the connection; returns the resulting events."""
        if self.result is not None:
            raise RuntimeError("the handshake is already over")
        events: list[Event] = []
        reader = self._reader
        reader.append(data)
        try:
            while self.result is None:
                msg = reader.next_packet()
                if msg is None:
                    break
                events.extend(self._handle(msg))
            if isinstance(self.result, Complete):
                # Whatever follows belongs to the 4-byte-framed phase.
                self.result = _with_leftover(self.result, reader.take_buffered())
                events[-1] = self.result
        except _HandshakeError as e:
            self.result = e.failure
            self.state = "failed"
            events.append(e.failure)
        except FrameError as e:
            self.result = Failed("protocol", str(e))
            self.state = "failed"
            events.append(self.result)
        return events

    def _handle(self, msg: bytes) -> list[Event]:
        raise NotImplementedError

    def _complete(self, peer: Atom, peer_flags: int, peer_creation: int) -> Complete:
        self.state = "connected"
        self.result = Complete(peer, peer_flags, peer_creation, self.flags & peer_flags)
        return self.result


def _with_leftover(c: Complete, rest: bytes) -> Complete:
    return Complete(c.peer_name, c.peer_flags, c.peer_creation, c.flags, rest)


class Initiator(_Machine):
    """Node A: the side that connected.

    ``start()`` returns the ``send_name`` message; then feed ``receive()``.
    ``peer_name``, if given, is the node we meant to reach: a challenge from
    another name fails with ``wrong_node``.  ``challenge`` is a source of
    32-bit challenges (random by default; tests pass a fixed one).
    """

    def __init__(
        self,
        name: str,
        cookie: str | bytes,
        creation: int,
        *,
        peer_name: str | None = None,
        flags: int | None = None,
        hidden: bool = False,
        challenge: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(name, cookie, creation, flags, hidden, challenge)
        self.peer_name = None if peer_name is None else Atom(peer_name)
        self._my_challenge = 0
        self._peer: tuple[Atom, int, int] | None = None

    def start(self) -> list[Event]:
        """Step 2, ``send_name`` (new format, 'N', version 6)."""
        if self.state != "start":
            raise RuntimeError("start() was already called")
        raw = self.name.encode()
        self.state = "recv_status"
        return [
            self._send(_name_msg.pack(b"N", self.flags, self.creation, len(raw)) + raw),
        ]

    def _handle(self, msg: bytes) -> list[Event]:
        if not msg:
            raise _proto("empty handshake message")
        tag = msg[:1]
        if self.state == "recv_status":
            if tag != b"s":
                raise _proto(f"expected a status message, got {msg[:20]!r}")
            return self._recv_status(msg[1:].decode("latin-1"))
        if self.state == "recv_challenge":
            if tag != b"N":
                raise _proto(f"expected a challenge ('N'), got {msg[:20]!r}")
            return self._recv_challenge(msg)
        if self.state == "recv_ack":
            if tag != b"a" or len(msg) != 17:
                raise _proto(f"expected challenge_ack ('a' + 16 bytes), got {msg[:20]!r}")
            if not hmac.compare_digest(msg[1:], digest(self._my_challenge, self.cookie)):
                raise _HandshakeError(
                    "bad_cookie", "the peer's digest does not match: the cookies differ"
                )
            assert self._peer is not None
            return [self._complete(*self._peer)]
        raise _proto(f"unexpected message in state {self.state}")

    def _recv_status(self, status: str) -> list[Event]:
        """Step 3 (and 3B for ``alive``)."""
        if status in ("ok", "ok_simultaneous"):
            self.state = "recv_challenge"
            return []
        if status == "alive":
            # B thinks we are already connected; we are the one connecting,
            # so that connection is stale: tell B to go on (3B).
            self.state = "recv_challenge"
            return [self._send(b"strue")]
        if status.startswith("named:"):
            raise _HandshakeError(
                "unsupported", "dynamic node names (DFLAG_NAME_ME) are not supported", status
            )
        if status in ("nok", "not_allowed"):
            raise _HandshakeError("status", f"the peer refused the connection: {status}", status)
        raise _HandshakeError("status", f"unknown status {status[:40]!r}", status)

    def _recv_challenge(self, msg: bytes) -> list[Event]:
        """Step 4, then step 5 ``send_challenge_reply``."""
        if len(msg) < _challenge_msg.size:
            raise _proto("truncated challenge message")
        _, flags, challenge, creation, nlen = _challenge_msg.unpack_from(msg)
        raw = msg[_challenge_msg.size : _challenge_msg.size + nlen]
        if len(raw) != nlen:
            raise _proto("truncated node name in the challenge")
        peer = _decode_name(raw)
        if self.peer_name is not None and peer != self.peer_name:
            raise _HandshakeError("wrong_node", f"connected to {peer}, expected {self.peer_name}")
        self._check_flags(flags)
        self._peer = (peer, flags, creation)
        self._my_challenge = self._new_challenge(avoid=challenge)
        self.state = "recv_ack"
        reply = _reply_msg.pack(b"r", self._my_challenge, digest(challenge, self.cookie))
        return [self._send(reply)]


class Acceptor(_Machine):
    """Node B: the side that accepted the connection.

    ``status(peer_name, peer_flags, peer_creation)`` decides the status sent
    in step 3: ``"ok"`` (the default), ``"ok_simultaneous"``, ``"nok"``,
    ``"not_allowed"`` or ``"alive"`` (see :func:`simultaneous_status`).  After
    ``alive`` the peer's answer ``true`` continues (the node must drop its
    old connection to the peer; :attr:`replaces_existing` is then True) and
    ``false`` ends the handshake.
    """

    def __init__(
        self,
        name: str,
        cookie: str | bytes,
        creation: int,
        *,
        flags: int | None = None,
        hidden: bool = False,
        status: Callable[[Atom, int, int], str] | None = None,
        challenge: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(name, cookie, creation, flags, hidden, challenge)
        self._status = status
        self.state = "recv_name"
        self._my_challenge = 0
        self._peer: tuple[Atom, int, int] | None = None
        self._old_name = False
        self.replaces_existing = False

    def _handle(self, msg: bytes) -> list[Event]:
        if not msg:
            raise _proto("empty handshake message")
        tag = msg[:1]
        if self.state == "recv_name":
            if tag == b"N":
                return self._recv_name(msg)
            if tag == b"n":
                return self._recv_old_name(msg)
            raise _proto(f"expected send_name ('N' or 'n'), got {msg[:20]!r}")
        if self.state == "recv_alive_answer":
            if msg == b"strue":
                self.replaces_existing = True
                return self._send_challenge()
            if msg == b"sfalse":
                raise _HandshakeError("status", "the peer withdrew after 'alive'", "false")
            raise _proto(f"expected status true/false after 'alive', got {msg[:20]!r}")
        if self.state == "recv_complement":
            if tag != b"c" or len(msg) < 9:
                raise _proto(f"expected complement ('c'), got {msg[:20]!r}")
            high, creation = struct.unpack_from(">II", msg, 1)
            assert self._peer is not None
            peer, flags, _ = self._peer
            self._peer = (peer, flags | (high << 32), creation)
            self._check_flags(self._peer[1])
            self.state = "recv_reply"
            return []
        if self.state == "recv_reply":
            return self._recv_reply(msg)
        raise _proto(f"unexpected message in state {self.state}")

    def _recv_name(self, msg: bytes) -> list[Event]:
        """Step 2, ``recv_name`` (new format)."""
        if len(msg) < _name_msg.size:
            raise _proto("truncated send_name message")
        _, flags, creation, nlen = _name_msg.unpack_from(msg)
        raw = msg[_name_msg.size : _name_msg.size + nlen]
        if len(raw) != nlen:
            raise _proto("truncated node name in send_name")
        if flags & DFLAG_NAME_ME:
            return self._refuse(
                "not_allowed", "unsupported", "dynamic node names (DFLAG_NAME_ME) not supported"
            )
        peer = _decode_name(raw)
        self._check_flags(flags)
        self._peer = (peer, flags, creation)
        return self._send_status()

    def _recv_old_name(self, msg: bytes) -> list[Event]:
        """Step 2 with the old 'n' message (an OTP 23/24 node not using EPMD):
        version 5, 32-bit flags; the rest comes in the complement (4B)."""
        if len(msg) < 7:
            raise _proto("truncated old send_name message")
        version, flags = struct.unpack_from(">HI", msg, 1)
        if version != 5 or not flags & DFLAG_HANDSHAKE_23:
            return self._refuse(
                "not_allowed", "unsupported", "peer only speaks handshake version 5"
            )
        self._old_name = True
        self._peer = (_decode_name(msg[7:]), flags, 0)
        return self._send_status()

    def _refuse(self, status: str, reason: str, detail: str) -> list[Event]:
        failure = Failed(reason, detail, status)
        self.result = failure
        self.state = "failed"
        return [self._send(b"s" + status.encode()), failure]

    def _send_status(self) -> list[Event]:
        """Step 3, ``send_status``."""
        assert self._peer is not None
        status = "ok" if self._status is None else self._status(*self._peer)
        if status in ("ok", "ok_simultaneous"):
            return [self._send(b"s" + status.encode()), *self._send_challenge()]
        if status == "alive":
            self.state = "recv_alive_answer"
            return [self._send(b"salive")]
        if status in ("nok", "not_allowed"):
            return self._refuse(status, "refused", f"refused {self._peer[0]}: {status}")
        raise ValueError(f"the status callback returned an unknown status {status!r}")

    def _send_challenge(self) -> list[Event]:
        """Step 4, ``send_challenge`` (new format)."""
        raw = self.name.encode()
        self._my_challenge = self._new_challenge()
        self.state = "recv_complement" if self._old_name else "recv_reply"
        msg = _challenge_msg.pack(b"N", self.flags, self._my_challenge, self.creation, len(raw))
        return [self._send(msg + raw)]

    def _recv_reply(self, msg: bytes) -> list[Event]:
        """Step 5 ``recv_challenge_reply``, check, step 6 ``send_challenge_ack``."""
        if msg[:1] != b"r" or len(msg) != _reply_msg.size:
            raise _proto(f"expected challenge_reply ('r' + 20 bytes), got {msg[:24]!r}")
        _, peer_challenge, their_digest = _reply_msg.unpack(msg)
        if not hmac.compare_digest(their_digest, digest(self._my_challenge, self.cookie)):
            raise _HandshakeError(
                "bad_cookie", "the peer's digest does not match: the cookies differ"
            )
        if peer_challenge == self._my_challenge:
            raise _proto("the peer echoed our own challenge back")
        assert self._peer is not None
        ack = self._send(b"a" + digest(peer_challenge, self.cookie))
        return [ack, self._complete(*self._peer)]
