"""Receive patterns.

A pattern is tested against a message, most specific rule first:

* ``ANY`` matches anything;
* a type matches its instances (``isinstance``), so ``Exit`` or ``int`` work;
* a tuple template matches a message of exactly the same type and length whose
  elements match the template's elements (a plain tuple matches plain tuples; a
  NamedTuple template such as ``Down(ref, ANY, ANY)`` matches only ``Down``);
* a list template likewise matches lists of the same length;
* a dict template matches a dict that has every key of the template, with a
  value matching the template's value (extra keys are allowed, as in Erlang's
  map patterns);
* any other callable is a predicate: the message matches if it returns true;
* anything else matches by ``==``.
"""

from __future__ import annotations

from typing import Any

from beamlet._kernel.process import ANY
from beamlet.terms import Atom, Ref

#: Built-in value types a pattern element of which matches by ``==`` (and
#: whose ``==`` with one another never raises).
_SCALARS = frozenset({Atom, str, int, float, bool, bytes, type(None)})


def matches(pattern: Any, msg: Any) -> bool:
    if pattern is ANY:
        return True
    tp = type(pattern)
    if tp is tuple:
        if type(msg) is not tuple or len(msg) != len(pattern):
            return False
        i = 0
        for p in pattern:
            if p is not ANY:
                m = msg[i]
                tp = type(p)
                if tp is Ref:  # the common tag: compare without recursing
                    if type(m) is not Ref or p.ids != m.ids or p.node != m.node:
                        return False
                elif tp in _SCALARS and type(m) in _SCALARS:
                    # An atom, string, number...: what the recursion ends in
                    # (==), without the call and its type tests.
                    if p != m:
                        return False
                elif not matches(p, m):
                    return False
            i += 1
        return True
    if tp is Ref:
        same: bool = pattern == msg
        return same
    if isinstance(pattern, type):
        return isinstance(msg, pattern)
    if isinstance(pattern, tuple):
        if type(msg) is not tp or len(msg) != len(pattern):
            return False
        for p, m in zip(pattern, msg, strict=True):
            if p is not ANY and not matches(p, m):
                return False
        return True
    if tp is list:
        if type(msg) is not list or len(msg) != len(pattern):
            return False
        return all(matches(p, m) for p, m in zip(pattern, msg, strict=True))
    if tp is dict:
        if type(msg) is not dict:
            return False
        for k, p in pattern.items():
            if k not in msg or not matches(p, msg[k]):
                return False
        return True
    if callable(pattern):
        return bool(pattern(msg))
    try:
        return bool(pattern == msg)
    except Exception:
        return False


def mentions(pattern: Any, ref: Ref) -> bool:
    """True if a template can only match a message containing ``ref``."""
    if pattern is ref or (type(pattern) is Ref and pattern == ref):
        return True
    if isinstance(pattern, tuple | list):
        for p in pattern:
            if mentions(p, ref):
                return True
        return False
    if type(pattern) is dict:
        for p in pattern.values():
            if mentions(p, ref):
                return True
    return False
