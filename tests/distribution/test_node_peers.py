"""Two beamlet nodes (two OS processes) talking: messages, calls, links,
monitors and node down, with no Erlang involved."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from dist_helpers import python_node

import beamlet
from beamlet import ANY, Down, Exit, NodeDown, receive, send
from beamlet.distribution.epmd_server import EPMDServer
from beamlet.otp import ServerExit, call

COOKIE = "peer-cookie"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture
def peer(builtin_epmd: EPMDServer):
    name = f"peer{os.getpid()}@127.0.0.1"
    with python_node(HERE / "peer_node.py", name, COOKIE, str(builtin_epmd.port)) as proc:
        yield name, proc


def run_node(main, epmd: EPMDServer, *args):
    return beamlet.run(
        main, *args, node=f"me{os.getpid()}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port
    )


def test_two_beamlet_nodes_exchange_messages_and_calls(peer, builtin_epmd: EPMDServer) -> None:
    name, _ = peer

    async def main():
        send(("echo", name), (beamlet.self(), {"nested": [1, (2, 3)], "bytes": b"x"}))
        echoed = await receive(("echo", ANY), timeout=20)
        await call(("kv", name), ("put", "answer", 42))
        got = await call(("kv", name), ("get", "answer"))
        pong = await beamlet.ping(name)
        assert name in beamlet.nodes()
        return echoed[1], got, pong

    echoed, got, pong = run_node(main, builtin_epmd)
    assert echoed == {"nested": [1, (2, 3)], "bytes": b"x"}  # str and bytes both survive
    assert (got, pong) == (42, "pong")


def test_a_crash_on_the_peer_reaches_the_caller_and_monitors(
    peer, builtin_epmd: EPMDServer
) -> None:
    name, _ = peer

    async def main():
        ref = beamlet.monitor(("kv", name))
        with pytest.raises(ServerExit) as info:
            await call(("kv", name), ("crash",))
        down = await receive(Down(ref, ANY, ANY), timeout=20)
        return info.value.reason, down.reason, down.pid

    reason, down_reason, who = run_node(main, builtin_epmd)
    expected = ("python_exception", "RuntimeError", "kv asked to crash")
    assert reason == expected and down_reason == expected and who == ("kv", name)


def test_the_peer_going_away_gives_noconnection_and_nodedown(
    peer, builtin_epmd: EPMDServer
) -> None:
    name, proc = peer

    async def main():
        beamlet.process_flag("trap_exit", True)
        beamlet.monitor_node(name)
        send(("echo", name), (beamlet.self(), "who are you"))
        echoed = await receive(("echo", ANY), timeout=20)
        del echoed
        # link to the peer's echo process (a remote pid taken from a call reply)
        ref = beamlet.monitor(("echo", name))
        send(("echo", name), "stop")  # its main returns: the node shuts down
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        nd = await receive(NodeDown, timeout=30)
        return down.reason, nd.node

    reason, node = run_node(main, builtin_epmd)
    assert reason in ("normal", "noconnection", "killed") and node == name
    proc.wait(20)


_ = Exit


def test_a_node_leaves_no_listener_or_acceptor_behind(builtin_epmd: EPMDServer) -> None:
    """After run() returns, the node's port is closed and its accept thread gone."""
    from beamlet.distribution.node import current_node

    async def main():
        node = current_node()
        assert node.listener is not None
        return node.listener.getsockname()[1], node.acceptor

    port, acceptor = run_node(main, builtin_epmd)
    assert acceptor is not None and not acceptor.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
