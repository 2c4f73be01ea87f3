"""Faults that need nodes in their own OS processes: a descriptor flood
(EMFILE) and EPMD going away with the node that served it (issue 10)."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dist_helpers import free_port, wait_until
from hostile import COOKIE, answers, blocking, run_node

from beamlet.distribution import epmd_client
from beamlet.distribution.epmd_server import EPMDServer
from beamlet.distribution.node import Node

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


def peer(name: str, epmd_port: int) -> Proc:
    return Proc("target_node.py", name, COOKIE, epmd_port)


def test_when_the_node_serving_epmd_stops_the_others_take_over_and_register_again(
    procs: list[Proc],
) -> None:
    """The node that runs the built-in EPMD stops: one of the others binds the
    port and serves EPMD, the rest register with it; all can be found again."""
    port = free_port()

    async def main(node: Node) -> None:
        assert node.epmd_server is not None  # this node serves EPMD
        for name in ("b", "c"):
            procs.append(await blocking(peer, f"{name}@127.0.0.1", port))
        names = await blocking(lambda: epmd_client.names(epmd_port=port))
        assert {n for n, _ in names} >= {"b", "c"}

    run_node(main, port, name="a@127.0.0.1")  # a stops, and its EPMD with it

    def both_found() -> bool:
        try:
            return {n for n, _ in epmd_client.names(epmd_port=port, timeout=1)} == {"b", "c"}
        except OSError:
            return False

    assert wait_until(both_found, 10, "b and c to register again")
    # The taker may log after the other has registered with it: collect the
    # logs until one says so (then give a second taker time to show itself).
    logs = {id(p): "" for p in procs}

    def takers() -> list[Proc]:
        for p in procs:
            logs[id(p)] += _drain(p)
        return [p for p in procs if "now served by this node" in logs[id(p)]]

    assert wait_until(lambda: bool(takers()), 10, "a node to say it serves EPMD now")
    assert len(takers()) == 1  # exactly one took the port over; the other registered with it
    for name in ("b", "c"):
        info = epmd_client.port_please(name, epmd_port=port)
        assert info is not None and answers(info.port)  # and each still answers


def _drain(p: Proc) -> str:
    lines = []
    while True:
        try:
            lines.append(p.errors.get_nowait())
        except queue.Empty:
            return "\n".join(lines)


def test_when_epmd_dies_the_node_serves_it_itself(procs: list[Proc]) -> None:
    port = free_port()
    host = peer("host@127.0.0.1", port)  # starts first: it runs the built-in EPMD
    procs.append(host)

    async def main(node: Node) -> bool:
        assert node.epmd_server is None  # registered with host's EPMD
        host.proc.send_signal(signal.SIGKILL)  # EPMD gone without a word

        def taken_over() -> bool:
            try:
                names = epmd_client.names(epmd_port=port, timeout=1)
            except OSError:
                return False
            return node.epmd_server is not None and [n for n, _ in names] == ["me"]

        return await blocking(wait_until, taken_over, 10, "this node to serve EPMD")

    assert run_node(main, port, name="me@127.0.0.1")
