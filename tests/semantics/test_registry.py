"""[REG-*] registered names (docs/semantics.md)."""

from __future__ import annotations

import pytest
from tests.conftest import run
from tests.semantics.helpers import die_with, wait_forever

import beamlet
from beamlet import (
    ANY,
    BadArg,
    Down,
    register,
    registered,
    send,
    spawn,
    spawn_monitor,
    unregister,
    whereis,
)


def test_register_refuses_a_taken_name():
    """[REG-1]"""

    async def main():
        a, b = spawn(wait_forever), spawn(wait_forever)
        register("svc", a)
        with pytest.raises(BadArg, match="already registered"):
            register("svc", b)
        return whereis("svc") == a

    assert run(main)


def test_register_refuses_a_dead_process():
    """[REG-1]"""

    async def main():
        pid, ref = spawn_monitor(die_with, "normal")
        send(pid, "go")
        await beamlet.receive(Down(ref, pid, ANY), timeout=30)
        with pytest.raises(BadArg):
            register("ghost", pid)
        return whereis("ghost")

    assert run(main) is None


def test_register_refuses_a_second_name():
    """[REG-1]"""

    async def main():
        pid = spawn(wait_forever)
        register("one", pid)
        with pytest.raises(BadArg, match="already registered as"):
            register("two", pid)
        return sorted(n for n in registered() if n in ("one", "two"))

    assert run(main) == ["one"]


def test_a_name_is_released_when_its_process_dies():
    """[REG-2]"""

    async def main():
        pid, ref = spawn_monitor(die_with, "normal")
        register("temp", pid)
        send("temp", "go")
        await beamlet.receive(Down(ref, pid, ANY), timeout=30)
        gone = whereis("temp")
        replacement = spawn(wait_forever)
        register("temp", replacement)
        return gone, whereis("temp") == replacement

    assert run(main) == (None, True)


def test_unregister_and_whereis():
    """[REG-2]"""

    async def main():
        pid = spawn(wait_forever)
        register("x", pid)
        unregister("x")
        with pytest.raises(BadArg):
            unregister("x")
        with pytest.raises(BadArg):
            send("x", "hello")
        register("x", pid)  # the process may be named again
        return whereis("x") == pid, whereis("nobody")

    assert run(main) == (True, None)
