"""Distribution control messages, the distribution header and fragments.

Implements erl_dist_protocol.md, "Protocol between Connected Nodes" (the
control messages, with the OTP 21-24 additions) and erl_ext_dist.md,
"Distribution Header" (the atom cache references, "Normal Distribution
Header") and "Distribution Header for fragmented messages".

A packet body (what is inside one 4-byte-framed packet) is either

* pass-through: ``112``, then the control term and the optional payload,
  each a complete ``term_to_binary`` (starting with 131); or
* with a distribution header: ``131, 68, atom cache refs...``, then the
  control term and the payload *without* their 131 version bytes; or a
  fragment of a large message: ``131, 69`` (first) / ``131, 70`` (rest).

Which one a connection uses is decided by the negotiated flags exactly as
erts does (``erts_prepare_dist_ext`` in dist.c): once ``DIST_HDR_ATOM_CACHE``
or ``FRAGMENTS`` is negotiated, every packet carries a header.  beamlet
offers both (see docs/distribution.md): it decodes atom cache references and
reassembles fragments, and when it sends it writes a header that references
no atoms (allowed: ``NumberOfAtomCacheRefs`` = 0).

Per connection, use one :class:`DistDecoder` (inbound: it holds the atom
cache and the fragments being reassembled, bounded in memory) and one
:class:`DistEncoder` (outbound).  Neither touches a socket; both are meant
to be used by one thread at a time (the connection's reader / writer).

The control message classes below are named after the spec (``Link`` is
LINK, ``PayloadExit`` is PAYLOAD_EXIT, ...); ``HAS_PAYLOAD`` tells whether a
message (or reason, or argument list) follows the control term.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, TypeVar

from beamlet.distribution.etf import (
    DEFAULT_CONTEXT,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_EQUAL_HASHES,
    ETFContext,
    ETFDecodeError,
    decode_term,
    encode_term,
    encode_term_into,
)
from beamlet.distribution.handshake import DFLAG_DIST_HDR_ATOM_CACHE, DFLAG_FRAGMENTS
from beamlet.distribution.limits import brief
from beamlet.terms import Atom, Pid, Ref

__all__ = [
    "NO_PAYLOAD",
    "PASS_THROUGH",
    "AliasSend",
    "AliasSendTT",
    "AtomCache",
    "Control",
    "ControlDecodeError",
    "DemonitorP",
    "DistDecoder",
    "DistEncoder",
    "DistHeaderError",
    "Exit",
    "Exit2",
    "Exit2TT",
    "ExitTT",
    "GroupLeader",
    "Link",
    "MonitorP",
    "MonitorPExit",
    "NodeLink",
    "PayloadExit",
    "PayloadExit2",
    "PayloadExit2TT",
    "PayloadExitTT",
    "PayloadMonitorPExit",
    "RegSend",
    "RegSendTT",
    "Send",
    "SendSender",
    "SendSenderTT",
    "SendTT",
    "SpawnReply",
    "SpawnReplyTT",
    "SpawnRequest",
    "SpawnRequestTT",
    "UnknownControl",
    "Unlink",
    "UnlinkId",
    "UnlinkIdAck",
    "decode_control",
    "uses_dist_header",
]

PASS_THROUGH: Final = 112
VERSION: Final = 131
DIST_HEADER: Final = 68
DIST_FRAG_HEADER: Final = 69
DIST_FRAG_CONT: Final = 70

_UNUSED: Final = "_unused"  # layout slot that is sent as '' and ignored on receipt
_EMPTY_ATOM: Final = Atom("")


class ControlDecodeError(ETFDecodeError):
    """A malformed distribution packet (header, fragment or control tuple)."""


class DistHeaderError(ControlDecodeError):
    """A malformed atom cache section of a distribution header.  The atom
    cache may now differ from the sender's: the connection must be closed."""


# -- control messages ----------------------------------------------------------------


class Control:
    """Base of the control messages.  ``TAG`` is the first tuple element,
    ``HAS_PAYLOAD`` whether a term follows the control tuple."""

    __slots__ = ()

    TAG: ClassVar[int]
    HAS_PAYLOAD: ClassVar[bool] = False
    #: Field names in tuple order after the tag; ``_unused`` slots are sent as ''.
    LAYOUT: ClassVar[tuple[str, ...]]

    def to_tuple(self) -> tuple[Any, ...]:
        return (self.TAG, *(_EMPTY_ATOM if f == _UNUSED else getattr(self, f) for f in self.LAYOUT))


_BY_TAG: dict[int, type[Control]] = {}
_C = TypeVar("_C", bound=type[Control])


def _control(tag: int, layout: str, payload: bool = False) -> Callable[[_C], _C]:
    def register(cls: _C) -> _C:
        cls.TAG = tag
        cls.HAS_PAYLOAD = payload
        cls.LAYOUT = tuple(layout.split())
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        assert set(cls.LAYOUT) - {_UNUSED} == names, cls
        _BY_TAG[tag] = cls
        return cls

    return register


@_control(1, "from_pid to_pid")
@dataclass(frozen=True, slots=True)
class Link(Control):
    """LINK ``{1, FromPid, ToPid}``."""

    from_pid: Pid
    to_pid: Pid


@_control(2, "_unused to_pid", payload=True)
@dataclass(frozen=True, slots=True)
class Send(Control):
    """SEND ``{2, Unused, ToPid}``, followed by the message."""

    to_pid: Pid


@_control(3, "from_pid to_pid reason")
@dataclass(frozen=True, slots=True)
class Exit(Control):
    """EXIT ``{3, FromPid, ToPid, Reason}``: a link broke."""

    from_pid: Pid
    to_pid: Pid
    reason: Any


@_control(4, "from_pid to_pid")
@dataclass(frozen=True, slots=True)
class Unlink(Control):
    """UNLINK ``{4, FromPid, ToPid}`` (obsolete; refused by OTP 26+)."""

    from_pid: Pid
    to_pid: Pid


@_control(5, "")
@dataclass(frozen=True, slots=True)
class NodeLink(Control):
    """NODE_LINK ``{5}``."""


@_control(6, "from_pid _unused to_name", payload=True)
@dataclass(frozen=True, slots=True)
class RegSend(Control):
    """REG_SEND ``{6, FromPid, Unused, ToName}``, followed by the message."""

    from_pid: Pid
    to_name: Atom


@_control(7, "from_pid to_pid")
@dataclass(frozen=True, slots=True)
class GroupLeader(Control):
    """GROUP_LEADER ``{7, FromPid, ToPid}``."""

    from_pid: Pid
    to_pid: Pid


@_control(8, "from_pid to_pid reason")
@dataclass(frozen=True, slots=True)
class Exit2(Control):
    """EXIT2 ``{8, FromPid, ToPid, Reason}``: ``erlang:exit/2``."""

    from_pid: Pid
    to_pid: Pid
    reason: Any


@_control(12, "_unused to_pid trace_token", payload=True)
@dataclass(frozen=True, slots=True)
class SendTT(Control):
    """SEND_TT ``{12, Unused, ToPid, TraceToken}``, followed by the message."""

    to_pid: Pid
    trace_token: Any


@_control(13, "from_pid to_pid trace_token reason")
@dataclass(frozen=True, slots=True)
class ExitTT(Control):
    """EXIT_TT ``{13, FromPid, ToPid, TraceToken, Reason}``."""

    from_pid: Pid
    to_pid: Pid
    trace_token: Any
    reason: Any


@_control(16, "from_pid _unused to_name trace_token", payload=True)
@dataclass(frozen=True, slots=True)
class RegSendTT(Control):
    """REG_SEND_TT ``{16, FromPid, Unused, ToName, TraceToken}`` + message."""

    from_pid: Pid
    to_name: Atom
    trace_token: Any


@_control(18, "from_pid to_pid trace_token reason")
@dataclass(frozen=True, slots=True)
class Exit2TT(Control):
    """EXIT2_TT ``{18, FromPid, ToPid, TraceToken, Reason}``."""

    from_pid: Pid
    to_pid: Pid
    trace_token: Any
    reason: Any


@_control(19, "from_pid to_proc ref")
@dataclass(frozen=True, slots=True)
class MonitorP(Control):
    """MONITOR_P ``{19, FromPid, ToProc, Ref}``; ToProc is a pid or a name."""

    from_pid: Pid
    to_proc: Pid | Atom
    ref: Ref


@_control(20, "from_pid to_proc ref")
@dataclass(frozen=True, slots=True)
class DemonitorP(Control):
    """DEMONITOR_P ``{20, FromPid, ToProc, Ref}``."""

    from_pid: Pid
    to_proc: Pid | Atom
    ref: Ref


@_control(21, "from_proc to_pid ref reason")
@dataclass(frozen=True, slots=True)
class MonitorPExit(Control):
    """MONITOR_P_EXIT ``{21, FromProc, ToPid, Ref, Reason}``: a DOWN."""

    from_proc: Pid | Atom
    to_pid: Pid
    ref: Ref
    reason: Any


@_control(22, "from_pid to_pid", payload=True)
@dataclass(frozen=True, slots=True)
class SendSender(Control):
    """SEND_SENDER ``{22, FromPid, ToPid}`` + message (OTP 21)."""

    from_pid: Pid
    to_pid: Pid


@_control(23, "from_pid to_pid trace_token", payload=True)
@dataclass(frozen=True, slots=True)
class SendSenderTT(Control):
    """SEND_SENDER_TT ``{23, FromPid, ToPid, TraceToken}`` + message."""

    from_pid: Pid
    to_pid: Pid
    trace_token: Any


@_control(24, "from_pid to_pid", payload=True)
@dataclass(frozen=True, slots=True)
class PayloadExit(Control):
    """PAYLOAD_EXIT ``{24, FromPid, ToPid}`` + reason (OTP 22)."""

    from_pid: Pid
    to_pid: Pid


@_control(25, "from_pid to_pid trace_token", payload=True)
@dataclass(frozen=True, slots=True)
class PayloadExitTT(Control):
    """PAYLOAD_EXIT_TT ``{25, FromPid, ToPid, TraceToken}`` + reason."""

    from_pid: Pid
    to_pid: Pid
    trace_token: Any


@_control(26, "from_pid to_pid", payload=True)
@dataclass(frozen=True, slots=True)
class PayloadExit2(Control):
    """PAYLOAD_EXIT2 ``{26, FromPid, ToPid}`` + reason."""

    from_pid: Pid
    to_pid: Pid


@_control(27, "from_pid to_pid trace_token", payload=True)
@dataclass(frozen=True, slots=True)
class PayloadExit2TT(Control):
    """PAYLOAD_EXIT2_TT ``{27, FromPid, ToPid, TraceToken}`` + reason."""

    from_pid: Pid
    to_pid: Pid
    trace_token: Any


@_control(28, "from_proc to_pid ref", payload=True)
@dataclass(frozen=True, slots=True)
class PayloadMonitorPExit(Control):
    """PAYLOAD_MONITOR_P_EXIT ``{28, FromProc, ToPid, Ref}`` + reason."""

    from_proc: Pid | Atom
    to_pid: Pid
    ref: Ref


@_control(29, "req_id from_pid group_leader mfa opts", payload=True)
@dataclass(frozen=True, slots=True)
class SpawnRequest(Control):
    """SPAWN_REQUEST ``{29, ReqId, From, GroupLeader, {M, F, A}, OptList}``
    + argument list (OTP 23)."""

    req_id: Ref
    from_pid: Pid
    group_leader: Pid
    mfa: tuple[Atom, Atom, int]
    opts: list[Any]


@_control(30, "req_id from_pid group_leader mfa opts trace_token", payload=True)
@dataclass(frozen=True, slots=True)
class SpawnRequestTT(Control):
    """SPAWN_REQUEST_TT: SPAWN_REQUEST with a trace token."""

    req_id: Ref
    from_pid: Pid
    group_leader: Pid
    mfa: tuple[Atom, Atom, int]
    opts: list[Any]
    trace_token: Any


@_control(31, "req_id to_pid flags result")
@dataclass(frozen=True, slots=True)
class SpawnReply(Control):
    """SPAWN_REPLY ``{31, ReqId, To, Flags, Result}``; Result is the new pid
    or an error atom; flags: 1 = linked, 2 = monitored."""

    req_id: Ref
    to_pid: Pid
    flags: int
    result: Pid | Atom


@_control(32, "req_id to_pid flags result trace_token")
@dataclass(frozen=True, slots=True)
class SpawnReplyTT(Control):
    """SPAWN_REPLY_TT: SPAWN_REPLY with a trace token."""

    req_id: Ref
    to_pid: Pid
    flags: int
    result: Pid | Atom
    trace_token: Any


@_control(33, "from_pid alias", payload=True)
@dataclass(frozen=True, slots=True)
class AliasSend(Control):
    """ALIAS_SEND ``{33, FromPid, Alias}`` + message (OTP 24)."""

    from_pid: Pid
    alias: Ref


@_control(34, "from_pid alias trace_token", payload=True)
@dataclass(frozen=True, slots=True)
class AliasSendTT(Control):
    """ALIAS_SEND_TT ``{34, FromPid, Alias, Token}`` + message."""

    from_pid: Pid
    alias: Ref
    trace_token: Any


@_control(35, "id from_pid to_pid")
@dataclass(frozen=True, slots=True)
class UnlinkId(Control):
    """UNLINK_ID ``{35, Id, FromPid, ToPid}`` (the new link protocol)."""

    id: int
    from_pid: Pid
    to_pid: Pid


@_control(36, "id from_pid to_pid")
@dataclass(frozen=True, slots=True)
class UnlinkIdAck(Control):
    """UNLINK_ID_ACK ``{36, Id, FromPid, ToPid}``."""

    id: int
    from_pid: Pid
    to_pid: Pid


@dataclass(frozen=True, slots=True)
class UnknownControl(Control):
    """A control tuple with a tag this module does not know (a newer OTP).
    Kept whole so the node can log it; ``HAS_PAYLOAD`` is per instance."""

    elements: tuple[Any, ...]
    has_payload: bool = False

    def to_tuple(self) -> tuple[Any, ...]:
        return self.elements


def decode_control(term: Any) -> Control:
    """Turn a decoded control tuple into its message class."""
    if type(term) is not tuple or not term or type(term[0]) is not int:
        raise ControlDecodeError(
            f"control message is not a tuple with an integer tag: {brief(term)}"
        )
    cls = _BY_TAG.get(term[0])
    if cls is None:
        return UnknownControl(term)
    layout = cls.LAYOUT
    if len(term) != len(layout) + 1:
        raise ControlDecodeError(
            f"{cls.__name__} needs {len(layout) + 1} elements, got {len(term)}: {brief(term)}"
        )
    kwargs = {name: v for name, v in zip(layout, term[1:], strict=True) if name != _UNUSED}
    return cls(**kwargs)


# -- atom cache (erl_ext_dist.md "Normal Distribution Header") ------------------------


class AtomCache:
    """The receive-side atom cache of one connection: 8 segments of 256
    entries, filled by ``NewAtomCacheRef`` entries of distribution headers."""

    __slots__ = ("_slots", "generation")

    def __init__(self) -> None:
        self._slots: list[Any] = [None] * 2048
        #: Bumped whenever an entry is stored: what was resolved before may differ now.
        self.generation = 0
        # A slot holds the decoded atom value (Atom, True, False or None for
        # 'undefined'), boxed in a 1-tuple so "empty" is distinguishable.

    @property
    def size(self) -> int:
        """Number of filled entries."""
        return sum(1 for s in self._slots if s is not None)

    def parse_header(self, buf: bytes, pos: int) -> tuple[list[Any], int]:
        """Parse NumberOfAtomCacheRefs, Flags and AtomCacheRefs at ``pos``.

        Returns the atoms the ATOM_CACHE_REF indices of the following terms
        refer to, and the offset after the header.  New entries are stored.
        """
        if pos >= len(buf):
            raise DistHeaderError("truncated distribution header")
        n = buf[pos]
        pos += 1
        if n == 0:
            return [], pos
        nflags = n // 2 + 1
        if pos + nflags > len(buf):
            raise DistHeaderError("truncated atom cache flags")
        flag_bytes = buf[pos : pos + nflags]
        pos += nflags

        def half(i: int) -> int:
            b = flag_bytes[i // 2]
            return (b >> 4) if i & 1 else (b & 0x0F)

        long_atoms = half(n) & 1
        refs: list[Any] = []
        slots = self._slots
        for i in range(n):
            f = half(i)
            segment = f & 0x7
            if pos >= len(buf):
                raise DistHeaderError("truncated atom cache reference")
            index = segment * 256 + buf[pos]
            pos += 1
            if f & 0x8:  # NewCacheEntryFlag
                if long_atoms:
                    if pos + 2 > len(buf):
                        raise DistHeaderError("truncated atom cache entry")
                    (length,) = struct.unpack_from(">H", buf, pos)
                    pos += 2
                else:
                    if pos >= len(buf):
                        raise DistHeaderError("truncated atom cache entry")
                    length = buf[pos]
                    pos += 1
                if pos + length > len(buf):
                    raise DistHeaderError("truncated atom text in the atom cache")
                raw = bytes(buf[pos : pos + length])
                pos += length
                # decode through the ETF decoder so true/false/undefined map
                # as everywhere else
                head = (
                    b"w" + bytes((length,)) if length <= 255 else b"v" + struct.pack(">H", length)
                )
                try:
                    value, _ = decode_term(head + raw)
                except ETFDecodeError as e:
                    raise DistHeaderError(f"bad atom in the atom cache: {e}") from e
                slots[index] = (value,)
                self.generation += 1
                refs.append(value)
            else:
                entry = slots[index]
                if entry is None:
                    raise DistHeaderError(
                        f"atom cache reference to empty slot {segment}:{index % 256}"
                    )
                refs.append(entry[0])
        return refs, pos


# -- decoding packets -----------------------------------------------------------------


def uses_dist_header(flags: int) -> bool:
    """Whether packets on a connection with these negotiated flags carry a
    distribution header (erts: ``DFLAG_DIST_HDR_ATOM_CACHE | DFLAG_FRAGMENTS``)."""
    return bool(flags & (DFLAG_DIST_HDR_ATOM_CACHE | DFLAG_FRAGMENTS))


@dataclass
class _Sequence:
    atoms: list[Any]
    next_fragment: int  # the fragment id expected next
    chunks: list[bytes]
    size: int


_unpack_seq = struct.Struct(">QQ").unpack_from

#: Defaults for the reassembly bounds of :class:`DistDecoder`.
DEFAULT_MAX_MESSAGE: Final = 128 * 1024 * 1024
DEFAULT_MAX_SEQUENCES: Final = 1024


class DistDecoder:
    """Decode the packets of one connection into ``(control, payload)``.

    ``decode(packet)`` takes the body of one 4-byte-framed packet (not a
    tick) and returns ``(control, payload)`` -- ``payload`` is None for
    control messages without one -- or None when the packet was a fragment
    of a message not yet complete.  Raises ``ETFDecodeError`` (a
    ``ValueError``; :class:`ControlDecodeError` for header, fragment and
    control-tuple problems) for a malformed packet.  A bad *term* leaves the
    decoder usable (drop that message, keep the connection); a bad header
    means the peer and we disagree on the atom cache: close the connection.

    Memory is bounded: a message larger than ``max_message`` bytes, or more
    than ``max_sequences`` fragmented messages in flight, is refused; so is a
    term nested deeper than ``max_depth``, with more than ``max_elements``
    list, tuple and map elements, or a map with more than ``max_equal_hashes``
    keys of one hash value (see :func:`beamlet.distribution.etf.decode_term`).
    """

    def __init__(
        self,
        ctx: ETFContext = DEFAULT_CONTEXT,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_sequences: int = DEFAULT_MAX_SEQUENCES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_elements: int | None = DEFAULT_MAX_ELEMENTS,
        max_equal_hashes: int = DEFAULT_MAX_EQUAL_HASHES,
    ) -> None:
        self.ctx = ctx
        self.atom_cache = AtomCache()
        self.max_message = max_message
        self.max_sequences = max_sequences
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.max_equal_hashes = max_equal_hashes
        self._sequences: dict[int, _Sequence] = {}
        self._buffered = 0
        # Headers that store no atom, and the control term that last followed
        # each: a stream of messages between the same two processes repeats both
        # byte for byte, so the second time they cost a lookup and a compare.
        # Valid while the atom cache is unchanged (the header's refs resolve the
        # same), so emptied when it changes.
        self._known: dict[bytes, tuple[list[Any], bytes | None, Control | None]] = {}
        self._known_generation = 0
        #: Messages received in more than one fragment (a statistic).
        self.fragmented_messages = 0

    @property
    def pending_fragments(self) -> int:
        """Number of fragmented messages being reassembled."""
        return len(self._sequences)

    def decode(self, packet: bytes) -> tuple[Control, Any] | None:
        if not packet:
            raise ControlDecodeError("empty packet (a tick) is not a message")
        first = packet[0]
        if first == PASS_THROUGH:
            return self._decode_body(packet, 1, None, versioned=True)
        if first != VERSION or len(packet) < 2:
            raise ControlDecodeError(f"unknown packet type {first}")
        kind = packet[1]
        if kind == DIST_HEADER:
            return self._decode_normal(packet)
        if kind == DIST_FRAG_HEADER:
            return self._first_fragment(packet)
        if kind == DIST_FRAG_CONT:
            return self._continuation(packet)
        raise ControlDecodeError(f"unknown distribution header kind {kind}")

    def _decode_normal(self, packet: bytes) -> tuple[Control, Any]:
        """A packet with a normal distribution header (``131, 68``)."""
        cache = self.atom_cache
        known = self._known
        if self._known_generation != cache.generation:
            known.clear()
            self._known_generation = cache.generation
        # The header's length if it stores no new atom: count, flags, one byte per ref.
        n = packet[2] if len(packet) > 2 else 0
        hend = 3 + n // 2 + 1 + n if n else 3
        key = packet[2:hend]
        hit = known.get(key)
        if hit is not None:
            atoms, ctl_bytes, control = hit
            if ctl_bytes is not None and control is not None and packet.startswith(ctl_bytes, hend):
                return self._decode_payload(packet, hend + len(ctl_bytes), atoms, control, False)
            return self._decode_body(packet, hend, atoms, versioned=False, remember=key)
        atoms, pos = cache.parse_header(packet, 2)
        if cache.generation != self._known_generation or pos != hend:  # it stored atoms
            return self._decode_body(packet, pos, atoms, versioned=False)
        if len(known) >= 256:
            known.clear()
        return self._decode_body(packet, pos, atoms, versioned=False, remember=key)

    def _decode_body(
        self,
        buf: bytes,
        pos: int,
        atoms: list[Any] | None,
        *,
        versioned: bool,
        remember: bytes | None = None,
    ) -> tuple[Control, Any]:
        if versioned:
            pos = self._version(buf, pos)
        start = pos
        ctl_term, pos = self._term(buf, pos, atoms)
        control = decode_control(ctl_term)
        if remember is not None and atoms is not None:
            if isinstance(control, UnknownControl):  # its payload flag is per packet
                self._known[remember] = (atoms, None, None)
            else:
                self._known[remember] = (atoms, buf[start:pos], control)
        return self._decode_payload(buf, pos, atoms, control, versioned)

    def _term(self, buf: bytes, pos: int, atoms: list[Any] | None) -> tuple[Any, int]:
        return decode_term(
            buf,
            pos,
            self.ctx,
            atom_cache=atoms,
            max_depth=self.max_depth,
            max_elements=self.max_elements,
            max_equal_hashes=self.max_equal_hashes,
        )

    @staticmethod
    def _version(buf: bytes, at: int) -> int:
        """Past the version byte that starts each term of a pass-through packet."""
        if at >= len(buf) or buf[at] != VERSION:
            raise ControlDecodeError(f"expected version byte 131 at offset {at}")
        return at + 1

    def _decode_payload(
        self, buf: bytes, pos: int, atoms: list[Any] | None, control: Control, versioned: bool
    ) -> tuple[Control, Any]:
        def term(at: int) -> tuple[Any, int]:
            if versioned:
                at = self._version(buf, at)
            return self._term(buf, at, atoms)

        if isinstance(control, UnknownControl):
            if pos < len(buf):
                payload, pos = term(pos)
                control = UnknownControl(control.elements, True)
            else:
                payload = None
        elif control.HAS_PAYLOAD:
            if pos >= len(buf):
                raise ControlDecodeError(f"{type(control).__name__} without its payload")
            payload, pos = term(pos)
        else:
            payload = None
        if pos != len(buf):
            raise ControlDecodeError(f"{len(buf) - pos} trailing bytes after the message")
        return control, payload

    def _first_fragment(self, packet: bytes) -> tuple[Control, Any] | None:
        if len(packet) < 18:
            raise ControlDecodeError("truncated fragment header")
        seq, frag = _unpack_seq(packet, 2)
        atoms, pos = self.atom_cache.parse_header(packet, 18)
        if frag == 0:
            raise ControlDecodeError("fragment id 0")
        if seq in self._sequences:
            self._drop(seq)
            raise ControlDecodeError(f"fragment sequence {seq:#x} started twice")
        if frag == 1:  # a one-fragment message
            return self._decode_body(packet, pos, atoms, versioned=False)
        if len(self._sequences) >= self.max_sequences:
            raise ControlDecodeError(f"more than {self.max_sequences} fragmented messages pending")
        body = packet[pos:]
        self._check_size(len(body))
        self._sequences[seq] = _Sequence(atoms, frag - 1, [body], len(body))
        self._buffered += len(body)
        return None

    def _continuation(self, packet: bytes) -> tuple[Control, Any] | None:
        if len(packet) < 18:
            raise ControlDecodeError("truncated fragment header")
        seq, frag = _unpack_seq(packet, 2)
        s = self._sequences.get(seq)
        if s is None:
            raise ControlDecodeError(f"fragment of unknown sequence {seq:#x}")
        if frag != s.next_fragment:
            self._drop(seq)
            raise ControlDecodeError(
                f"sequence {seq:#x}: fragment {frag} arrived, {s.next_fragment} expected"
            )
        body = packet[18:]
        if s.size + len(body) > self.max_message:
            self._drop(seq)
            raise ControlDecodeError(f"fragmented message over {self.max_message} bytes")
        self._check_size(len(body))
        s.chunks.append(body)
        s.size += len(body)
        self._buffered += len(body)
        if frag > 1:
            s.next_fragment = frag - 1
            return None
        self._drop(seq)
        self.fragmented_messages += 1
        return self._decode_body(b"".join(s.chunks), 0, s.atoms, versioned=False)

    def _check_size(self, extra: int) -> None:
        if self._buffered + extra > self.max_message:
            raise ControlDecodeError(
                f"fragments being reassembled would exceed {self.max_message} bytes"
            )

    def _drop(self, seq: int) -> None:
        s = self._sequences.pop(seq, None)
        if s is not None:
            self._buffered -= s.size

    def abandon(self, seq: int | None = None) -> None:
        """Forget one (or every) partially received message."""
        if seq is None:
            self._sequences.clear()
            self._buffered = 0
        else:
            self._drop(seq)


# -- encoding packets -----------------------------------------------------------------

#: Marks "no payload" (``None`` is a payload: the atom ``undefined``).
NO_PAYLOAD: Final[Any] = object()
_pack_frag = struct.Struct(">BBQQ").pack


class DistEncoder:
    """Encode control messages into packet bodies for one connection.

    ``flags`` are the negotiated flags (``Complete.flags``): they decide
    between pass-through packets and packets with a distribution header.
    With FRAGMENTS negotiated and ``fragment_size`` set, a message whose
    payload is larger is split into fragments.  Returns a list of packet
    bodies: frame each with :func:`beamlet.distribution.framing.frame`.
    """

    def __init__(
        self,
        ctx: ETFContext = DEFAULT_CONTEXT,
        flags: int = 0,
        *,
        fragment_size: int | None = 64 * 1024,
    ) -> None:
        self.ctx = ctx
        self.flags = flags
        self.header = uses_dist_header(flags)
        self.fragment_size = fragment_size if flags & DFLAG_FRAGMENTS else None
        self._next_seq = 1
        # The encoded control term of the message kinds a stream of sends
        # repeats (same sender, same destination): encoded once, reused.
        self._heads: dict[Control, bytes] = {}

    def _head(self, control: Control) -> bytes:
        if type(control) not in _REPEATED:
            return encode_term(control.to_tuple(), self.ctx)
        head = self._heads.get(control)  # fields are pids, atoms and refs: hashable
        if head is None:
            if len(self._heads) >= 1024:
                self._heads.clear()
            head = self._heads[control] = encode_term(control.to_tuple(), self.ctx)
        return head

    def encode(self, control: Control, payload: Any = NO_PAYLOAD) -> list[bytes]:
        has = control.has_payload if isinstance(control, UnknownControl) else control.HAS_PAYLOAD
        if has and payload is NO_PAYLOAD:
            raise ValueError(f"{type(control).__name__} needs a payload")
        if not has and payload is not NO_PAYLOAD:
            raise ValueError(f"{type(control).__name__} carries no payload")
        head = self._head(control)
        if not self.header:
            out = bytearray((PASS_THROUGH, VERSION))
            out += head
            if has:
                out.append(VERSION)
                encode_term_into(out, payload, self.ctx)
            return [bytes(out)]
        body = bytearray()
        if has:
            encode_term_into(body, payload, self.ctx)
        size = self.fragment_size
        if size is None or len(body) <= size:
            return [b"\x83\x44\x00" + head + body]
        return self._fragments(head, body, size)

    def _fragments(self, head: bytes, body: bytearray, size: int) -> list[bytes]:
        # The control message goes whole into the first fragment, the payload
        # is cut into pieces ("Distribution Header for fragmented messages").
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        seq = self._next_seq
        self._next_seq = (self._next_seq + 1) & 0xFFFFFFFFFFFFFFFF or 1
        total = len(pieces)
        packets = [_pack_frag(VERSION, DIST_FRAG_HEADER, seq, total) + b"\x00" + head + pieces[0]]
        for i, piece in enumerate(pieces[1:], 1):
            packets.append(_pack_frag(VERSION, DIST_FRAG_CONT, seq, total - i) + piece)
        return packets


_REPEATED: Final = frozenset({Send, SendSender, RegSend, AliasSend})
