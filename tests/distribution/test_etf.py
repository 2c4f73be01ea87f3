"""ETF codec: round trips over the Python mapping, node context, errors, fuzzing."""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beamlet.distribution.etf import (
    BitBinary,
    ETFContext,
    ETFDecodeError,
    Export,
    FrozenList,
    FrozenMap,
    Fun,
    ImproperList,
    Port,
    decode,
    decode_term,
    encode,
    encode_term,
)
from beamlet.terms import Atom, Pid, Ref

U32 = st.integers(0, 2**32 - 1)
NODES = st.sampled_from([Atom("a@h"), Atom("b@127.0.0.1"), Atom("\u00fc@h\u00f6st")])

atoms = st.text(max_size=255).filter(lambda s: s not in ("true", "false", "undefined")).map(Atom)
pids = st.one_of(
    st.builds(
        Pid, st.integers(0, 2**60 - 1)
    ),  # local: the kernel's one number (60 bits on the wire)
    st.builds(Pid, U32, U32, NODES, U32),
)
refs = st.one_of(
    st.builds(Ref, st.tuples(U32, U32, U32)),
    st.builds(Ref, st.lists(U32, min_size=1, max_size=5).map(tuple), NODES, U32),
)
ports = st.one_of(
    st.builds(Port, st.integers(0, 2**64 - 1)),
    st.builds(Port, st.integers(0, 2**64 - 1), NODES, U32),
)
bitbins = st.builds(BitBinary, st.binary(min_size=1, max_size=20), st.integers(1, 7))
exports = st.builds(Export, atoms, atoms, st.integers(0, 255))
hashable_leaves = st.one_of(
    atoms,
    st.sampled_from([True, False, None]),
    st.integers(),
    st.integers(-(2**3000), 2**3000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=64),
    bitbins,
    pids,
    refs,
    ports,
    exports,
)
hashable_terms = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(tuple),
        st.lists(inner, max_size=5).map(FrozenList),
    ),
    max_leaves=10,
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(hashable_terms, inner, max_size=5),
        st.builds(
            ImproperList,
            st.lists(inner, min_size=1, max_size=4).map(tuple),
            hashable_leaves.filter(lambda t: not isinstance(t, (list, tuple))),
        ),
    )


terms = st.recursive(hashable_leaves, _containers, max_leaves=40)


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells -0.0 from 0.0 and dict order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(terms)
def test_round_trip_over_the_mapping(term: Any) -> None:
    data = encode(term)
    back = decode(data)
    assert _same(back, term)
    assert encode(back) == data


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(terms)
def test_compressed_round_trip(term: Any) -> None:
    assert _same(decode(encode(term, compressed=True)), term)


@given(st.text())
def test_str_encodes_as_a_utf8_binary_and_decodes_to_bytes(s: str) -> None:
    assert encode(s) == encode(s.encode())
    assert decode(encode(s)) == s.encode()


def test_atoms_true_false_undefined_map_to_python_constants() -> None:
    assert decode(encode(Atom("true"))) is True
    assert decode(encode(Atom("undefined"))) is None
    assert encode(True) == b"\x83w\x04true"
    assert encode(None) == b"\x83w\x09undefined"


def test_byte_lists_use_string_ext_like_term_to_binary() -> None:
    assert encode([104, 105]) == b"\x83k\x00\x02hi"
    # bools are atoms, not bytes: no STRING_EXT
    assert encode([True, 1]) == b"\x83l\x00\x00\x00\x02w\x04truea\x01j"
    assert decode(encode([300, 1])) == [300, 1]
    assert encode([7] * 65536)[1] == 108  # too long for STRING_EXT


def test_local_identity_follows_the_context() -> None:
    me = ETFContext(Atom("py@127.0.0.1"), 1234)
    other = ETFContext(Atom("erl@127.0.0.1"), 99)
    local = Pid(7 + (3 << 28))  # on the wire: ID 7, Serial 3
    data = encode((local, Ref((1, 2, 3)), Port(5)), me)
    assert b"py@127.0.0.1" in data
    assert decode(data, me) == (local, Ref((1, 2, 3)), Port(5))
    seen_elsewhere = decode(data, other)
    assert seen_elsewhere[0] == Pid(7, 3, Atom("py@127.0.0.1"), 1234)
    assert seen_elsewhere[1] == Ref((1, 2, 3), Atom("py@127.0.0.1"), 1234)
    # ... and sent back it is ours again
    assert decode(encode(seen_elsewhere, other), me)[0] == local
    # an older incarnation of this node (another creation) stays remote
    old = Pid(7, 3, Atom("py@127.0.0.1"), 1233)
    assert decode(encode(old, me), me) == old


def test_local_pid_numbers_of_any_size_survive_the_wire_words() -> None:
    for n in (0, 5, 2**28 - 1, 2**28, 2**32 + 5, 2**60 - 1):
        assert decode(encode(Pid(n))) == Pid(n)
        assert Pid.from_wire(*Pid(n).wire_words()) == Pid(n)
    assert Pid(2**28 + 5).wire_words() == (5, 1)


def test_remote_pid_words_are_masked_to_32_bits_not_rejected() -> None:
    node = Atom("erl@127.0.0.1")
    assert decode(encode(Pid(2**32 + 5, 2**40, node, 1))) == Pid(5, 0, node, 1)


def test_unsupported_types_raise_type_error_naming_the_type() -> None:
    with pytest.raises(TypeError, match="frozenset"):
        encode(frozenset({1}))
    with pytest.raises(TypeError, match="set"):
        encode({1, 2})
    with pytest.raises(TypeError, match="object"):
        encode([object()])
    with pytest.raises(TypeError, match="complex"):
        encode(1j)


def test_unrepresentable_values_raise_value_error() -> None:
    with pytest.raises(ValueError, match="finite"):
        encode(math.inf)
    with pytest.raises(ValueError, match="finite"):
        encode([math.nan])
    with pytest.raises(ValueError, match="atom too long"):
        encode(Atom("x" * 256))
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="nested too deeply"):
        encode(cyclic)


def test_subclasses_encode_as_their_base_type() -> None:
    from enum import IntEnum
    from typing import NamedTuple

    class Color(IntEnum):
        RED = 1

    class Point(NamedTuple):
        x: int
        y: int

    assert decode(encode([Color.RED, Point(1, 2)])) == [1, (1, 2)]


def test_improper_list_and_frozen_values() -> None:
    with pytest.raises(ValueError):
        ImproperList((), 1)
    with pytest.raises(ValueError):
        ImproperList((1,), [2])
    assert FrozenList([1, 2]) == [1, 2]
    assert FrozenList([1, 2]) != (1, 2)
    assert hash(FrozenList([1, 2])) != hash((1, 2)) or FrozenList([1, 2]) != (1, 2)
    assert FrozenMap({1: 2}) == {1: 2}
    assert {FrozenMap({1: 2}): 1}[FrozenMap([(1, 2)])] == 1
    # a list key nested in a map key is frozen all the way down
    data = encode({FrozenMap({FrozenList([1]): [2]}): 0})
    (key,) = decode(data)
    assert key == {FrozenList([1]): [2]} and isinstance(key, FrozenMap)
    assert encode(decode(data)) == data


def test_bit_binary_zeroes_unused_bits() -> None:
    assert BitBinary(b"\xff", 3) == BitBinary(b"\xe0", 3)
    assert BitBinary(b"\x00\xff", 1).bit_size == 9
    with pytest.raises(ValueError):
        BitBinary(b"", 3)


def test_fun_re_encodes_from_its_fields() -> None:
    f = Fun(Atom("m"), 1, bytes(range(16)), 3, 3, 123456, Pid(1, 0), (1, [2], b"3"))
    data = encode(f)
    assert decode(data) == f
    size = struct.unpack(">I", data[2:6])[0]
    assert size == len(data) - 2  # Size counts itself, not the tag


def test_decode_term_reports_where_the_term_ends() -> None:
    body = encode_term((1, 2)) + encode_term(Atom("x"))
    first, end = decode_term(body)
    assert first == (1, 2)
    assert decode_term(body, end) == (Atom("x"), len(body))


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x84j", "version"),
        (b"\x83", "truncated"),
        (b"\x83b\x00\x00", "truncated INTEGER_EXT"),
        (b"\x83\xc8", "unknown term tag 200"),
        (b"\x83l\xff\xff\xff\xffj", "exceeds the remaining input"),
        (b"\x83h\xff", "exceeds the remaining input"),
        (b"\x83t\xff\xff\xff\xff", "exceeds the remaining input"),
        (b"\x83m\xff\xff\xff\xff", "truncated BINARY_EXT"),
        (b"\x83o\xff\xff\xff\xff\x00", "truncated LARGE_BIG_EXT"),
        (b"\x83jj", "trailing"),
        (b"\x83w\x01\xff", "UTF-8"),
        (b"\x83R\x00", "ATOM_CACHE_REF"),
        (b"\x83y\x00", "LOCAL_EXT"),
        (b"\x83u\x00\x00\x00\x00", "FUN_EXT"),
        (b"\x83F\x7f\xf0\x00\x00\x00\x00\x00\x00", "not finite"),
        (b"\x83M\x00\x00\x00\x01\x09\x00", "BIT_BINARY_EXT"),
        (b"\x83X\x61\x01", "expected an atom"),
        (b"\x83h\x01P", "only allowed right after 131"),
        (b"\x83P\x00\x00\x00\x10" + zlib.compress(b"j"), "header says 16"),
        (b"\x83P\xff\xff\xff\xff" + zlib.compress(b"j"), "over the"),
        (b"\x83P\x00\x00\x00\x01garbage", "zlib"),
        (b"\x83t\x00\x00\x00\x02a\x01a\x01a\x01a\x02", "equal in Python"),
        (b"\x83Z\x00\x06w\x01a" + b"\x00" * 28, "id words"),
    ],
)
def test_bad_input_raises_etf_decode_error_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ETFDecodeError, match=message):
        decode(data)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep = b"\x83" + b"h\x01" * 100_000 + b"j"
    with pytest.raises(ETFDecodeError, match="nested deeper"):
        decode(deep)
    lists = b"\x83" + b"l\x00\x00\x00\x01" * 5000 + b"j" * 5001
    with pytest.raises(ETFDecodeError, match="nested deeper"):
        decode(lists)
    assert decode(b"\x83" + b"h\x01" * 50 + b"j", max_depth=50) is not None


def test_a_zip_bomb_is_capped() -> None:
    bomb = b"\x83P" + struct.pack(">I", 50_000_001) + zlib.compress(b"m" + b"\0" * 50_000_000)
    with pytest.raises(ETFDecodeError, match="over the"):
        decode(bomb, max_uncompressed=1_000_000)


@settings(max_examples=1500)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes_only_raise_decode_error(data: bytes) -> None:
    for blob in (data, b"\x83" + data):
        try:
            decode(blob)
        except ETFDecodeError:
            pass


def _mutate_and_decode(term: Any, data: st.DataObject) -> None:
    blob = bytearray(encode(term, compressed=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "flip" and blob:
            blob[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del blob[i:]
        elif op == "insert":
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and blob:
            del blob[i]
    try:
        decode(bytes(blob))
    except ETFDecodeError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(terms, st.data())
def test_fuzz_mutated_encodings_only_raise_decode_error(term: Any, data: st.DataObject) -> None:
    _mutate_and_decode(term, data)


@pytest.mark.slow
@pytest.mark.timeout(900)
@settings(max_examples=5_000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(terms, st.data())
def test_fuzz_mutated_encodings_long_run(term: Any, data: st.DataObject) -> None:
    _mutate_and_decode(term, data)


def test_text_mode_keeps_str_and_bytes_apart_and_reads_erlang_strings_as_str() -> None:
    text = ETFContext(Atom("py@127.0.0.1"), 1, True)
    term = ("héllo", b"\x00raw", b"ascii bytes", {"k": b"v"})
    assert decode(encode(term, text), text) == term
    # what Erlang sends for <<"José">> (BINARY_EXT) reads as str; invalid UTF-8 stays bytes
    assert decode(encode("José".encode()), text) == "José"
    assert decode(encode(b"\xff\xfe"), text) == b"\xff\xfe"
    # a plain decoder (Erlang's view) sees bytes as an ordinary binary
    assert decode(encode(b"abc", text)) == b"abc"


# -- what one term may cost (docs/distribution.md, "Security") ------------------------

_P = (1 << 61) - 1  # CPython hashes an int modulo this prime


def _map_ext(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x83t" + struct.pack(">I", len(pairs)) + b"".join(k + v for k, v in pairs)


def _int_ext(n: int) -> bytes:
    return encode(n)[1:]


def test_a_map_whose_keys_collide_in_pythons_hash_is_refused_before_it_goes_quadratic() -> None:
    """876 KB of such a map took 14 s of CPU; now it is refused at the 33rd key."""
    keys = [_int_ext(i * _P) for i in range(1, 20_001)]  # all hash to 0
    assert len({hash(i * _P) for i in range(1, 100)}) == 1
    data = _map_ext([(k, b"a\x01") for k in keys])
    with pytest.raises(ETFDecodeError, match="share one hash value"):
        decode(data)
    # colliding tuples too (their hash is built from their items')
    tuples = [b"h\x01" + _int_ext(i * _P) for i in range(1, 100)]
    with pytest.raises(ETFDecodeError, match="share one hash value"):
        decode(_map_ext([(k, b"a\x01") for k in tuples]))


def test_a_map_with_a_few_colliding_keys_still_decodes() -> None:
    keys = [i * _P for i in range(1, 33)] + list(range(1, 1000))  # 32 share a hash: allowed
    assert decode(encode({k: 1 for k in keys})) == {k: 1 for k in keys}
    assert decode(encode({-1: "a", -2: "b"})) == {-1: b"a", -2: b"b"}  # hash(-1) == hash(-2)
    with pytest.raises(ETFDecodeError, match="share one hash value"):
        decode(encode({k: 1 for k in keys}), max_equal_hashes=31)


@pytest.mark.parametrize(
    "data",
    [
        b"\x83l" + struct.pack(">I", 200_000) + b"j" * 200_000 + b"j",  # [[], [], ...]: 1 byte each
        b"\x83h\x02" + (b"l" + struct.pack(">I", 60_000) + b"a\x01" * 60_000 + b"j") * 2,
        b"\x83t"
        + struct.pack(">I", 60_000)
        + b"".join(b"b" + struct.pack(">i", i) + b"t\x00\x00\x00\x00" for i in range(60_000)),
        b"\x83l" + struct.pack(">I", 2) + (b"k\xff\xff" + b"\x01" * 0xFFFF) * 2 + b"j",
    ],
    ids=["list-of-nils", "tuple-of-lists", "map", "string"],
)
def test_a_term_with_more_elements_than_allowed_is_refused(data: bytes) -> None:
    assert decode(data) is not None  # no cap by default
    with pytest.raises(ETFDecodeError, match="more than 100000 list, tuple and map elements"):
        decode(data, max_elements=100_000)
