"""Faults that need nodes in their own OS processes: a descriptor flood
(EMFILE) (issue 10)."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dist_helpers import wait_until
from hostile import COOKIE, answers

from beamlet.dist.epmd_server import EPMDServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class Proc:
    """A node in its own process; stderr lines collected for the test to wait on."""

    def __init__(self, script: str, *args: object) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script), *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        self.errors: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.proc.stdout is not None
        self.ready = self.proc.stdout.readline().split()
        assert self.ready and self.ready[0] == "ready", self.ready

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.put(line.rstrip("\n"))

    def wait_for_log(self, text: str, timeout: float) -> str:
        seen = []
        try:
            while True:
                line = self.errors.get(timeout=timeout)
                seen.append(line)
                if text in line:
                    return line
        except queue.Empty:
            raise AssertionError(f"no log line with {text!r} in {timeout}s: {seen!r}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def test_a_flood_that_exhausts_descriptors_does_not_stop_the_node_accepting(
    builtin_epmd: EPMDServer, procs: list[Proc]
) -> None:
    """Defect 2, for real: a node limited to 64 descriptors, flooded with idle
    connections, hits EMFILE in accept(); once the flood ends it accepts again."""
    target = Proc("target_node.py", "flooded@127.0.0.1", COOKIE, builtin_epmd.port, 64)
    procs.append(target)
    port = int(target.ready[1])
    flood: list[socket.socket] = []
    try:
        for _ in range(200):  # until the backlog is full too (connect then times out)
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), 0.5))
            except OSError:
                break
        target.wait_for_log("cannot accept connections (Too many open files)", 10)
    finally:
        for s in flood:
            s.close()
    # the node retries accept() with a back-off of at most 1 s
    assert wait_until(lambda: answers(port, timeout=2), 10, "the node to answer again")
