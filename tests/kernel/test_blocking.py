"""blocking(): its pool's size, what statistics() says of it, and that work
left running never keeps the program alive (docs/process-model.md, "Blocking work")."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from tests.conftest import run

import beamlet
from beamlet import receive, send, spawn

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **kw):
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_a_program_exits_when_run_returns_though_blocking_work_still_runs():
    """The pool's threads are daemons: an hour-long time.sleep left running
    does not keep the interpreter alive (it used to, for the whole hour)."""
    proc = _python(
        """
        import time, beamlet

        async def sleeper():
            await beamlet.blocking(time.sleep, 3600)

        async def main():
            beamlet.spawn(sleeper)
            await beamlet.sleep(0.05)
            return "main done"

        print(beamlet.run(main), flush=True)
        """
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "main done"


def test_ctrl_c_ends_a_program_whose_processes_read_sockets_through_blocking():
    proc = _python(
        """
        import signal, socket, beamlet

        # A shell may start background jobs with SIGINT ignored (then Python
        # installs no handler): make Ctrl-C raise KeyboardInterrupt here.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        PEERS = []  # the other ends stay open: the reads never return

        async def reader(sock):
            await beamlet.blocking(sock.recv, 1024)

        async def main():
            pairs = [socket.socketpair() for _ in range(10)]
            PEERS.extend(pairs)
            for a, _ in pairs:
                beamlet.spawn(reader, a)
            print("ready", flush=True)
            await beamlet.receive("never")

        beamlet.run(main)
        """
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err


def test_blocking_threads_bounds_the_pool_and_statistics_show_its_use(caplog):
    gate = threading.Event()

    async def hold(parent):
        send(parent, "holding")
        await beamlet.blocking(gate.wait, 30)

    async def main():
        me = beamlet.self()
        for _ in range(5):
            spawn(hold, me)
        for _ in range(5):
            await receive("holding", timeout=30)
        full = beamlet.statistics()
        while (full.blocking_busy, full.blocking_queued) != (3, 2):  # the threads take work
            await beamlet.sleep(0.001)
            full = beamlet.statistics()
        gate.set()
        while beamlet.statistics().blocking_busy:
            await beamlet.sleep(0.001)
        return full, beamlet.statistics()

    with caplog.at_level(logging.WARNING, logger="beamlet"):
        full, after = run(main, blocking_threads=3)
    assert (full.blocking_limit, full.blocking_threads, full.blocking_busy) == (3, 3, 3)
    assert full.blocking_queued == 2
    assert (after.blocking_busy, after.blocking_queued) == (0, 0)
    assert "all 3 blocking() threads are busy" in caplog.text


def test_with_enough_blocking_threads_idle_readers_do_not_starve_other_blocking_work():
    """70 processes reading sockets that stay silent hold 70 pool threads; with
    blocking_threads=80 another blocking() call still runs."""
    import socket

    async def reader(parent, sock):
        send(parent, "reading")
        try:
            await beamlet.blocking(sock.recv, 1024)
        except OSError:
            pass

    async def main():
        me = beamlet.self()
        pairs = [socket.socketpair() for _ in range(70)]
        for a, _ in pairs:
            spawn(reader, me, a)
        for _ in pairs:
            await receive("reading", timeout=30)
        answer = await beamlet.blocking(sum, [1, 2, 3])
        for a, b in pairs:
            b.close()
            a.close()
        return answer

    assert run(main, blocking_threads=80) == 6


def test_bad_pool_sizes_are_refused():
    async def main():
        return None

    with pytest.raises(ValueError, match="blocking_threads"):
        beamlet.run(main, blocking_threads=0)
    with pytest.raises(ValueError, match="max_threads"):
        beamlet.run(main, schedulers=2, max_threads=1)
