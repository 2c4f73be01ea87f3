"""Terms shared by the kernel, the behaviours and the distribution layer.

``Atom``, ``Pid`` and ``Ref`` are the identities of the Erlang world. They are
values (never assign their attributes) and hashable, so they pass between
processes without being copied.

* ``Atom`` is a ``str`` subclass: ``Atom("normal") == "normal"``, which lets
  Python code compare exit reasons with plain strings. The distribution layer
  encodes an ``Atom`` as an Erlang atom and a plain ``str`` as a binary.
* ``Pid`` names a process. A local pid has ``node is None``: it always means
  "this node", whatever the node is called later (as in Erlang, where starting
  distribution renames the local node). A remote pid carries its node's name
  and creation.
* ``Ref`` is a unique reference (``make_ref()``, monitors, timers). Its ``ids``
  are the 32-bit words Erlang uses on the wire.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["Atom", "Pid", "Ref"]


class Atom(str):
    """An Erlang atom: an interned name that compares equal to the same ``str``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class Pid:
    """A process identifier.

    ``id`` and ``serial`` are the two 32-bit words of Erlang's NEW_PID_EXT;
    ``node`` is ``None`` for a local process; ``creation`` tells incarnations
    of a remote node apart.
    """

    __slots__ = ("creation", "id", "node", "serial")

    node: Atom | None
    id: int
    serial: int
    creation: int

    def __init__(
        self, id: int, serial: int = 0, node: Atom | None = None, creation: int = 0
    ) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "serial", serial)
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "creation", creation)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Pid is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Pid is immutable")

    @property
    def is_local(self) -> bool:
        return self.node is None

    # A local pid is numbered by the kernel with one int (``id``, ``serial`` 0).
    # On the wire it becomes Erlang's two words: the low 28 bits (Erlang's pid
    # number size) and the next 32, so any peer accepts it: 2**60 pids.
    def wire_words(self) -> tuple[int, int]:
        """(ID, Serial) words of NEW_PID_EXT for this local pid."""
        return self.id & 0x0FFFFFFF, (self.id >> 28) & 0xFFFFFFFF

    @classmethod
    def from_wire(cls, id_word: int, serial: int) -> Pid:
        """The local pid whose NEW_PID_EXT words are these."""
        return cls((id_word & 0x0FFFFFFF) | (serial << 28))

    def __eq__(self, other: object) -> bool:
        if type(other) is not Pid:
            return NotImplemented
        return (
            self.id == other.id
            and self.serial == other.serial
            and self.node == other.node
            and self.creation == other.creation
        )

    def __hash__(self) -> int:
        return hash((self.id, self.serial, self.node, self.creation))

    def __lt__(self, other: Pid) -> bool:
        if type(other) is not Pid:
            return NotImplemented
        return self._key() < other._key()

    def _key(self) -> tuple[str, int, int, int]:
        return (self.node or "", self.creation, self.serial, self.id)

    def __repr__(self) -> str:
        where = "0" if self.node is None else str(self.node)
        return f"<{where}.{self.id}.{self.serial}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pid, (self.id, self.serial, self.node, self.creation))


class Ref:
    """A unique reference. ``ids`` are 32-bit words (three for local refs)."""

    __slots__ = ("_hash", "creation", "ids", "node")

    node: Atom | None
    ids: tuple[int, ...]
    creation: int

    def __init__(self, ids: tuple[int, ...], node: Atom | None = None, creation: int = 0) -> None:
        self.ids = ids  # treat as immutable (hashed), like Pid
        self.node = node
        self.creation = creation
        self._hash = hash(ids)  # refs are dict keys on hot paths (monitors, aliases)

    @staticmethod
    def _local(n: int) -> Ref:
        """The local reference numbered ``n`` (an unbounded counter value)."""
        # The kernel's hot path (every monitor, call, timer): the slots set
        # directly, without the generic __init__'s call.
        ids = (n & 0x3FFFF, (n >> 18) & 0xFFFFFFFF, (n >> 50) & 0xFFFFFFFF)
        ref = _new_object(Ref)
        ref.ids = ids
        ref.node = None
        ref.creation = 0
        ref._hash = hash(ids)
        return ref

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is not Ref:
            return NotImplemented
        return self.ids == other.ids and self.node == other.node and self.creation == other.creation

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        where = "0" if self.node is None else str(self.node)
        return f"#Ref<{where}.{'.'.join(str(i) for i in reversed(self.ids))}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ref, (self.ids, self.node, self.creation))


_new_object = object.__new__

#: Immutable leaf types the kernel may share between processes without copying.
IMMUTABLE_LEAVES: Final[frozenset[type]] = frozenset(
    {int, float, complex, bool, str, bytes, type(None), Atom, Pid, Ref, range, type(Ellipsis)}
)
