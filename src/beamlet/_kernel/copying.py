"""Message isolation: what a receiver gets can never be mutated by the sender.

As on the BEAM, a message is copied into the receiver -- but immutable values
need no copy, so they are shared as they are: ints, floats, strings, bytes (the
BEAM's refc binaries: a 100 MB bytes object costs nothing to send), None, bools,
Atom/Pid/Ref, enum members, and tuples/frozensets built only of those. Mutable
containers (list, dict, set, bytearray) are copied element by element, sharing
the immutable parts; anything else goes through ``copy.deepcopy`` (slow, but
correct); a value that cannot be copied raises ``TypeError`` in the sender.

Classes a user knows to be immutable (a frozen dataclass of immutables, say) can
be declared with :func:`register_immutable` to be shared without a copy.
"""

from __future__ import annotations

import copy as _copy
import enum
from typing import Any

from beamlet.terms import IMMUTABLE_LEAVES

_leaves: set[type] = set(IMMUTABLE_LEAVES)


def register_immutable(cls: type) -> type:
    """Declare that instances of ``cls`` are immutable: they are sent without a copy.

    Usable as a class decorator. The caller vouches for immutability.
    """
    _leaves.add(cls)
    return cls


def is_frozen(value: Any) -> bool:
    """True if ``value`` is deeply immutable (safe to share between processes)."""
    t = type(value)
    if t in _leaves:
        return True
    if t is tuple or t is frozenset:
        for x in value:
            if type(x) not in _leaves and not is_frozen(x):
                return False
        return True
    if isinstance(value, enum.Enum):
        return True
    if isinstance(value, tuple) and not hasattr(value, "__dict__"):
        # NamedTuple and other slot-less tuple subclasses.
        return all(is_frozen(x) for x in value)
    return False


def copy_message(value: Any) -> Any:
    """The value a receiver gets for ``value``: shared if immutable, else a copy."""
    t = type(value)
    if t in _leaves:
        return value
    if t is tuple:
        # Shared if every element is immutable, checked in one pass; a nested
        # plain tuple (a call's (pid, (alias, ref)) tag) is looked into here,
        # without a call. Otherwise copied element by element.
        for x in value:
            tx = type(x)
            if tx in _leaves:
                continue
            if tx is tuple:
                for y in x:
                    if type(y) not in _leaves and not is_frozen(y):
                        return tuple([copy_message(e) for e in value])
            elif not is_frozen(x):
                return tuple([copy_message(e) for e in value])
        return value
    if t is list:
        if _leaves.issuperset(map(type, value)):  # a C loop: the common flat case
            return value.copy()
        return [x if type(x) in _leaves else copy_message(x) for x in value]
    if t is dict:
        if _leaves.issuperset(map(type, value.values())) and _leaves.issuperset(map(type, value)):
            return value.copy()
        return {
            copy_message(k): (v if type(v) in _leaves else copy_message(v))
            for k, v in value.items()
        }
    if t is set:
        return {copy_message(x) for x in value}
    if t is bytearray:
        return bytearray(value)
    if is_frozen(value):
        return value
    try:
        return _copy.deepcopy(value)
    except Exception as e:
        raise TypeError(
            f"cannot send a {t.__qualname__}: messages are copied and this value cannot be ({e})"
        ) from e
