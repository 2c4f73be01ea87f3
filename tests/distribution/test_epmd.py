"""EPMD: the messages from bytes, the client against the real epmd and the
built-in server, and real erl nodes registering with the built-in server."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from dist_helpers import ErlNode, free_port, wait_until

from beamlet.distribution import epmd, epmd_client
from beamlet.distribution.epmd import EPMDError, NodeInfo
from beamlet.distribution.epmd_server import EPMDServer, ensure_epmd


def test_alive2_req_layout() -> None:
    req = epmd.alive2_req(NodeInfo("py", 5555, epmd.NODE_HIDDEN))
    assert req == (
        struct.pack(">HBHBBHHH", len(req) - 2, 120, 5555, 72, 0, 6, 6, 2) + b"py" + b"\0\0"
    )
    got = epmd.parse_request(req)
    assert got is not None and got[0].info == NodeInfo("py", 5555, 72)


def test_responses_parse_incrementally() -> None:
    resp = epmd.alive2_resp(0, 0xDEADBEEF)
    assert [epmd.parse_alive2_resp(resp[:i]) for i in range(6)] == [None] * 6
    assert epmd.parse_alive2_resp(resp) == 0xDEADBEEF
    assert epmd.parse_alive2_resp(b"\x79\x00\x00\x07") == 7  # old ALIVE2_RESP
    with pytest.raises(EPMDError, match="refused"):
        epmd.parse_alive2_resp(b"\x76\x01\x00\x00\x00\x00")
    info = NodeInfo("n\u00f6de", 4000, extra=b"xy")
    port2 = epmd.port2_resp(info)
    assert all(epmd.parse_port2_resp(port2[:i]) is None for i in range(len(port2)))
    assert epmd.parse_port2_resp(port2) == (info,)
    assert epmd.parse_port2_resp(b"\x77\x01") == (None,)
    names = epmd.names_resp(4369, [("a", 1), ("b", 2)])
    assert epmd.parse_names_resp(names) == (4369, [("a", 1), ("b", 2)])


def test_bad_node_names_are_refused() -> None:
    with pytest.raises(EPMDError):
        epmd.alive2_req(NodeInfo("a@b", 1))
    with pytest.raises(EPMDError):
        epmd.parse_names_resp(b"\0\0\x11\x11garbage\n")


@pytest.mark.parametrize("which", ["builtin", pytest.param("real", marks=pytest.mark.interop)])
def test_register_lookup_names_unregister(which: str, request: pytest.FixtureRequest) -> None:
    if which == "real":
        port = request.getfixturevalue("real_epmd")
    else:
        port = request.getfixturevalue("builtin_epmd").port
    reg = epmd_client.register("pytest_node", 45678, hidden=True, epmd_port=port)
    try:
        assert reg.creation != 0
        info = epmd_client.port_please("pytest_node", epmd_port=port)
        assert info is not None
        assert (info.port, info.node_type, info.highest_version) == (45678, 72, 6)
        assert ("pytest_node", 45678) in epmd_client.names(epmd_port=port)
        assert epmd_client.port_please("nobody", epmd_port=port) is None
        with pytest.raises(EPMDError):
            epmd_client.register("pytest_node", 1, epmd_port=port)
    finally:
        reg.close()
    wait_until(
        lambda: epmd_client.port_please("pytest_node", epmd_port=port) is None,
        5,
        "the registration to go away with its connection",
    )


def test_ensure_epmd_starts_only_when_nothing_listens(builtin_epmd: EPMDServer) -> None:
    assert ensure_epmd(port=builtin_epmd.port) is None
    server = ensure_epmd(port=free_port())
    assert server is not None
    server.stop()


def test_builtin_server_survives_garbage(builtin_epmd: EPMDServer) -> None:
    import socket

    for junk in (b"\x00\x00", b"\x00\x03\xff\xff\xff", b"\xff\xff" + b"x" * 100):
        with socket.create_connection(("127.0.0.1", builtin_epmd.port), 2) as s:
            s.sendall(junk)
    assert epmd_client.names(epmd_port=builtin_epmd.port) == []


@pytest.mark.interop
@pytest.mark.parametrize("otp", ["25", "28"])
def test_real_erl_registers_with_the_builtin_server(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    code = (
        '{ok, Names} = net_adm:names(), io:format("names ~p~n", [lists:sort(Names)]),'
        '{port, P, 6} = erl_epmd:port_please("other", "127.0.0.1"), io:format("port ~p~n", [P]).'
    )
    other = erl_nodes(otp, "other@127.0.0.1", "c", builtin_epmd.port, "ok.")
    wait_until(lambda: "other" in builtin_epmd.registered(), 20, "erl to register")
    node = erl_nodes(otp, "x@127.0.0.1", "c", builtin_epmd.port, code)
    line = node.expect("names ")
    assert '"x"' in line and '"other"' in line
    port = int(node.expect("port ").split()[1])
    assert port == builtin_epmd.registered()["other"].port
    info = epmd_client.port_please("x", epmd_port=builtin_epmd.port)
    assert info is not None and info.node_type == epmd.NODE_NORMAL
    other.stop()
    wait_until(lambda: "other" not in builtin_epmd.registered(), 10, "unregistration")
