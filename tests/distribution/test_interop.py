"""Interop smoke tests: beamlet's sans-I/O layers against real Erlang nodes.

A small driver in this file owns a blocking socket and pushes its bytes
through beamlet's EPMD, handshake, framing, control and ETF layers -- the job
node.py will do.  Each test starts real ``erl`` nodes (OTP 25, and OTP 28 when
../shared/tools/otp28.sh provides it) on 127.0.0.1 with a private EPMD port,
and kills them at teardown.  Nothing sleeps: every wait polls state against a
deadline.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from dist_helpers import ErlNode, wait_until

from beamlet.distribution import control as c
from beamlet.distribution import epmd_client
from beamlet.distribution.control import DistDecoder, DistEncoder
from beamlet.distribution.epmd_server import EPMDServer
from beamlet.distribution.etf import ETFContext, ImproperList
from beamlet.distribution.framing import TICK, PacketReader, frame
from beamlet.distribution.handshake import Acceptor, Complete, Failed, Initiator, Send
from beamlet.terms import Atom, Pid, Ref

pytestmark = pytest.mark.interop

PY = "py@127.0.0.1"
ERL = "erl@127.0.0.1"
COOKIE = "beamlet_test_cookie"
OTPS = ["25", "28"]


class HandshakeRefused(Exception):
    pass


class Connection:
    """What node.py will do for one connection, with a blocking socket."""

    def __init__(self, sock: socket.socket, ctx: ETFContext) -> None:
        self.sock = sock
        self.ctx = ctx
        self.done: Complete | None = None
        self.reader = PacketReader(4)
        self.decoder = DistDecoder(ctx)
        self.encoder = DistEncoder(ctx)

    def _recv(self, deadline: float) -> bytes:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError("timed out waiting for the peer") from None
        return data

    def handshake(
        self, machine: Initiator | Acceptor, first: list[Any], timeout: float = 10
    ) -> Complete:
        deadline = time.monotonic() + timeout
        events = first
        while True:
            for ev in events:
                if isinstance(ev, Send):
                    self.sock.sendall(ev.data)
                elif isinstance(ev, Failed):
                    raise HandshakeRefused(ev)
                elif isinstance(ev, Complete):
                    self.done = ev
                    self.encoder = DistEncoder(self.ctx, ev.flags)
                    self.reader.append(ev.leftover)
                    return ev
            data = self._recv(deadline)
            if not data:
                raise HandshakeRefused("the peer closed the connection during the handshake")
            events = machine.receive(data)

    def send(self, ctl: c.Control, *payload: Any) -> None:
        for body in self.encoder.encode(ctl, *payload):
            self.sock.sendall(frame(body))

    def receive(self, timeout: float = 10) -> tuple[c.Control, Any]:
        """The next message, answering ticks on the way."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.reader.next_packet()
            if packet is None:
                data = self._recv(deadline)
                if not data:
                    raise ConnectionError("the peer closed the connection")
                self.reader.append(data)
                continue
            if packet == b"":
                self.sock.sendall(TICK)
                continue
            got = self.decoder.decode(packet)
            if got is not None:
                return got

    def receive_until(self, pred: Callable[[c.Control, Any], bool], timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            ctl, payload = self.receive(max(0.01, deadline - time.monotonic()))
            if pred(ctl, payload):
                return ctl, payload

    def close(self) -> None:
        self.sock.close()


def _creation() -> int:
    return secrets.randbits(32) or 1


ECHO_NODE = """
Echo = fun Loop() ->
    receive
        {From, Msg} -> From ! {echo, Msg}, Loop()
    end
end,
register(echo, spawn(Echo)),
ok = net_kernel:monitor_nodes(true, [{node_type, all}]),
io:format("ready~n"),
receive {nodeup, N, _} -> {pyreceiver, N} ! {hello_from_erlang, self()} end,
receive stop -> ok end.
"""


@pytest.mark.parametrize("otp", OTPS)
def test_connect_to_erl_as_hidden_node_and_exchange_messages(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    node = erl_nodes(otp, ERL, COOKIE, builtin_epmd.port, ECHO_NODE)
    node.expect("ready")
    info = epmd_client.port_please("erl", epmd_port=builtin_epmd.port)
    assert info is not None
    ctx = ETFContext(Atom(PY), _creation())
    conn = Connection(socket.create_connection(("127.0.0.1", info.port), 5), ctx)
    try:
        a = Initiator(PY, COOKIE, ctx.creation, peer_name=ERL, hidden=True)
        done = conn.handshake(a, a.start())
        assert done.peer_name == ERL and not done.peer_hidden
        # Erlang's side of the connection: net_kernel tells monitor_nodes
        # subscribers, which greets us by registered name.
        ctl, payload = conn.receive_until(lambda ctl, _: isinstance(ctl, c.RegSend))
        assert ctl.to_name == "pyreceiver"
        assert payload[0] == "hello_from_erlang" and payload[1].node == ERL
        # REG_SEND to a registered Erlang process that replies to our pid.
        me = Pid(1, 0)
        conn.send(c.RegSend(me, Atom("echo")), (me, [1, 2.5, b"bin", {Atom("k"): "v"}]))
        ctl, payload = conn.receive_until(lambda ctl, _: isinstance(ctl, (c.Send, c.SendSender)))
        assert ctl.to_pid == me  # decoded back as *our* local pid
        assert conn.decoder.atom_cache.size > 0  # erts used the atom cache
        assert payload == (Atom("echo"), [1, 2.5, b"bin", {Atom("k"): b"v"}])
        # a large message comes back in fragments and is reassembled
        big = bytes(range(256)) * 4096
        conn.send(c.RegSend(me, Atom("echo")), (me, big))
        ctl, payload = conn.receive_until(lambda ctl, _: isinstance(ctl, (c.Send, c.SendSender)))
        assert payload == (Atom("echo"), big)
        assert conn.decoder.fragmented_messages >= 1  # it did come in fragments
    finally:
        conn.close()


@pytest.mark.parametrize("otp", OTPS)
def test_connecting_with_the_wrong_cookie_is_refused(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    node = erl_nodes(otp, ERL, COOKIE, builtin_epmd.port, ECHO_NODE)
    node.expect("ready")
    info = epmd_client.port_please("erl", epmd_port=builtin_epmd.port)
    assert info is not None
    conn = Connection(
        socket.create_connection(("127.0.0.1", info.port), 5), ETFContext(Atom(PY), 1)
    )
    try:
        a = Initiator(PY, "wrong", 1, peer_name=ERL, hidden=True)
        with pytest.raises(HandshakeRefused, match="closed the connection"):
            conn.handshake(a, a.start())
    finally:
        conn.close()


PINGER = """
Res = net_adm:ping('py@127.0.0.1'),
io:format("ping ~p~n", [Res]),
case Res of
    pong ->
        {pyreceiver, 'py@127.0.0.1'} ! {from_erl, self(), [node() | nodes(connected)]},
        receive stop -> ok end;
    pang -> ok
end.
"""


def _accept_one(
    listener: socket.socket, ctx: ETFContext, cookie: str, timeout: float = 20
) -> tuple[Connection, Acceptor]:
    listener.settimeout(timeout)
    sock, _ = listener.accept()
    conn = Connection(sock, ctx)
    b = Acceptor(PY, cookie, ctx.creation, hidden=True)
    return conn, b


@pytest.mark.parametrize("reply_via", ["pid", "alias"])
@pytest.mark.parametrize("otp", OTPS)
def test_erl_pings_us_and_gets_pong(
    otp: str, reply_via: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with epmd_client.register("py", port, hidden=True, epmd_port=builtin_epmd.port) as reg:
            ctx = ETFContext(Atom(PY), reg.creation)
            node = erl_nodes(otp, ERL, COOKIE, builtin_epmd.port, PINGER)
            conn, b = _accept_one(listener, ctx, COOKIE)
            try:
                done = conn.handshake(b, [])
                assert done.peer_name == ERL
                # net_adm:ping is a gen_server call to our net_kernel
                _, payload = conn.receive_until(
                    lambda ctl, _: isinstance(ctl, c.RegSend) and ctl.to_name == "net_kernel"
                )
                label, (from_pid, tag), request = payload
                assert label == "$gen_call" and request == (Atom("is_auth"), Atom(ERL))
                assert isinstance(from_pid, Pid) and from_pid.node == ERL
                # OTP 24+: the tag is the improper list [alias | MonitorRef]
                assert isinstance(tag, ImproperList) and tag.elements == (Atom("alias"),)
                assert isinstance(tag.tail, Ref) and tag.tail.node == ERL
                me = Pid(1, 0)
                if reply_via == "alias":
                    conn.send(c.AliasSend(me, tag.tail), (tag, Atom("yes")))
                else:
                    conn.send(c.SendSender(me, from_pid), (tag, Atom("yes")))
                assert node.expect("ping ") == "ping pong"
                _, payload = conn.receive_until(
                    lambda ctl, _: isinstance(ctl, c.RegSend) and ctl.to_name == "pyreceiver"
                )
                assert payload[0] == "from_erl" and Atom(PY) in payload[2]
            finally:
                conn.close()


@pytest.mark.parametrize("otp", OTPS)
def test_erl_with_the_wrong_cookie_is_refused_and_gets_pang(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with epmd_client.register("py", port, hidden=True, epmd_port=builtin_epmd.port) as reg:
            ctx = ETFContext(Atom(PY), reg.creation)
            node = erl_nodes(otp, ERL, "not_the_cookie", builtin_epmd.port, PINGER)
            conn, b = _accept_one(listener, ctx, COOKIE)
            try:
                with pytest.raises(HandshakeRefused) as info:
                    conn.handshake(b, [])
                failure = info.value.args[0]
                assert isinstance(failure, Failed) and failure.reason == "bad_cookie"
            finally:
                conn.close()
            assert node.expect("ping ") == "ping pang"


def test_connect_through_the_real_epmd(real_epmd: int, erl_nodes: Callable[..., ErlNode]) -> None:
    node = erl_nodes("25", ERL, COOKIE, real_epmd, ECHO_NODE)
    node.expect("ready")
    info = wait_until(
        lambda: epmd_client.port_please("erl", epmd_port=real_epmd), 10, "erl in epmd"
    )
    ctx = ETFContext(Atom(PY), _creation())
    conn = Connection(socket.create_connection(("127.0.0.1", info.port), 5), ctx)
    try:
        a = Initiator(PY, COOKIE, ctx.creation, peer_name=ERL, hidden=True)
        assert conn.handshake(a, a.start()).peer_name == ERL
        _, payload = conn.receive_until(lambda ctl, _: isinstance(ctl, c.RegSend))
        assert payload[0] == "hello_from_erlang"
    finally:
        conn.close()


VISIBLE_WATCHER = """
ok = net_kernel:monitor_nodes(true),
io:format("ready~n"),
receive {nodeup, N} ->
    io:format("nodeup ~s visible=~p~n", [N, lists:member(N, nodes())]),
    {pyreceiver, N} ! {hello, self()}
end,
receive stop -> ok end.
"""


@pytest.mark.parametrize("otp", OTPS)
def test_dist_session_as_a_visible_node(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    """The same through DistSession, the object connection.py will drive,
    this time as a visible (published) node: erl lists us in nodes()."""
    from beamlet.distribution.session import DistSession, Message

    node = erl_nodes(otp, ERL, COOKIE, builtin_epmd.port, VISIBLE_WATCHER)
    node.expect("ready")
    info = epmd_client.port_please("erl", epmd_port=builtin_epmd.port)
    assert info is not None
    session = DistSession(Initiator(PY, COOKIE, _creation(), peer_name=ERL, hidden=False))
    messages: list[Message] = []
    with socket.create_connection(("127.0.0.1", info.port), 5) as sock:
        deadline = time.monotonic() + 15
        events = session.start(time.monotonic())
        while True:
            for ev in events:
                if isinstance(ev, Send):
                    sock.sendall(ev.data)
                elif isinstance(ev, Failed):
                    raise AssertionError(ev)
                elif isinstance(ev, Message):
                    messages.append(ev)
            if any(getattr(m.control, "to_name", None) == "pyreceiver" for m in messages):
                break
            assert time.monotonic() < deadline, "timed out"
            now = time.monotonic()
            sock.settimeout(max(0.01, min(session.next_deadline(now), deadline - now)))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                events = session.poll(time.monotonic())
                continue
            assert data, "erl closed the connection"
            events = session.receive(data, time.monotonic())
    assert session.peer is not None and not session.peer.peer_hidden
    assert node.expect("nodeup ") == f"nodeup {PY} visible=true"
    # A visible node is at once asked by rex and global_name_server: work for
    # node.py (see docs/distribution.md).
    assert {m.control.to_name for m in messages if isinstance(m.control, c.RegSend)} >= {
        "rex",
        "pyreceiver",
    }
