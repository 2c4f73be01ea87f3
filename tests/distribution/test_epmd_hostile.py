"""The built-in EPMD under hostile clients: bad requests cost only their own
connection, and every resource a client can make it hold is bounded
(docs/distribution.md, "Security")."""

from __future__ import annotations

import errno
import socket
import struct
import time

import pytest
from dist_helpers import wait_until

from beamlet.distribution import epmd, epmd_client
from beamlet.distribution.epmd import NodeInfo
from beamlet.distribution.epmd_server import EPMDServer


def raw_alive2(name: bytes, port: int = 4000, extra: bytes = b"") -> bytes:
    """An ALIVE2_REQ with whatever name bytes (the client library refuses bad ones)."""
    body = (
        bytes((epmd.ALIVE2_REQ,))
        + struct.pack(">HBBHH", port, epmd.NODE_NORMAL, 0, 6, 6)
        + struct.pack(">H", len(name))
        + name
        + struct.pack(">H", len(extra))
        + extra
    )
    return struct.pack(">H", len(body)) + body


def raw_port_please(name: bytes) -> bytes:
    body = bytes((epmd.PORT_PLEASE2_REQ,)) + name
    return struct.pack(">H", len(body)) + body


def exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request``; return everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(request)
        return read_to_close(s)


def read_to_close(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def read_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := s.recv(n - len(data))):
        data += chunk
    return data


@pytest.mark.parametrize(
    "name",
    [b"", b"a@b", b"x" * 256, "é".encode() * 256, b"nul\x00in"],
    ids=["empty", "at-sign", "256-bytes", "256-characters", "nul"],
)
def test_a_bad_node_name_is_refused_and_the_server_keeps_serving(
    builtin_epmd: EPMDServer, name: bytes
) -> None:
    """Defect 1: ALIVE2 with a name erl would never register was stored, and a
    PORT_PLEASE2 for it killed the server thread (every registration lost)."""
    port = builtin_epmd.port
    with epmd_client.register("good", 5555, epmd_port=port):
        with socket.create_connection(("127.0.0.1", port), 5) as registrant:
            registrant.sendall(raw_alive2(name))  # and keeps the connection, as a node does
            answer = read_exactly(registrant, 2)
            assert exchange(port, raw_port_please(name))[:2] == bytes((epmd.PORT2_RESP, 1))
        assert answer == bytes((epmd.ALIVE2_X_RESP, 1))  # refused, as by real epmd
        # still serving, with the good registration intact
        info = epmd_client.port_please("good", epmd_port=port)
        assert info is not None and info.port == 5555
        assert epmd_client.names(epmd_port=port) == [("good", 5555)]
    assert builtin_epmd.alive


def test_a_bug_while_answering_costs_only_that_connection(
    builtin_epmd: EPMDServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = builtin_epmd.port
    with epmd_client.register("good", 5555, epmd_port=port):

        def broken(*args: object) -> bytes:
            raise RuntimeError("a bug in the answer")

        monkeypatch.setattr(epmd, "port2_resp", broken)
        assert exchange(port, raw_port_please(b"good")) == b""  # that connection closed
        monkeypatch.undo()
        info = epmd_client.port_please("good", epmd_port=port)
        assert info == NodeInfo("good", 5555)
    assert builtin_epmd.alive


def closed_by_server(s: socket.socket, timeout: float = 5.0) -> bool:
    """True if the server closes ``s`` within ``timeout`` (without answering)."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_connections_with_a_request_in_progress_are_capped() -> None:
    with EPMDServer("127.0.0.1", 0, max_connections=4) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), 5) for _ in range(4)]
        try:
            wait_until(lambda: server.connections() == (4, 0), 5, "4 idle connections")
            with socket.create_connection(("127.0.0.1", server.port), 5) as one_more:
                assert closed_by_server(one_more)
            assert server.connections() == (4, 0)
        finally:
            for s in idle:
                s.close()
        wait_until(lambda: server.connections() == (0, 0), 5, "the idle ones to go")
        assert epmd_client.names(epmd_port=server.port) == []


def test_an_incomplete_request_is_dropped_after_the_request_timeout() -> None:
    with EPMDServer("127.0.0.1", 0, request_timeout=0.2) as server:
        with socket.create_connection(("127.0.0.1", server.port), 5) as slow:
            slow.sendall(b"\x00")  # half a length header, then nothing
            assert closed_by_server(slow)
        with socket.create_connection(("127.0.0.1", server.port), 5) as silent:
            assert closed_by_server(silent)
        # The server counts a connection out just after it closes it.
        wait_until(lambda: server.connections() == (0, 0), 5, "the connections to be counted out")
        # a registration is not a request in progress: it stays
        with epmd_client.register("stays", 1234, epmd_port=server.port):
            with socket.create_connection(("127.0.0.1", server.port), 5) as probe:
                assert closed_by_server(probe)  # a request timeout has passed since
            assert epmd_client.names(epmd_port=server.port) == [("stays", 1234)]


def test_registrations_are_capped() -> None:
    with EPMDServer("127.0.0.1", 0, max_registrations=2) as server:
        a = epmd_client.register("a", 1, epmd_port=server.port)
        with epmd_client.register("b", 2, epmd_port=server.port):
            with pytest.raises(epmd.EPMDError):
                epmd_client.register("c", 3, epmd_port=server.port)
            a.close()
            wait_until(lambda: "a" not in server.registered(), 5, "a to unregister")
            with epmd_client.register("c", 3, epmd_port=server.port):
                assert sorted(server.registered()) == ["b", "c"]


def test_an_oversized_or_second_request_closes_the_connection(builtin_epmd: EPMDServer) -> None:
    port = builtin_epmd.port
    for junk in (
        struct.pack(">H", epmd.MAX_REQUEST + 1) + b"x" * 100,  # refused at the length
        epmd.names_req() + epmd.names_req(),  # one request per connection
    ):
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.sendall(junk)
            assert read_to_close(s) == b""
    assert epmd_client.names(epmd_port=port) == []


class _Exhausted:
    """A listening socket whose accept() fails with EMFILE for ``seconds``
    after the first call, as when the process is out of descriptors."""

    def __init__(self, real: socket.socket, seconds: float) -> None:
        self.real = real
        self.seconds = seconds
        self.first: float | None = None
        self.calls = 0

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        self.calls += 1
        now = time.monotonic()
        if self.first is None:
            self.first = now
        if now - self.first < self.seconds:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()

    def close(self) -> None:
        self.real.close()


def test_running_out_of_descriptors_backs_off_instead_of_spinning() -> None:
    server = EPMDServer("127.0.0.1", 0)
    server.start()
    try:
        # swap the listener for one whose accept() fails for 0.3 s (the loop is
        # idle in select: it reads _listener only when a client arrives)
        assert server._listener is not None
        flaky = _Exhausted(server._listener, seconds=0.3)
        server._listener = flaky  # type: ignore[assignment]
        assert epmd_client.names(epmd_port=server.port, timeout=10) == []
        # each failure paused accepting (0.05, 0.1, 0.2 s, ...): a handful of
        # calls, not the thousands of a loop spinning on a readable listener
        assert flaky.calls <= 6
    finally:
        server.stop()
