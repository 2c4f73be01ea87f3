"""Helpers for the tests to await inside a beamlet process (any test directory:
``from tests.helpers import assert_no_message``)."""

from __future__ import annotations

from typing import Any

from beamlet import receive


async def assert_no_message(*patterns: Any, timeout: float) -> None:
    """Fail if a message matching one of ``patterns`` (no patterns: any message)
    is in the mailbox or arrives within ``timeout`` seconds (0: only look at
    what is there now).

    ``timeout`` bounds the wait for something that must not happen; it is not
    a sleep to let something else happen. A failure names what arrived.
    """
    try:
        got = await receive(*patterns, timeout=timeout)
    except TimeoutError:
        return
    wanted = ", ".join(map(repr, patterns)) or "anything"
    raise AssertionError(
        f"expected no message matching {wanted} within {timeout} s, but got {got!r}"
    )
