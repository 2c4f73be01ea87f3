"""Golden vectors from real Erlang nodes (OTP 25 and OTP 28).

tests/data/etf_golden_otp*.txt are made by scripts/gen_etf_golden.sh, which
runs tests/data/etf_golden.script on a non-distributed node: local pids, refs
and ports belong to ``nonode@nohost`` with creation 0, which is also the
default :class:`ETFContext`.  Each vector decodes to the value below and,
where the mapping is lossless, re-encodes to exactly Erlang's bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from beamlet.distribution.etf import (
    BitBinary,
    ETFDecodeError,
    Export,
    FrozenList,
    FrozenMap,
    Fun,
    ImproperList,
    Port,
    decode,
    encode,
)
from beamlet.terms import Atom, Pid, Ref

DATA = Path(__file__).resolve().parent.parent / "data"
A = Atom
OTHER = A("other@host")


def _load(otp: str) -> list[tuple[str, str, bytes, bytes | None]]:
    rows = []
    for line in (DATA / f"etf_golden_otp{otp}.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        kind, name, out, *rest = line.split()
        rows.append(
            (
                kind,
                name,
                b"" if out == "-" else bytes.fromhex(out),
                bytes.fromhex(rest[0]) if rest else None,
            )
        )
    return rows


VECTORS = [(otp, *row) for otp in ("25", "28") for row in _load(otp)]

EXPECTED: dict[str, Any] = {
    "atom_small": A("a"),
    "atom_space": A("hello world"),
    "atom_empty": A(""),
    "atom_unicode": A("\u00fcn\u00efc\u00f6d\u00e9"),
    "atom_unicode_long": A("\u00fc" * 200),
    "atom_255": A("x" * 255),
    "atom_true": True,
    "atom_false": False,
    "atom_undefined": None,
    "atom_latin1": A("hello"),
    "atom_latin1_accent": A("c\u00e9"),
    "int_0": 0,
    "int_255": 255,
    "int_256": 256,
    "int_minus_1": -1,
    "int_max32": 2**31 - 1,
    "int_min32": -(2**31),
    "int_max32_plus_1": 2**31,
    "int_min32_minus_1": -(2**31) - 1,
    "int_2_64": 2**64,
    "int_minus_2_64": -(2**64),
    "int_small_big_max": 2**2040 - 1,
    "int_large_big": 2**2040,
    "int_large_big_neg": -(2**4000) + 12345,
    "float_zero": 0.0,
    "float_one_half": 1.5,
    "float_pi": math.pi,
    "float_tiny": -2.5e-300,
    "float_huge": 1.0e300,
    "float_old_one_half": 1.5,
    "float_old_neg": -0.1,
    "float_old_huge": 1.0e300,
    "tuple_empty": (),
    "tuple_small": (1, 2, 3),
    "tuple_large": tuple(range(1, 301)),
    "tuple_nested": (A("a"), (A("b"), (A("c"), [])), [A("x"), (A("y"),)]),
    "nil": [],
    "string_short": list(b"hello"),
    "string_bytes": [0, 1, 127, 128, 255],
    "string_max": [7] * 65535,
    "list_over_string_max": [7] * 65536,
    "list_ints": [1, 256, -1, 70000],
    "list_seq_10000": list(range(1, 10001)),
    "list_mixed": [A("a"), b"b", [ord("c")], 1.0, (A("d"),)],
    "list_improper": ImproperList((A("a"),), A("b")),
    "list_improper_long": ImproperList((1, 2), 3),
    "list_improper_tail_tuple": ImproperList((A("x"),), (A("y"),)),
    "binary_empty": b"",
    "binary_hello": b"hello",
    "binary_utf8": "h\u00e9llo".encode(),
    "binary_all_bytes": bytes(range(256)),
    "bits_3": BitBinary(b"\x20", 3),
    "bits_9": BitBinary(b"\xff\x80", 1),
    "bits_7_zero": BitBinary(b"\x00", 7),
    "map_empty": {},
    "map_small": {A("a"): 1, A("b"): 2},
    "map_string_key": {FrozenList([115, 116, 114]): 1},
    "map_map_key": {FrozenMap({A("a"): 1}): A("x")},
    "map_list_and_tuple_keys": {FrozenList([1, 2]): A("a"), (1, 2): A("b")},
    "map_binary_key": {b"k": [b"v"]},
    "map_40_keys": {n: n * n for n in range(1, 41)},
    "map_nested": {A("a"): {A("b"): {A("c"): [1, 2, 3]}}},
    "pid_local": Pid(85, 0),
    "export": Export(A("lists"), A("map"), 2),
    "export_unicode": Export(A("erlang"), A("+"), 2),
    "compressed_repetitive": [(A("a"), b"hello")] * 200,
    "compressed_small": (A("a"), A("b")),
    "compressed_level_9": list(range(1, 5001)),
    "compressed_level_1": [b"abc"] * 500,
    # reencode: hand-made (often old-format) input, as Erlang understands it
    "pid_remote": Pid(42, 1, OTHER, 7),
    "pid_remote_v4_ids": Pid(0xFFFFFFFF, 0xFFFFFFFE, OTHER, 9),
    "pid_old": Pid(42, 1, OTHER, 2),
    "ref_remote": Ref((1, 2, 3), OTHER, 7),
    "ref_remote_5_words": Ref((1, 2, 3, 4, 5), OTHER, 7),
    "ref_new_old_format": Ref((1, 2, 3), OTHER, 1),
    "ref_oldest_format": Ref((5,), OTHER, 1),
    "port_remote": Port(9, OTHER, 7),
    "port_remote_v4": Port(2**32 + 2, OTHER, 7),
    "port_old": Port(9, OTHER, 1),
    "atom_small_latin1": A("abc"),
    "atom_latin1_high": A("c\u00e9"),
    "atom_small_utf8_in_list": [A("z")],
    "list_tail_is_list": [1, 2],
    "list_tail_is_string": [1, 2, 3],
    "bits_8_is_binary": b"\x01\x02",
    "float_old_text": 2.5,
}

# Maps whose keys collide in Python: decoding must refuse, not drop a key.
COLLIDING = {"map_float_and_int_keys", "map_true_and_1_keys"}
# Decodes faithfully, but our encoder writes the modern form, not these bytes.
NOT_BYTE_IDENTICAL = {
    "atom_latin1",  # ATOM_EXT (latin-1); we always write UTF-8 atoms
    "atom_latin1_accent",
    "float_old_one_half",  # FLOAT_EXT (minor_version 0); we write NEW_FLOAT_EXT
    "float_old_neg",
    "float_old_huge",
}
# OTP 26+ writes every port as V4_PORT_EXT; we (like OTP 25) use NEW_PORT_EXT
# when the id fits in 32 bits, which every OTP since 19 decodes.
OTP28_PORTS_V4 = {"port_remote", "port_old", "port_local"}
DYNAMIC = {"ref_local", "port_local", "fun_local_eval", "fun_local_captures"}


def _ids(params: list[tuple[Any, ...]]) -> list[str]:
    return [f"otp{p[0]}-{p[2]}" for p in params]


def test_every_vector_has_an_expectation() -> None:
    names = {name for _, _, name, _, _ in VECTORS}
    missing = (
        names - set(EXPECTED) - COLLIDING - DYNAMIC - {n for n in names if n.startswith("reject_")}
    )
    assert not missing


@pytest.mark.parametrize("vec", VECTORS, ids=_ids(VECTORS))
def test_golden_vector(vec: tuple[str, str, str, bytes, bytes | None]) -> None:
    otp, kind, name, out, inp = vec
    if kind == "reject":
        assert inp is not None
        with pytest.raises(ETFDecodeError):
            decode(inp)
        return
    if name in COLLIDING:
        with pytest.raises(ETFDecodeError, match="equal in Python"):
            decode(out)
        return
    value = decode(out)
    if kind == "reencode":
        assert inp is not None
        # Our reading of the hand-made input agrees with Erlang's.
        assert decode(inp) == value
    if name in DYNAMIC:
        _check_dynamic(name, value)
    else:
        expected = EXPECTED[name]
        assert value == expected
        assert type(value) is type(expected)
        if isinstance(expected, float):
            assert math.copysign(1, value) == math.copysign(1, expected)
    if name in NOT_BYTE_IDENTICAL or (otp == "28" and name in OTP28_PORTS_V4):
        assert decode(encode(value)) == value
    elif name.startswith("compressed_"):
        level = {"compressed_level_9": 9, "compressed_level_1": 1}.get(name, True)
        assert encode(value, compressed=level) == out
    else:
        assert encode(value) == out


def _check_dynamic(name: str, value: Any) -> None:
    if name == "ref_local":
        assert type(value) is Ref and value.node is None and len(value.ids) == 3
    elif name == "port_local":
        assert type(value) is Port and value.node is None
    else:
        assert type(value) is Fun
        assert value.module == "erl_eval" and value.pid.node is None
        assert len(value.uniq) == 16
        if name == "fun_local_eval":
            assert value.arity == 1
        else:
            assert value.arity == 0
            # erl_eval keeps the bindings among the free variables
            assert "captured" in repr(value.free_vars)


def test_old_pid_ext_creation_byte_is_kept() -> None:
    (row,) = [v for v in VECTORS if v[0] == "25" and v[2] == "pid_old"]
    assert row[4] is not None
    assert decode(row[4]).creation == 2
