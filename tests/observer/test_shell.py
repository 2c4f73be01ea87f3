"""The remote shell's server (beamlet.observer._shell) without a terminal or a
second node: a local process plays the client and speaks the session protocol."""

from __future__ import annotations

import io
import sys

import pytest
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Down
from beamlet.observer import _shell


async def _eval(shell, seq, source, timeout=5.0):
    """Send one input; return (outputs, kind, text)."""
    beamlet.send(shell, ("eval", seq, source))
    outputs = []
    while True:
        msg = await beamlet.receive(
            ("shell_output", seq, ANY), ("shell_result", seq, ANY, ANY), timeout=timeout
        )
        if msg[0] == "shell_output":
            outputs.append(msg[2])
        else:
            return "".join(outputs), msg[2], msg[3]


@pytest.fixture
def allowed():
    _shell.allow_remote_shell()
    try:
        yield
    finally:
        _shell.forbid_remote_shell()


def test_values_names_prints_awaits_and_errors(allowed):
    async def main():
        shell = _shell.start_session(beamlet.self())["shell"]
        got = [
            await _eval(shell, 1, "x = 20"),
            await _eval(shell, 2, "x + 22"),
            await _eval(shell, 3, "_ * 2"),
            await _eval(shell, 4, "print('hello', x); print('err', file=__import__('sys').stderr)"),
            await _eval(shell, 5, "beamlet.send(beamlet.self(), 'ping')\nawait beamlet.receive()"),
            await _eval(shell, 6, "def f(n):\n    return n * 3\n\nf(x)"),
            await _eval(shell, 7, "await beamlet.sleep(0.001)"),
            await _eval(shell, 8, "None"),
        ]
        error = await _eval(shell, 9, "1 / 0")
        syntax = await _eval(shell, 10, "def (")
        leave = await _eval(shell, 11, "exit()")
        after = await _eval(shell, 12, "x")
        return got, error, syntax, leave, after

    got, error, syntax, leave, after = beamlet.run(main)
    assert got == [
        ("", "none", ""),
        ("", "value", "42"),
        ("", "value", "84"),
        ("hello 20\nerr\n", "none", ""),
        ("", "value", "'ping'"),
        ("", "value", "60"),
        ("", "none", ""),
        ("", "none", ""),
    ]
    assert error[1] == "error"
    assert error[2].startswith("Traceback (most recent call last):\n")
    assert 'File "<remsh>", line 1' in error[2]
    assert error[2].endswith("ZeroDivisionError: division by zero\n")
    assert "_shell.py" not in error[2]
    assert syntax[1] == "error" and "SyntaxError" in syntax[2]
    assert leave[1] == "error" and "SystemExit" in leave[2]
    assert after == ("", "value", "20")


def test_an_interrupt_kills_the_evaluation_not_the_session(allowed):
    async def main():
        shell = _shell.start_session(beamlet.self())["shell"]
        first = await _eval(shell, 1, "n = 1\nme = beamlet.self()\nme")
        beamlet.send(shell, ("eval", 2, "print('spinning')\nm = 0\nwhile True:\n    m += 1"))
        # its output arrives before it is interrupted: the loop is running
        assert await beamlet.receive(("shell_output", 2, ANY), timeout=5) == (
            "shell_output",
            2,
            "spinning",
        )
        beamlet.send(shell, ("interrupt", 2))
        interrupted = await beamlet.receive(("shell_result", 2, ANY, ANY), timeout=5)
        again = await _eval(shell, 3, "n + 1")
        return first, interrupted, again, await _eval(shell, 4, "me"), beamlet.is_alive(shell)

    first, interrupted, again, after, alive = beamlet.run(main, schedulers=2)
    assert interrupted == ("shell_result", 2, "interrupted", "KeyboardInterrupt\n")
    assert again == ("", "value", "2")
    assert alive
    assert after[1] == "value" and after[2] == first[2]  # the names survive the evaluator


def test_the_session_ends_with_its_client_and_kills_its_evaluation(allowed):
    async def main():
        async def client(parent):
            info = _shell.start_session(beamlet.self())
            beamlet.send(info["shell"], ("eval", 1, "n = 0\nwhile True:\n    n += 1"))
            beamlet.send(parent, info["shell"])
            await beamlet.receive()  # until killed

        pid = beamlet.spawn(client, beamlet.self())
        shell = await beamlet.receive(timeout=5)
        ref = beamlet.monitor(shell)
        beamlet.exit(pid, "kill")
        down = await beamlet.receive(Down(ref, ANY, ANY), timeout=5)
        return down.reason

    assert beamlet.run(main, schedulers=2) == "normal"


def test_the_evaluator_and_its_mailbox_persist_between_inputs(allowed):
    async def main():
        shell = _shell.start_session(beamlet.self())["shell"]
        return [
            await _eval(shell, 1, "me = beamlet.self()\nbeamlet.send(me, ('later', 1))"),
            await _eval(shell, 2, "beamlet.self() == me"),
            await _eval(shell, 3, "await beamlet.receive(('later', beamlet.ANY), timeout=5)"),
            await _eval(shell, 4, "raise beamlet.ProcessExit('bye')"),
            await _eval(shell, 5, "beamlet.self() == me, me is not None"),
        ]

    got = beamlet.run(main)
    assert got[0] == ("", "value", "('later', 1)")
    assert got[1] == ("", "value", "True")
    assert got[2] == ("", "value", "('later', 1)")
    assert got[3] == ("", "error", "the shell's evaluator exited: 'bye'\n")
    assert got[4] == ("", "value", "(False, True)")  # a new evaluator, the same names


def test_forbid_ends_the_sessions_and_restores_the_streams():
    before = sys.stdout
    _shell.allow_remote_shell()
    assert isinstance(sys.stdout, _shell._Router)

    async def main():
        shell = _shell.start_session(beamlet.self())["shell"]
        ref = beamlet.monitor(shell)
        _shell.forbid_remote_shell()
        down = await beamlet.receive(Down(ref, ANY, ANY), timeout=5)
        return down.reason

    assert beamlet.run(main) == "killed"
    assert sys.stdout is before
    assert not _shell.remote_shell_allowed()


def test_output_of_other_processes_is_not_captured(allowed, capsys):
    async def main():
        shell = _shell.start_session(beamlet.self())["shell"]

        async def bystander():
            print("bystander")

        beamlet.spawn(bystander)
        result = await _eval(shell, 1, "print('mine')")
        await assert_no_message(timeout=0)
        return result

    assert beamlet.run(main) == ("mine\n", "none", "")
    assert "bystander" in capsys.readouterr().out


def test_the_rpc_entry_checks_its_argument(allowed):
    with pytest.raises(TypeError, match="needs the client's pid"):
        _shell._rpc_start("not a pid")


def test_the_router_passes_other_writes_through():
    buf = io.StringIO()
    router = _shell._Router(buf)
    router.write("plain")
    router.flush()
    assert buf.getvalue() == "plain"
    assert router.getvalue() == "plain"  # other attributes: the stream's
