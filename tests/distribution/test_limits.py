"""Bounded descriptions of bad input and rate-limited log lines (beamlet.distribution.limits)."""

from __future__ import annotations

import logging

import pytest

from beamlet.distribution.control import Link, UnknownControl
from beamlet.distribution.limits import Limits, LogLimiter, brief, brief_exception
from beamlet.terms import Atom, Pid


@pytest.mark.parametrize(
    "value",
    [
        b"x" * (32 << 20),
        "y" * (1 << 20),
        10**5000,  # str() of it raises in CPython 3.11+
        [[[[[[[[1]]]]]]]] * 100_000,
        {i: (i, b"z" * 1000) for i in range(10_000)},
        UnknownControl((99, b"w" * (1 << 20), 10**5000)),
        (Atom("a"),) * 1_000_000,
    ],
    ids=["32MiB-binary", "1M-string", "5000-digit-int", "deep-list", "big-map", "control", "tuple"],
)
def test_a_description_is_short_whatever_the_value(value: object) -> None:
    text = brief(value, 200)
    assert len(text) <= 200


def test_a_description_says_what_and_how_big() -> None:
    assert brief(b"x" * 1000) == repr(b"x" * 40) + "... <1000 bytes>"
    assert brief(10**5000) == f"<integer of {(10**5000).bit_length()} bits>"
    assert brief((1, Atom("ok"), [])) == "(1, 'ok', [])"
    pid = Pid(1, 2, Atom("n@h"), 3)
    assert brief(Link(pid, pid)) == f"Link(from_pid={pid!r}, to_pid={pid!r})"
    assert brief(list(range(100))).endswith(", ... <100 items>]")


def test_an_exception_whose_message_cannot_be_built_is_still_described() -> None:
    class Bad(Exception):
        def __str__(self) -> str:
            return str(10**5000)

    assert brief_exception(Bad()) == "Bad: <message cannot be shown>"
    assert len(brief_exception(ValueError("v" * 10_000), 100)) <= 100 + len("ValueError: ")


def test_each_kind_of_line_is_logged_at_most_burst_times_per_period() -> None:
    limiter = LogLimiter(burst=3, period=10.0)
    got = [limiter.allow("bad", now=t) for t in (0, 1, 2, 3, 4)]
    assert got == [0, 0, 0, None, None]
    assert limiter.allow("other", now=5) == 0  # kinds are counted apart
    assert limiter.allow("bad", now=10.5) == 2  # a new period: says how many were dropped
    assert limiter.allow("bad", now=11) == 0


def test_suppressed_lines_are_counted_in_the_next_one(caplog: pytest.LogCaptureFixture) -> None:
    limiter = LogLimiter(burst=1, period=0.0001)
    log = logging.getLogger("beamlet.distribution.test")
    limiter.period = 1000.0
    with caplog.at_level(logging.WARNING, "beamlet.distribution.test"):
        assert limiter.log(log, logging.WARNING, "k", "bad %s", 1)
        assert not limiter.log(log, logging.WARNING, "k", "bad %s", 2)
        limiter.period = 0.0  # the period is over
        assert limiter.log(log, logging.WARNING, "k", "bad %s", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1",
        "bad 3 (1 similar lines suppressed)",
    ]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_handshakes"):
        Limits(max_handshakes=0)
    assert Limits(max_handshakes=2).max_handshakes == 2
