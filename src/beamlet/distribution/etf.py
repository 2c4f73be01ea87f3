"""The Erlang External Term Format (ETF), encode and decode.

Implements erts/doc/guides/erl_ext_dist.md ("External Term Format"): the
overall format (version byte 131), compressed terms (tag 80) and every term
tag a current Erlang node sends, plus the deprecated tags an old node or an old
``term_to_binary`` may still produce (decode only). ``ATOM_CACHE_REF`` (82) is
decoded when the caller passes the atom table of a distribution header (see
:mod:`beamlet.distribution.control`).

Mapping between Erlang terms and Python values
----------------------------------------------

=============================  ==============================================
Erlang                         Python
=============================  ==============================================
atom ``true`` / ``false``      ``True`` / ``False``
atom ``undefined``             ``None``
any other atom                 :class:`beamlet.terms.Atom` (a ``str`` subclass)
integer (any size)             ``int`` (bignums both ways)
float                          ``float`` (finite only, as in Erlang)
tuple                          ``tuple``
proper list                    ``list`` (``[]`` is the empty list)
improper list ``[a, b | t]``   :class:`ImproperList` ``((a, b), t)``
string (STRING_EXT)            ``list`` of ``int`` -- it *is* a list in Erlang
map                            ``dict`` (order preserved both ways)
binary                         ``bytes``
bitstring                      :class:`BitBinary` ``(data, bits)``
pid / reference                :class:`beamlet.terms.Pid` / :class:`~beamlet.terms.Ref`
port                           :class:`Port`
``fun M:F/A``                  :class:`Export`
``fun (...) -> ... end``       :class:`Fun` (opaque; re-encodes byte-identically)
=============================  ==============================================

Encoding also accepts: ``str`` (not ``Atom``) -> a UTF-8 binary, as Elixir
does; ``bytearray``/``memoryview`` -> binary; a ``list`` of ints 0..255 no
longer than 65535 -> STRING_EXT, exactly as ``term_to_binary`` does, so an
Erlang term decoded and re-encoded gives the same bytes.  The one asymmetry:
a binary always decodes to ``bytes`` (Erlang cannot tell text from data), so
``"abc"`` comes back as ``b"abc"``.

Map keys must be hashable in Python.  A list or map used as a key in Erlang
decodes to :class:`FrozenList` / :class:`FrozenMap`, hashable values that
encode back as a list / map (lossless); you may use them as keys yourself.
Keys that are different in Erlang but equal in Python (``1`` and ``1.0``,
``true`` and ``1``) cannot both live in one dict: decoding such a map raises
:class:`ETFDecodeError` rather than silently dropping one.

Pids, references and ports are node-relative.  Encoding and decoding take an
:class:`ETFContext` (the local node name and creation): a ``Pid``/``Ref``/
``Port`` with ``node is None`` encodes with the local name and creation, and a
decoded one whose node and creation equal the local ones comes back local
(``node is None``).  Without a context the local node is ``nonode@nohost``
with creation 0, like a non-distributed Erlang node.  Ids are encoded as given,
masked to 32 bits.

Errors: decoding raises only :class:`ETFDecodeError` (a ``ValueError``), with
what and where (byte offset); sizes are checked against the input before
anything is allocated, nesting is limited (``max_depth``), compressed terms
are inflated with a cap, the elements of one term can be capped
(``max_elements``: memory and time per term) and so can the keys of one map
that collide in Python's hash (``max_equal_hashes``: no quadratic map build).  Encoding an unsupported Python type raises
``TypeError`` naming the type (nothing is pickled); an unrepresentable value
(a non-finite float, an atom over 255 characters) raises ``ValueError``.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from beamlet.terms import Atom, Pid, Ref

__all__ = [
    "DEFAULT_CONTEXT",
    "BitBinary",
    "ETFContext",
    "ETFDecodeError",
    "Export",
    "FrozenList",
    "FrozenMap",
    "Fun",
    "ImproperList",
    "Port",
    "decode",
    "decode_term",
    "encode",
    "encode_term",
    "encode_term_into",
]

# -- tags (erl_ext_dist.md) ---------------------------------------------------

VERSION: Final = 131
NEW_FLOAT_EXT: Final = 70
BIT_BINARY_EXT: Final = 77
COMPRESSED: Final = 80
ATOM_CACHE_REF: Final = 82
NEW_PID_EXT: Final = 88
NEW_PORT_EXT: Final = 89
NEWER_REFERENCE_EXT: Final = 90
SMALL_INTEGER_EXT: Final = 97
INTEGER_EXT: Final = 98
FLOAT_EXT: Final = 99
ATOM_EXT: Final = 100
REFERENCE_EXT: Final = 101
PORT_EXT: Final = 102
PID_EXT: Final = 103
SMALL_TUPLE_EXT: Final = 104
LARGE_TUPLE_EXT: Final = 105
NIL_EXT: Final = 106
STRING_EXT: Final = 107
LIST_EXT: Final = 108
BINARY_EXT: Final = 109
SMALL_BIG_EXT: Final = 110
LARGE_BIG_EXT: Final = 111
NEW_FUN_EXT: Final = 112
EXPORT_EXT: Final = 113
NEW_REFERENCE_EXT: Final = 114
SMALL_ATOM_EXT: Final = 115
MAP_EXT: Final = 116
FUN_EXT: Final = 117
ATOM_UTF8_EXT: Final = 118
SMALL_ATOM_UTF8_EXT: Final = 119
V4_PORT_EXT: Final = 120
LOCAL_EXT: Final = 121

#: Default nesting limit (containers inside containers) for decoding and encoding.
#: Each level costs two Python frames; 256 stays well inside the default
#: recursion limit of 1000 even when called from a deep stack.
DEFAULT_MAX_DEPTH: Final = 256
#: Default cap on the inflated size of a compressed term (bytes).
DEFAULT_MAX_UNCOMPRESSED: Final = 256 * 1024 * 1024
#: Default cap on the list, tuple and map elements of one decoded term. Each
#: element is a Python object (an empty list decoded from one byte costs 56
#: bytes), so this bounds what one term may cost in memory and time, whatever
#: its size in bytes. None: no cap.
DEFAULT_MAX_ELEMENTS: Final[int | None] = None
#: Default cap on the keys of one map that share one Python hash value. Python
#: hashes integers (and tuples of them) predictably: a map whose keys all
#: collide costs quadratic time to build (876 KB took 14 s). Legitimate maps
#: stay far below it.
DEFAULT_MAX_EQUAL_HASHES: Final = 32

_MASK32: Final = 0xFFFFFFFF


class ETFDecodeError(ValueError):
    """Malformed, truncated or unsupported External Term Format input."""


# -- value types ---------------------------------------------------------------


_NONODE: Final = Atom("nonode@nohost")


@dataclass(frozen=True, slots=True)
class ETFContext:
    """The local node as seen by the codec: its name and creation.

    Local pids/refs/ports (``node is None``) are encoded with these; decoded
    ones that carry them become local again.
    """

    node: Atom = _NONODE
    creation: int = 0
    #: Text mode (what a beamlet node uses): a binary that is valid UTF-8
    #: decodes to ``str``, others to ``bytes``; ``bytes`` are encoded as a
    #: BIT_BINARY_EXT whose last byte is whole (8 bits) -- any Erlang node
    #: reads it as an ordinary binary, and a beamlet node as ``bytes`` again.
    #: So str and bytes both survive beamlet -> beamlet, and Erlang strings
    #: (Elixir strings are binaries) arrive as ``str``.
    text: bool = False


#: The context of a node that is not distributed (as in Erlang).
DEFAULT_CONTEXT: Final = ETFContext()


@dataclass(frozen=True, slots=True)
class ImproperList:
    """An improper list ``[e1, ..., en | tail]``: at least one element and a
    tail that is not a list."""

    elements: tuple[Any, ...]
    tail: Any

    def __post_init__(self) -> None:
        if not isinstance(self.elements, tuple):
            object.__setattr__(self, "elements", tuple(self.elements))
        if not self.elements:
            raise ValueError("ImproperList needs at least one element")
        if isinstance(self.tail, (list, ImproperList, FrozenList)):
            raise ValueError("the tail of an ImproperList cannot be a list")


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose length is not a multiple of 8.

    ``data`` holds the bytes, ``bits`` (1..8) says how many bits of the last
    byte are used, counting from the most significant one (BIT_BINARY_EXT).
    Unused bits are zeroed, so equal bitstrings compare equal.
    """

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        data = bytes(self.data)
        if not data or not 1 <= self.bits <= 8:
            raise ValueError("BitBinary needs at least one byte and 1 <= bits <= 8")
        if self.bits != 8:
            mask = (0xFF << (8 - self.bits)) & 0xFF
            if data[-1] & ~mask:
                data = data[:-1] + bytes((data[-1] & mask,))
        object.__setattr__(self, "data", data)

    @property
    def bit_size(self) -> int:
        """Length in bits (Erlang's ``bit_size/1``)."""
        return (len(self.data) - 1) * 8 + self.bits


@dataclass(frozen=True, slots=True)
class Port:
    """A port identifier. ``node is None`` for a local port."""

    id: int
    node: Atom | None = None
    creation: int = 0


@dataclass(frozen=True, slots=True)
class Export:
    """An external fun, ``fun Module:Function/Arity`` (EXPORT_EXT)."""

    module: Atom
    function: Atom
    arity: int


@dataclass(frozen=True, slots=True)
class Fun:
    """A local fun (NEW_FUN_EXT). Opaque in Python: it cannot be called, but it
    can be stored and sent back, and re-encodes to the same bytes."""

    module: Atom
    arity: int
    uniq: bytes
    index: int
    old_index: int
    old_uniq: int
    pid: Pid
    free_vars: tuple[Any, ...] = ()


class FrozenList(tuple[Any, ...]):
    """A hashable Erlang list, used where a list is a map key.

    Encodes as a (proper) list.  It equals the ``list`` with the same items
    but never a plain ``tuple`` (``[1, 2]`` and ``{1, 2}`` are different
    Erlang terms).
    """

    __slots__ = ()

    def __new__(cls, items: Iterable[Any] = ()) -> FrozenList:
        return super().__new__(cls, map(_freeze, items))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenList):
            return tuple.__eq__(self, other)
        if isinstance(other, list):
            return list(self) == other
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((FrozenList, tuple(self)))

    def __repr__(self) -> str:
        return f"FrozenList({list(self)!r})"


class FrozenMap(Mapping[Any, Any]):
    """A hashable, immutable Erlang map, used where a map is a map key.

    Encodes as a map, in its insertion order.  Equals a ``dict`` with the
    same items.  Lists and maps inside it are frozen too.
    """

    __slots__ = ("_d", "_hash")

    def __init__(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._d: dict[Any, Any] = {_freeze(k): _freeze(v) for k, v in pairs}
        self._hash: int | None = None

    def __getitem__(self, key: Any) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._d == other._d
        if isinstance(other, dict):
            return self._d == other
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((FrozenMap, frozenset(self._d.items())))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"


def _freeze(v: Any) -> Any:
    """Make a decoded term hashable (for use as a map key), losslessly."""
    t = type(v)
    if t is list:
        return FrozenList(v)
    if t is dict:
        return FrozenMap(v)
    if t is tuple:
        return tuple(_freeze(x) for x in v)
    if t is ImproperList:
        return ImproperList(tuple(_freeze(x) for x in v.elements), _freeze(v.tail))
    if t is Fun:
        return Fun(
            v.module, v.arity, v.uniq, v.index, v.old_index, v.old_uniq, v.pid,
            tuple(_freeze(x) for x in v.free_vars),
        )  # fmt: skip
    return v


# -- decoding ---------------------------------------------------------------------

_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_i32 = struct.Struct(">i").unpack_from
_unpack_u64 = struct.Struct(">Q").unpack_from
_unpack_f64 = struct.Struct(">d").unpack_from
_unpack_u32x2 = struct.Struct(">II").unpack_from
_unpack_u32x3 = struct.Struct(">III").unpack_from

# Decoded atoms by their UTF-8 bytes (bounded; dict operations are atomic,
# so this is safe without the GIL: at worst two threads build the same Atom).
_ATOM_CACHE: dict[bytes, Any] = {}
_ATOM_CACHE_MAX: Final = 8192
_SPECIAL_ATOMS: Final[dict[str, Any]] = {"true": True, "false": False, "undefined": None}

_TAG_NAMES: Final = {
    v: k
    for k, v in dict(globals()).items()
    if isinstance(v, int) and (k.endswith("_EXT") or k in ("COMPRESSED", "ATOM_CACHE_REF"))
}


def _tag_name(tag: int) -> str:
    return _TAG_NAMES.get(tag, f"tag {tag}")


class _Decoder:
    __slots__ = (
        "atoms",
        "buf",
        "creation",
        "depth",
        "elements",
        "max_depth",
        "max_elements",
        "max_equal_hashes",
        "node",
        "size",
        "text",
    )

    def __init__(
        self,
        buf: bytes,
        ctx: ETFContext,
        atoms: Sequence[Any] | None,
        max_depth: int,
        max_elements: int | None = None,
        max_equal_hashes: int = DEFAULT_MAX_EQUAL_HASHES,
    ) -> None:
        self.buf = buf
        self.size = len(buf)
        self.node = ctx.node
        self.creation = ctx.creation
        self.text = ctx.text
        self.atoms = atoms
        self.depth = 0
        self.max_depth = max_depth
        self.max_elements = max_elements
        #: Elements this term may still have (counted per container, not per item).
        self.elements = sys.maxsize if max_elements is None else max_elements
        self.max_equal_hashes = max_equal_hashes

    # helpers

    def need(self, pos: int, n: int, what: str) -> None:
        if pos + n > self.size:
            raise ETFDecodeError(
                f"truncated {what} at offset {pos}: needs {n} bytes, {self.size - pos} left"
            )

    def term(self, pos: int) -> tuple[Any, int]:
        if pos >= self.size:
            raise ETFDecodeError(f"truncated input: expected a term at offset {pos}")
        return _DECODERS[self.buf[pos]](self, pos + 1)

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise ETFDecodeError(f"term nested deeper than {self.max_depth} at offset {pos}")

    def too_many(self, pos: int) -> None:
        raise ETFDecodeError(
            f"term has more than {self.max_elements} list, tuple and map elements (at offset {pos})"
        )

    def raw_atom(self, pos: int) -> tuple[Atom, int]:
        """Decode an atom in a position that must be an atom (node, module)."""
        if pos >= self.size:
            raise ETFDecodeError(f"truncated input: expected an atom at offset {pos}")
        tag = self.buf[pos]
        if tag not in _ATOM_TAGS:
            raise ETFDecodeError(f"expected an atom at offset {pos}, got {_tag_name(tag)}")
        v, pos = _DECODERS[tag](self, pos + 1)
        if type(v) is not Atom:
            v = Atom("undefined" if v is None else ("true" if v else "false"))
        return v, pos

    def local_pid(self, node: Atom, id: int, serial: int, creation: int) -> Pid:
        if node == self.node and creation == self.creation:
            return Pid.from_wire(id, serial)
        return Pid(id, serial, node, creation)


def _atom(d: _Decoder, raw: bytes, latin1: bool = False) -> Any:
    if not latin1:  # only UTF-8 atoms are cached (latin-1 ones are rare)
        v = _ATOM_CACHE.get(raw, _ATOM_CACHE)
        if v is not _ATOM_CACHE:
            return v
    try:
        name = raw.decode("latin-1" if latin1 else "utf-8")
    except UnicodeDecodeError as e:
        raise ETFDecodeError(f"atom is not valid UTF-8: {raw[:40]!r}") from e
    if len(name) > 255:
        raise ETFDecodeError(f"atom longer than 255 characters ({len(name)})")
    v = _SPECIAL_ATOMS.get(name, _ATOM_CACHE)
    if v is _ATOM_CACHE:
        v = Atom(name)
    if not latin1:
        if len(_ATOM_CACHE) >= _ATOM_CACHE_MAX:
            _ATOM_CACHE.clear()
        _ATOM_CACHE[raw] = v
    return v


def _d_small_atom_utf8(d: _Decoder, pos: int) -> tuple[Any, int]:
    buf = d.buf
    end = pos + 1 + buf[pos]
    if end > d.size:
        d.need(pos + 1, buf[pos], "SMALL_ATOM_UTF8_EXT")
    raw = buf[pos + 1 : end]
    v = _ATOM_CACHE.get(raw, _ATOM_CACHE)
    if v is _ATOM_CACHE:
        v = _atom(d, raw)
    return v, end


def _d_atom_utf8(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 2, "ATOM_UTF8_EXT")
    (n,) = _unpack_u16(d.buf, pos)
    d.need(pos + 2, n, "ATOM_UTF8_EXT")
    return _atom(d, d.buf[pos + 2 : pos + 2 + n]), pos + 2 + n


def _d_atom_latin1(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 2, "ATOM_EXT")
    (n,) = _unpack_u16(d.buf, pos)
    d.need(pos + 2, n, "ATOM_EXT")
    return _atom(d, d.buf[pos + 2 : pos + 2 + n], latin1=True), pos + 2 + n


def _d_small_atom_latin1(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 1, "SMALL_ATOM_EXT")
    n = d.buf[pos]
    d.need(pos + 1, n, "SMALL_ATOM_EXT")
    return _atom(d, d.buf[pos + 1 : pos + 1 + n], latin1=True), pos + 1 + n


def _d_atom_cache_ref(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 1, "ATOM_CACHE_REF")
    idx = d.buf[pos]
    if d.atoms is None:
        raise ETFDecodeError(
            f"ATOM_CACHE_REF at offset {pos - 1} outside a distribution header context"
        )
    if idx >= len(d.atoms):
        raise ETFDecodeError(
            f"ATOM_CACHE_REF index {idx} at offset {pos - 1}, header has {len(d.atoms)} atoms"
        )
    return d.atoms[idx], pos + 1


def _d_small_int(d: _Decoder, pos: int) -> tuple[Any, int]:
    return d.buf[pos], pos + 1


def _d_int(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 4, "INTEGER_EXT")
    return _unpack_i32(d.buf, pos)[0], pos + 4


def _d_small_big(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 2, "SMALL_BIG_EXT")
    buf = d.buf
    n = buf[pos]
    sign = buf[pos + 1]
    d.need(pos + 2, n, "SMALL_BIG_EXT")
    v = int.from_bytes(buf[pos + 2 : pos + 2 + n], "little")
    return (-v if sign else v), pos + 2 + n


def _d_large_big(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 5, "LARGE_BIG_EXT")
    (n,) = _unpack_u32(d.buf, pos)
    sign = d.buf[pos + 4]
    d.need(pos + 5, n, "LARGE_BIG_EXT")
    v = int.from_bytes(d.buf[pos + 5 : pos + 5 + n], "little")
    return (-v if sign else v), pos + 5 + n


def _d_new_float(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 8, "NEW_FLOAT_EXT")
    (v,) = _unpack_f64(d.buf, pos)
    if not math.isfinite(v):
        raise ETFDecodeError(f"NEW_FLOAT_EXT at offset {pos - 1} is not finite")
    return v, pos + 8


def _d_old_float(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 31, "FLOAT_EXT")
    text = d.buf[pos : pos + 31].split(b"\x00", 1)[0]
    try:
        v = float(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ETFDecodeError(f"FLOAT_EXT at offset {pos - 1}: bad float text {text!r}") from e
    if not math.isfinite(v):
        raise ETFDecodeError(f"FLOAT_EXT at offset {pos - 1} is not finite")
    return v, pos + 31


def _d_small_tuple(d: _Decoder, pos: int) -> tuple[Any, int]:
    return _d_tuple_items(d, pos + 1, d.buf[pos])


def _d_large_tuple(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 4, "LARGE_TUPLE_EXT")
    (n,) = _unpack_u32(d.buf, pos)
    return _d_tuple_items(d, pos + 4, n)


def _d_tuple_items(d: _Decoder, pos: int, n: int) -> tuple[Any, int]:
    if n == 0:
        return (), pos
    if n > d.size - pos:
        raise ETFDecodeError(f"tuple arity {n} at offset {pos} exceeds the remaining input")
    d.elements -= n
    if d.elements < 0:
        d.too_many(pos)
    d.enter(pos)
    items: list[Any] = []
    append = items.append
    buf = d.buf
    size = d.size
    table = _DECODERS
    atoms = _ATOM_CACHE
    for _ in range(n):
        tag = buf[pos]
        if tag == SMALL_INTEGER_EXT:
            append(buf[pos + 1])
            pos += 2
        elif tag == SMALL_ATOM_UTF8_EXT and (end := pos + 2 + buf[pos + 1]) <= size:
            v = atoms.get(buf[pos + 2 : end], atoms)
            if v is atoms:
                v, end = _d_small_atom_utf8(d, pos + 1)
            append(v)
            pos = end
        elif tag == INTEGER_EXT and pos + 5 <= size:
            append(_unpack_i32(buf, pos + 1)[0])
            pos += 5
        else:
            v, pos = table[tag](d, pos + 1)
            append(v)
    d.depth -= 1
    return tuple(items), pos


def _d_nil(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.elements -= 1  # one byte, one new list object: the costliest element
    if d.elements < 0:
        d.too_many(pos)
    return [], pos


def _d_string(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 2, "STRING_EXT")
    (n,) = _unpack_u16(d.buf, pos)
    d.need(pos + 2, n, "STRING_EXT")
    d.elements -= n + 1  # and the list itself: an empty STRING_EXT is a new []
    if d.elements < 0:
        d.too_many(pos)
    return list(d.buf[pos + 2 : pos + 2 + n]), pos + 2 + n


def _d_list(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 4, "LIST_EXT")
    (n,) = _unpack_u32(d.buf, pos)
    pos += 4
    if n >= d.size - pos:  # n elements + a tail, at least one byte each
        raise ETFDecodeError(f"list length {n} at offset {pos - 4} exceeds the remaining input")
    d.elements -= n
    if d.elements < 0:
        d.too_many(pos)
    d.enter(pos)
    items: list[Any] = []
    append = items.append
    buf = d.buf
    size = d.size
    table = _DECODERS
    atoms = _ATOM_CACHE
    for _ in range(n):
        tag = buf[pos]
        if tag == SMALL_INTEGER_EXT:
            append(buf[pos + 1])
            pos += 2
        elif tag == SMALL_ATOM_UTF8_EXT and (end := pos + 2 + buf[pos + 1]) <= size:
            v = atoms.get(buf[pos + 2 : end], atoms)
            if v is atoms:
                v, end = _d_small_atom_utf8(d, pos + 1)
            append(v)
            pos = end
        elif tag == INTEGER_EXT and pos + 5 <= size:
            append(_unpack_i32(buf, pos + 1)[0])
            pos += 5
        else:
            v, pos = table[tag](d, pos + 1)
            append(v)
    if buf[pos] == NIL_EXT:
        d.depth -= 1
        return items, pos + 1
    tail, pos = d.term(pos)
    d.depth -= 1
    if type(tail) is list:  # [a | [b]] is the proper list [a, b]
        return items + tail, pos
    if type(tail) is ImproperList:
        return ImproperList(tuple(items) + tail.elements, tail.tail), pos
    if n == 0:  # LIST_EXT of length 0 with a non-list tail is just the tail
        return tail, pos
    return ImproperList(tuple(items), tail), pos


def _d_map(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 4, "MAP_EXT")
    (n,) = _unpack_u32(d.buf, pos)
    start = pos - 1
    pos += 4
    if n * 2 > d.size - pos:
        raise ETFDecodeError(f"map arity {n} at offset {start} exceeds the remaining input")
    d.elements -= 2 * n + 1
    if d.elements < 0:
        d.too_many(start)
    d.enter(pos)
    out: dict[Any, Any] = {}
    buf = d.buf
    table = _DECODERS
    if n <= d.max_equal_hashes:  # too few keys to collide harmfully
        for _ in range(n):
            k, pos = table[buf[pos]](d, pos + 1)
            v, pos = table[buf[pos]](d, pos + 1)
            try:
                out[k] = v
            except TypeError:
                out[_freeze(k)] = v
    else:
        # Count keys per hash value before each insert: a map built so that
        # its keys collide is refused before the dict goes quadratic.
        limit = d.max_equal_hashes
        seen: dict[int, int] = {}
        for _ in range(n):
            k, pos = table[buf[pos]](d, pos + 1)
            v, pos = table[buf[pos]](d, pos + 1)
            try:
                h = hash(k)
            except TypeError:
                k = _freeze(k)
                h = hash(k)
            c = seen.get(h, 0) + 1
            if c > limit:
                raise ETFDecodeError(
                    f"map at offset {start}: more than {limit} keys share one hash value "
                    "(a map built to make Python's dict quadratic)"
                )
            seen[h] = c
            out[k] = v
    d.depth -= 1
    if len(out) != n:
        raise ETFDecodeError(
            f"map at offset {start} has {n} keys, some of which are equal in Python "
            "(e.g. 1 and 1.0, or true and 1) or duplicated"
        )
    return out, pos


def _d_binary(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 4, "BINARY_EXT")
    (n,) = _unpack_u32(d.buf, pos)
    d.need(pos + 4, n, "BINARY_EXT")
    data = d.buf[pos + 4 : pos + 4 + n]
    if d.text:
        try:
            return data.decode("utf-8"), pos + 4 + n
        except UnicodeDecodeError:
            pass
    return data, pos + 4 + n


def _d_bit_binary(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 5, "BIT_BINARY_EXT")
    (n,) = _unpack_u32(d.buf, pos)
    bits = d.buf[pos + 4]
    d.need(pos + 5, n, "BIT_BINARY_EXT")
    data = d.buf[pos + 5 : pos + 5 + n]
    if n == 0 or not 1 <= bits <= 8:
        if n == 0 and bits == 0:
            return b"", pos + 5
        raise ETFDecodeError(f"BIT_BINARY_EXT at offset {pos - 1}: {n} bytes with {bits} bits")
    if bits == 8:
        return data, pos + 5 + n
    return BitBinary(data, bits), pos + 5 + n


def _d_new_pid(d: _Decoder, pos: int) -> tuple[Any, int]:
    node, pos = d.raw_atom(pos)
    d.need(pos, 12, "NEW_PID_EXT")
    i, s, c = _unpack_u32x3(d.buf, pos)
    return d.local_pid(node, i, s, c), pos + 12


def _d_pid(d: _Decoder, pos: int) -> tuple[Any, int]:
    node, pos = d.raw_atom(pos)
    d.need(pos, 9, "PID_EXT")
    i, s = _unpack_u32x2(d.buf, pos)
    return d.local_pid(node, i, s, d.buf[pos + 8]), pos + 9


def _port(d: _Decoder, node: Atom, id: int, creation: int) -> Port:
    if node == d.node and creation == d.creation:
        return Port(id)
    return Port(id, node, creation)


def _d_port(d: _Decoder, pos: int) -> tuple[Any, int]:
    node, pos = d.raw_atom(pos)
    d.need(pos, 5, "PORT_EXT")
    return _port(d, node, _unpack_u32(d.buf, pos)[0], d.buf[pos + 4]), pos + 5


def _d_new_port(d: _Decoder, pos: int) -> tuple[Any, int]:
    node, pos = d.raw_atom(pos)
    d.need(pos, 8, "NEW_PORT_EXT")
    i, c = _unpack_u32x2(d.buf, pos)
    return _port(d, node, i, c), pos + 8


def _d_v4_port(d: _Decoder, pos: int) -> tuple[Any, int]:
    node, pos = d.raw_atom(pos)
    d.need(pos, 12, "V4_PORT_EXT")
    (i,) = _unpack_u64(d.buf, pos)
    (c,) = _unpack_u32(d.buf, pos + 8)
    return _port(d, node, i, c), pos + 12


def _ref(d: _Decoder, node: Atom, creation: int, ids: tuple[int, ...]) -> Ref:
    if node == d.node and creation == d.creation:
        return Ref(ids)
    return Ref(ids, node, creation)


def _d_ref_ids(d: _Decoder, pos: int, n: int, what: str) -> tuple[tuple[int, ...], int]:
    if not 1 <= n <= 5:
        raise ETFDecodeError(f"{what} at offset {pos}: {n} id words (1..5 allowed)")
    d.need(pos, 4 * n, what)
    return struct.unpack_from(f">{n}I", d.buf, pos), pos + 4 * n


def _d_newer_ref(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 2, "NEWER_REFERENCE_EXT")
    (n,) = _unpack_u16(d.buf, pos)
    node, pos = d.raw_atom(pos + 2)
    d.need(pos, 4, "NEWER_REFERENCE_EXT")
    (c,) = _unpack_u32(d.buf, pos)
    ids, pos = _d_ref_ids(d, pos + 4, n, "NEWER_REFERENCE_EXT")
    return _ref(d, node, c, ids), pos


def _d_new_ref(d: _Decoder, pos: int) -> tuple[Any, int]:
    d.need(pos, 2, "NEW_REFERENCE_EXT")
    (n,) = _unpack_u16(d.buf, pos)
    node, pos = d.raw_atom(pos + 2)
    d.need(pos, 1, "NEW_REFERENCE_EXT")
    c = d.buf[pos]
    ids, pos = _d_ref_ids(d, pos + 1, n, "NEW_REFERENCE_EXT")
    return _ref(d, node, c, ids), pos


def _d_old_ref(d: _Decoder, pos: int) -> tuple[Any, int]:
    node, pos = d.raw_atom(pos)
    d.need(pos, 5, "REFERENCE_EXT")
    (i,) = _unpack_u32(d.buf, pos)
    return _ref(d, node, d.buf[pos + 4], (i,)), pos + 5


def _d_export(d: _Decoder, pos: int) -> tuple[Any, int]:
    m, pos = d.raw_atom(pos)
    f, pos = d.raw_atom(pos)
    a, pos = d.term(pos)
    if type(a) is not int or not 0 <= a <= 255:
        what = repr(a) if type(a) is int and a.bit_length() < 64 else type(a).__name__
        raise ETFDecodeError(f"EXPORT_EXT arity at offset {pos} is not a small integer: {what}")
    return Export(m, f, a), pos


def _d_new_fun(d: _Decoder, pos: int) -> tuple[Any, int]:
    start = pos - 1
    d.need(pos, 4 + 1 + 16 + 4 + 4, "NEW_FUN_EXT")
    buf = d.buf
    (size,) = _unpack_u32(buf, pos)
    if size > d.size - pos:
        raise ETFDecodeError(f"NEW_FUN_EXT at offset {start}: size {size} exceeds the input")
    arity = buf[pos + 4]
    uniq = buf[pos + 5 : pos + 21]
    index, nfree = _unpack_u32x2(buf, pos + 21)
    if nfree > d.size - pos:
        raise ETFDecodeError(f"NEW_FUN_EXT at offset {start}: {nfree} free variables")
    d.elements -= nfree
    if d.elements < 0:
        d.too_many(start)
    end = pos + size
    p = pos + 29
    d.enter(p)
    module, p = d.raw_atom(p)
    old_index, p = d.term(p)
    old_uniq, p = d.term(p)
    if type(old_index) is not int or type(old_uniq) is not int:
        raise ETFDecodeError(f"NEW_FUN_EXT at offset {start}: OldIndex/OldUniq not integers")
    pid, p = d.term(p)
    if type(pid) is not Pid:
        raise ETFDecodeError(f"NEW_FUN_EXT at offset {start}: Pid field is not a pid")
    free = []
    for _ in range(nfree):
        v, p = d.term(p)
        free.append(v)
    d.depth -= 1
    if p != end:
        raise ETFDecodeError(
            f"NEW_FUN_EXT at offset {start}: size field says {size}, contents use {p - pos}"
        )
    return Fun(module, arity, uniq, index, old_index, old_uniq, pid, tuple(free)), p


def _d_unsupported(what: str) -> Callable[[_Decoder, int], tuple[Any, int]]:
    def dec(d: _Decoder, pos: int) -> tuple[Any, int]:
        raise ETFDecodeError(f"{what} at offset {pos - 1}")

    return dec


def _d_unknown(d: _Decoder, pos: int) -> tuple[Any, int]:
    raise ETFDecodeError(f"unknown term tag {d.buf[pos - 1]} at offset {pos - 1}")


_DECODERS: list[Callable[[_Decoder, int], tuple[Any, int]]] = [_d_unknown] * 256
for _tag, _fn in {
    NEW_FLOAT_EXT: _d_new_float,
    BIT_BINARY_EXT: _d_bit_binary,
    ATOM_CACHE_REF: _d_atom_cache_ref,
    NEW_PID_EXT: _d_new_pid,
    NEW_PORT_EXT: _d_new_port,
    NEWER_REFERENCE_EXT: _d_newer_ref,
    SMALL_INTEGER_EXT: _d_small_int,
    INTEGER_EXT: _d_int,
    FLOAT_EXT: _d_old_float,
    ATOM_EXT: _d_atom_latin1,
    REFERENCE_EXT: _d_old_ref,
    PORT_EXT: _d_port,
    PID_EXT: _d_pid,
    SMALL_TUPLE_EXT: _d_small_tuple,
    LARGE_TUPLE_EXT: _d_large_tuple,
    NIL_EXT: _d_nil,
    STRING_EXT: _d_string,
    LIST_EXT: _d_list,
    BINARY_EXT: _d_binary,
    SMALL_BIG_EXT: _d_small_big,
    LARGE_BIG_EXT: _d_large_big,
    NEW_FUN_EXT: _d_new_fun,
    EXPORT_EXT: _d_export,
    NEW_REFERENCE_EXT: _d_new_ref,
    SMALL_ATOM_EXT: _d_small_atom_latin1,
    MAP_EXT: _d_map,
    FUN_EXT: _d_unsupported("FUN_EXT (removed from Erlang in OTP 23) is not supported"),
    ATOM_UTF8_EXT: _d_atom_utf8,
    SMALL_ATOM_UTF8_EXT: _d_small_atom_utf8,
    V4_PORT_EXT: _d_v4_port,
    LOCAL_EXT: _d_unsupported(
        "LOCAL_EXT (a node-private encoding from term_to_binary(T, [local])) cannot be decoded"
    ),
    COMPRESSED: _d_unsupported("compressed term (tag 80) is only allowed right after 131"),
}.items():
    _DECODERS[_tag] = _fn

_ATOM_TAGS: Final = frozenset(
    {ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT, ATOM_EXT, SMALL_ATOM_EXT, ATOM_CACHE_REF}
)


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"ETF input must be bytes-like, not {type(data).__name__}")


def decode_term(
    data: bytes | bytearray | memoryview,
    pos: int = 0,
    ctx: ETFContext = DEFAULT_CONTEXT,
    *,
    atom_cache: Sequence[Any] | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_elements: int | None = DEFAULT_MAX_ELEMENTS,
    max_equal_hashes: int = DEFAULT_MAX_EQUAL_HASHES,
) -> tuple[Any, int]:
    """Decode one term *without* the version byte, starting at ``pos``.

    Returns ``(term, end)`` where ``end`` is the offset just past the term.
    This is the form used after a distribution header. ``atom_cache`` is the
    list of (already mapped) atoms an ``ATOM_CACHE_REF`` index refers to.
    ``max_depth``, ``max_elements`` and ``max_equal_hashes``: see the module
    documentation ("Errors").
    """
    buf = _as_bytes(data)
    d = _Decoder(buf, ctx, atom_cache, max_depth, max_elements, max_equal_hashes)
    try:
        return d.term(pos)
    except ETFDecodeError:
        raise
    except IndexError as e:
        raise ETFDecodeError(f"truncated input (term starting at offset {pos})") from e
    except RecursionError as e:
        raise ETFDecodeError("term nested too deeply for the Python stack") from e


def decode(
    data: bytes | bytearray | memoryview,
    ctx: ETFContext = DEFAULT_CONTEXT,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
    max_elements: int | None = DEFAULT_MAX_ELEMENTS,
    max_equal_hashes: int = DEFAULT_MAX_EQUAL_HASHES,
) -> Any:
    """Decode a whole ``term_to_binary`` result: 131, then a term (maybe
    compressed). Trailing bytes are an error."""
    buf = _as_bytes(data)
    if not buf:
        raise ETFDecodeError("empty input")
    if buf[0] != VERSION:
        raise ETFDecodeError(f"bad version byte {buf[0]} (expected {VERSION})")
    if len(buf) >= 2 and buf[1] == COMPRESSED:
        buf = _inflate(buf, max_uncompressed)
    term, end = decode_term(
        buf,
        1,
        ctx,
        max_depth=max_depth,
        max_elements=max_elements,
        max_equal_hashes=max_equal_hashes,
    )
    if end != len(buf):
        raise ETFDecodeError(f"{len(buf) - end} trailing bytes after the term at offset {end}")
    return term


def _inflate(buf: bytes, limit: int) -> bytes:
    """Inflate a compressed term (tag 80) into ``131 + term``, with a cap."""
    if len(buf) < 6:
        raise ETFDecodeError("truncated compressed term header")
    (size,) = _unpack_u32(buf, 2)
    if size > limit:
        raise ETFDecodeError(f"compressed term inflates to {size} bytes, over the {limit} cap")
    z = zlib.decompressobj()
    try:
        out = z.decompress(buf[6:], size + 1)
    except zlib.error as e:
        raise ETFDecodeError(f"bad zlib data in compressed term: {e}") from e
    if len(out) != size or not z.eof or z.unconsumed_tail or z.unused_data:
        raise ETFDecodeError(
            f"compressed term: header says {size} bytes, zlib stream gives {len(out)}"
            + ("" if z.eof else " (stream not finished)")
            + (" and trailing data" if z.unused_data or z.unconsumed_tail else "")
        )
    return b"\x83" + out


# -- encoding -----------------------------------------------------------------------

_pack_b_u32 = struct.Struct(">BI").pack
_pack_b_i32 = struct.Struct(">Bi").pack
_pack_b_u16 = struct.Struct(">BH").pack
_pack_b_f64 = struct.Struct(">Bd").pack
_pack_u32x3 = struct.Struct(">III").pack
_pack_u32x2 = struct.Struct(">II").pack
_pack_u32 = struct.Struct(">I").pack
_pack_u64_u32 = struct.Struct(">QI").pack
_pack_b_u32_b = struct.Struct(">BIB").pack

_ENC_ATOMS: dict[str, bytes] = {}
_ENC_ATOMS_MAX: Final = 8192


def _atom_bytes(name: str) -> bytes:
    b = _ENC_ATOMS.get(name)
    if b is not None:
        return b
    if len(name) > 255:
        raise ValueError(f"atom too long ({len(name)} characters, Erlang allows 255)")
    raw = name.encode("utf-8")
    n = len(raw)
    b = bytes((SMALL_ATOM_UTF8_EXT, n)) + raw if n <= 255 else _pack_b_u16(ATOM_UTF8_EXT, n) + raw
    if len(_ENC_ATOMS) >= _ENC_ATOMS_MAX:
        _ENC_ATOMS.clear()
    _ENC_ATOMS[str(name)] = b
    return b


_TRUE: Final = _atom_bytes("true")
_FALSE: Final = _atom_bytes("false")
_UNDEFINED: Final = _atom_bytes("undefined")


class _Encoder:
    __slots__ = ("creation", "depth", "node", "node_bytes", "out", "text")

    def __init__(self, out: bytearray, ctx: ETFContext) -> None:
        self.out = out
        self.text = ctx.text
        self.node = ctx.node
        self.creation = ctx.creation & _MASK32
        self.node_bytes = _atom_bytes(ctx.node)
        self.depth = 0

    def term(self, t: Any) -> None:
        fn = _ENCODERS.get(type(t))
        if fn is None:
            fn = _encoder_for_subclass(t)
        fn(self, t)

    def node_of(self, node: Atom | None) -> bytes:
        return self.node_bytes if node is None else _atom_bytes(node)


def _e_atom(e: _Encoder, t: Atom) -> None:
    e.out += _atom_bytes(t)


def _e_bool(e: _Encoder, t: bool) -> None:
    e.out += _TRUE if t else _FALSE


def _e_none(e: _Encoder, t: None) -> None:
    e.out += _UNDEFINED


def _e_int(e: _Encoder, t: int) -> None:
    if 0 <= t <= 255:
        e.out += bytes((SMALL_INTEGER_EXT, t))
    elif -0x80000000 <= t <= 0x7FFFFFFF:
        e.out += _pack_b_i32(INTEGER_EXT, t)
    else:
        mag = -t if t < 0 else t
        n = (mag.bit_length() + 7) // 8
        if n <= 255:
            e.out += bytes((SMALL_BIG_EXT, n, t < 0))
        else:
            e.out += _pack_b_u32_b(LARGE_BIG_EXT, n, t < 0)
        e.out += mag.to_bytes(n, "little")


def _e_float(e: _Encoder, t: float) -> None:
    if not math.isfinite(t):
        raise ValueError(f"Erlang floats are finite; cannot encode {t!r}")
    e.out += _pack_b_f64(NEW_FLOAT_EXT, t)


def _e_str(e: _Encoder, t: str) -> None:
    raw = t.encode("utf-8")
    e.out += _pack_b_u32(BINARY_EXT, len(raw))
    e.out += raw


def _e_bytes(e: _Encoder, t: bytes | bytearray | memoryview) -> None:
    if type(t) is memoryview:
        t = t.tobytes()
    if e.text and t:
        e.out += _pack_b_u32_b(BIT_BINARY_EXT, len(t), 8)
    else:
        e.out += _pack_b_u32(BINARY_EXT, len(t))
    e.out += t


def _e_tuple(e: _Encoder, t: tuple[Any, ...]) -> None:
    n = len(t)
    out = e.out
    if n <= 255:
        out += bytes((SMALL_TUPLE_EXT, n))
    else:
        out += _pack_b_u32(LARGE_TUPLE_EXT, n)
    e.depth += 1
    if e.depth > DEFAULT_MAX_DEPTH:
        raise ValueError("term nested too deeply (or cyclic) to encode")
    term = e.term
    for x in t:
        tx = type(x)
        if tx is int and -0x80000000 <= x <= 0x7FFFFFFF:
            if 0 <= x <= 255:
                out += bytes((SMALL_INTEGER_EXT, x))
            else:
                out += _pack_b_i32(INTEGER_EXT, x)
        elif tx is Atom:
            out += _ENC_ATOMS.get(x) or _atom_bytes(x)
        else:
            term(x)
    e.depth -= 1


def _byte_list(t: Sequence[Any]) -> bytes | None:
    """The bytes of a list that must be a STRING_EXT, else None.

    Only exact ints 0..255 qualify: a bool is an atom, an IntEnum is not
    what ``term_to_binary`` would see either."""
    if not 0 < len(t) <= 0xFFFF or type(t[0]) is not int:
        return None
    if set(map(type, t)) != {int}:
        return None
    try:
        return bytes(t)
    except ValueError:
        return None


def _e_list(e: _Encoder, t: list[Any] | FrozenList) -> None:
    out = e.out
    n = len(t)
    if n == 0:
        out.append(NIL_EXT)
        return
    raw = _byte_list(t)
    if raw is not None:
        out += _pack_b_u16(STRING_EXT, n)
        out += raw
        return
    out += _pack_b_u32(LIST_EXT, n)
    _e_items(e, t)
    out.append(NIL_EXT)


def _e_items(e: _Encoder, items: Sequence[Any]) -> None:
    e.depth += 1
    if e.depth > DEFAULT_MAX_DEPTH:
        raise ValueError("term nested too deeply (or cyclic) to encode")
    out = e.out
    term = e.term
    for x in items:
        tx = type(x)
        if tx is int and -0x80000000 <= x <= 0x7FFFFFFF:
            if 0 <= x <= 255:
                out += bytes((SMALL_INTEGER_EXT, x))
            else:
                out += _pack_b_i32(INTEGER_EXT, x)
        elif tx is Atom:
            out += _ENC_ATOMS.get(x) or _atom_bytes(x)
        else:
            term(x)
    e.depth -= 1


def _e_improper(e: _Encoder, t: ImproperList) -> None:
    e.out += _pack_b_u32(LIST_EXT, len(t.elements))
    _e_items(e, t.elements)
    e.term(t.tail)


def _e_map(e: _Encoder, t: Mapping[Any, Any]) -> None:
    e.out += _pack_b_u32(MAP_EXT, len(t))
    e.depth += 1
    if e.depth > DEFAULT_MAX_DEPTH:
        raise ValueError("term nested too deeply (or cyclic) to encode")
    term = e.term
    for k, v in t.items():
        term(k)
        term(v)
    e.depth -= 1


def _e_bit_binary(e: _Encoder, t: BitBinary) -> None:
    e.out += _pack_b_u32_b(BIT_BINARY_EXT, len(t.data), t.bits)
    e.out += t.data


def _e_pid(e: _Encoder, t: Pid) -> None:
    out = e.out
    out.append(NEW_PID_EXT)
    out += e.node_of(t.node)
    if t.node is None:
        id_word, serial = t.wire_words()
        out += _pack_u32x3(id_word, serial, e.creation)
    else:
        out += _pack_u32x3(t.id & _MASK32, t.serial & _MASK32, t.creation & _MASK32)


def _e_ref(e: _Encoder, t: Ref) -> None:
    n = len(t.ids)
    if not 1 <= n <= 5:
        raise ValueError(f"a reference has 1..5 id words, this one has {n}")
    out = e.out
    out += _pack_b_u16(NEWER_REFERENCE_EXT, n)
    out += e.node_of(t.node)
    out += _pack_u32(e.creation if t.node is None else t.creation & _MASK32)
    out += struct.pack(f">{n}I", *(i & _MASK32 for i in t.ids))


def _e_port(e: _Encoder, t: Port) -> None:
    out = e.out
    creation = e.creation if t.node is None else t.creation & _MASK32
    if 0 <= t.id <= _MASK32:
        out.append(NEW_PORT_EXT)
        out += e.node_of(t.node)
        out += _pack_u32x2(t.id, creation)
    else:
        out.append(V4_PORT_EXT)
        out += e.node_of(t.node)
        out += _pack_u64_u32(t.id & 0xFFFFFFFFFFFFFFFF, creation)


def _e_export(e: _Encoder, t: Export) -> None:
    if not 0 <= t.arity <= 255:
        raise ValueError(f"Export arity must be 0..255, not {t.arity}")
    out = e.out
    out.append(EXPORT_EXT)
    out += _atom_bytes(t.module)
    out += _atom_bytes(t.function)
    out += bytes((SMALL_INTEGER_EXT, t.arity))


def _e_fun(e: _Encoder, t: Fun) -> None:
    if len(t.uniq) != 16 or not 0 <= t.arity <= 255:
        raise ValueError("Fun needs a 16-byte uniq and an arity of 0..255")
    out = e.out
    out.append(NEW_FUN_EXT)
    size_at = len(out)
    out += b"\0\0\0\0"
    out.append(t.arity)
    out += t.uniq
    out += _pack_u32x2(t.index & _MASK32, len(t.free_vars))
    out += _atom_bytes(t.module)
    _e_int(e, t.old_index)
    _e_int(e, t.old_uniq)
    _e_pid(e, t.pid)
    _e_items(e, t.free_vars)
    out[size_at : size_at + 4] = _pack_u32(len(out) - size_at)


def _unsupported(e: _Encoder, t: Any) -> None:
    hint = ""
    if isinstance(t, (set, frozenset)):
        hint = " (Erlang has no set type; send a list, or a map of key => true)"
    raise TypeError(f"cannot encode {type(t).__qualname__} as an Erlang term{hint}")


_ENCODERS: dict[type, Callable[[_Encoder, Any], None]] = {
    Atom: _e_atom,
    bool: _e_bool,
    type(None): _e_none,
    int: _e_int,
    float: _e_float,
    str: _e_str,
    bytes: _e_bytes,
    bytearray: _e_bytes,
    memoryview: _e_bytes,
    tuple: _e_tuple,
    list: _e_list,
    FrozenList: _e_list,
    dict: _e_map,
    FrozenMap: _e_map,
    ImproperList: _e_improper,
    BitBinary: _e_bit_binary,
    Pid: _e_pid,
    Ref: _e_ref,
    Port: _e_port,
    Export: _e_export,
    Fun: _e_fun,
}

# Subclasses of supported types, most specific first.  bool is an int
# subclass and Atom a str subclass; both are in the exact-type table.
_SUBCLASS_ORDER: Final[tuple[tuple[type, Callable[[_Encoder, Any], None]], ...]] = (
    (Atom, _e_atom),
    (bool, _e_bool),
    (int, lambda e, t: _e_int(e, int(t))),
    (float, lambda e, t: _e_float(e, float(t))),
    (str, lambda e, t: _e_str(e, str(t))),
    (bytes, _e_bytes),
    (bytearray, _e_bytes),
    (tuple, _e_tuple),  # NamedTuples encode as tuples
    (list, _e_list),
    (dict, _e_map),
)


def _encoder_for_subclass(t: Any) -> Callable[[_Encoder, Any], None]:
    for base, fn in _SUBCLASS_ORDER:
        if isinstance(t, base):
            return fn
    return _unsupported


def encode_term_into(out: bytearray, term: Any, ctx: ETFContext = DEFAULT_CONTEXT) -> None:
    """Append the encoding of ``term`` (without the version byte) to ``out``."""
    try:
        _Encoder(out, ctx).term(term)
    except RecursionError as e:
        raise ValueError("term nested too deeply (or cyclic) to encode") from e


def encode_term(term: Any, ctx: ETFContext = DEFAULT_CONTEXT) -> bytes:
    """Encode ``term`` without the version byte (the form after a dist header)."""
    out = bytearray()
    encode_term_into(out, term, ctx)
    return bytes(out)


def encode(
    term: Any,
    ctx: ETFContext = DEFAULT_CONTEXT,
    *,
    compressed: bool | int = False,
) -> bytes:
    """Encode ``term`` like ``term_to_binary``: 131, then the term.

    ``compressed=True`` (zlib level 6, as Erlang's ``[compressed]``) or a level
    0..9 produces tag 80 -- but, as in Erlang, only when that is smaller.
    """
    out = bytearray(b"\x83")
    encode_term_into(out, term, ctx)
    if compressed is not False:
        level = 6 if compressed is True else int(compressed)
        if not 0 <= level <= 9:
            raise ValueError(f"compression level must be 0..9, not {level}")
        if level:
            body = memoryview(out)[1:]
            packed = zlib.compress(body, level)
            if len(packed) + 5 < len(body):
                return b"\x83" + _pack_b_u32(COMPRESSED, len(body)) + packed
    return bytes(out)
