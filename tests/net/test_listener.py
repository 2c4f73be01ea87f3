"""beamlet.net listeners: acceptor pools, connection limits, handlers (listener.py)."""

from __future__ import annotations

import errno
import logging
import ssl
from typing import Any

import pytest
from tests.conftest import run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Down, net, receive, send
from beamlet.net import _socket
from beamlet.net import listener as listener_module
from beamlet.net.listener import (
    CLOSE,
    Handler,
    listener_info,
    listener_port,
    listener_spec,
    start_listener,
    stop_listener,
)
from beamlet.otp import Supervisor, call, cast, restart_child, terminate_child, which_children

T = 10.0  # bound on every wait: a failure fails instead of hanging


class Echo(Handler):
    """Echoes; tells ``observer`` of its connection and close; b"crash" crashes
    it, b"bye" closes; ("push", data) by message or cast is sent to the peer;
    call "peer" answers the peer's address."""

    def __init__(self, observer: Any = None) -> None:
        self.observer = observer

    def tell(self, *msg: Any) -> None:
        if self.observer is not None:
            send(self.observer, msg)

    async def handle_connection(self, sock: net.Socket) -> Any:
        self.tell("connected", beamlet.self(), net.peername(sock))

    async def handle_data(self, data: bytes) -> Any:
        if data == b"crash":
            raise ValueError("the handler does not like this input")
        if data == b"bye":
            return CLOSE
        await self.send(data)

    async def handle_close(self) -> Any:
        self.tell("closed", beamlet.self())

    async def handle_info(self, msg: Any) -> Any:
        match msg:
            case ("push", data):
                await self.send(data)
            case _:
                return await super().handle_info(msg)

    async def handle_cast(self, request: Any) -> Any:
        match request:
            case ("push", data):
                await self.send(data)
            case "close":
                return CLOSE

    async def handle_call(self, request: Any, from_: Any) -> Any:
        if request == "peer":
            return net.peername(self.socket)
        return await super().handle_call(request, from_)


async def connect(port: int) -> net.Socket:
    return await net.connect("127.0.0.1", port, timeout=T)


async def round_trip(c: net.Socket, data: bytes) -> bytes:
    await net.send(c, data)
    return await net.recv(c, len(data), timeout=T)


async def connected(c: net.Socket) -> beamlet.Pid:
    """The pid of the connection process serving client ``c`` (from its
    ``("connected", pid, peer)`` report)."""
    msg = await receive(("connected", ANY, net.sockname(c)), timeout=T)
    pid: beamlet.Pid = msg[1]
    return pid


async def stop_process(pid: beamlet.Pid, reason: Any) -> Any:
    """Send ``pid`` an exit signal and wait until it has exited; its exit reason."""
    ref = beamlet.monitor(pid)
    beamlet.exit(pid, reason)
    return await exited(ref, pid)


async def exited(ref: beamlet.Ref, pid: beamlet.Pid) -> Any:
    """Wait for the Down of monitor ``ref`` (taken before the exit was caused)."""
    return (await receive(Down(ref, pid, ANY), timeout=T)).reason


def server_side_of(c: net.Socket) -> list[dict[str, Any]]:
    """The sockets of this runtime that are the accepted end of client ``c``."""
    me = net.sockname(c)
    return [s for s in net.sockets() if s["peer"] == me and s["kind"].startswith("tcp")]


# ---------------------------------------------------------------- serving


def test_an_echo_listener_serves_several_clients_at_once():
    n = 8

    async def client(parent: beamlet.Pid, port: int, i: int) -> None:
        c = await connect(port)
        first = await round_trip(c, b"hello %d" % i)
        send(parent, ("ready", i, first))
        await receive("finish", timeout=T)
        rest = [await round_trip(c, b"%d-%d" % (i, k) * (k + 1)) for k in range(5)]
        net.close(c)
        send(parent, ("done", i, rest))

    async def main():
        me = beamlet.self()
        sup = await start_listener("echo", 0, Echo, (me,))
        port = await listener_port("echo")
        clients = [beamlet.spawn(client, me, port, i) for i in range(n)]
        ready = [await receive(("ready", i, ANY), timeout=T) for i in range(n)]
        assert [r[2] for r in ready] == [b"hello %d" % i for i in range(n)]
        # All n are connected at once, each to its own process.
        pids = {(await receive(("connected", ANY, ANY), timeout=T))[1] for _ in range(n)}
        assert len(pids) == n
        refs = {pid: beamlet.monitor(pid) for pid in pids}
        info = await listener_info("echo")
        assert info["connections"] == n
        assert set(info["connection_pids"]) == pids
        assert info["port"] == port and info["supervisor"] == sup
        # The connections supervisor answers as a DynamicSupervisor does.
        [conns] = [pid for cid, pid, _ in await which_children(sup) if cid == "connections"]
        assert {pid for _, pid, _ in await which_children(conns)} == pids
        for pid in clients:
            send(pid, "finish")
        for i in range(n):
            _, _, rest = await receive(("done", i, ANY), timeout=T)
            assert rest == [b"%d-%d" % (i, k) * (k + 1) for k in range(5)]
        # Every peer's close reached its handler, and the processes ended.
        closed = {(await receive(("closed", ANY), timeout=T))[1] for _ in range(n)}
        assert closed == pids
        for pid, ref in refs.items():
            assert (await receive(Down(ref, pid, ANY), timeout=T)).reason == "normal"
        assert (await listener_info("echo"))["connections"] == 0
        await stop_listener("echo")

    run(main)


def test_a_handler_reads_passively_in_handle_connection_and_closes_with_close():
    class Greeter(Handler):
        async def handle_connection(self, sock: net.Socket) -> Any:
            name = await net.recv(sock, 5, timeout=T)  # still passive here
            await self.send(b"hello " + name)
            return CLOSE

    async def main():
        await start_listener("greeter", 0, Greeter)
        c = await connect(await listener_port("greeter"))
        await net.send(c, b"world")
        got = b""
        while chunk := await net.recv(c, 0, timeout=T):
            got += chunk
        assert got == b"hello world"  # then the end of the stream
        await stop_listener("greeter")

    run(main)


def test_a_fast_peer_never_floods_the_connections_mailbox():
    total = 16 * 1024 * 1024

    class Slow(Handler):
        active_n = 4

        def __init__(self, observer: beamlet.Pid) -> None:
            self.observer = observer
            self.got = 0

        async def handle_connection(self, sock: net.Socket) -> Any:
            send(self.observer, ("connected", beamlet.self(), net.peername(sock)))

        async def handle_data(self, data: bytes) -> Any:
            if not self.got:
                await receive("go")  # stalls on the first bytes, as a busy handler would
            self.got += len(data)
            if self.got == total:
                send(self.observer, ("got", self.got))

    async def sender(parent: beamlet.Pid, port: int) -> None:
        c = await connect(port)
        send(parent, ("client", c))
        await net.send(c, bytes(total), timeout=30)
        send(parent, "sent")
        await receive("never")

    async def main():
        me = beamlet.self()
        await start_listener("slow", 0, Slow, (me,))
        beamlet.spawn_link(sender, me, await listener_port("slow"))
        _, c = await receive(("client", ANY), timeout=T)
        pid = await connected(c)
        # TCP pushes back: the sender cannot finish while the handler stalls...
        await assert_no_message("sent", timeout=0.5)
        # ... and what waits in the connection's mailbox is at most active_n
        # reads (and the TcpPassive that follows them).
        assert beamlet.process_info(pid)["message_queue_len"] <= Slow.active_n + 1
        send(pid, "go")
        assert await receive(("got", ANY), timeout=30) == ("got", total)
        await receive("sent", timeout=T)
        await stop_listener("slow")

    run(main)


# ---------------------------------------------------------------- max_connections


def test_max_connections_keeps_the_next_peer_unaccepted_until_a_connection_ends():
    async def main():
        me = beamlet.self()
        await start_listener("limited", 0, Echo, (me,), num_acceptors=3, max_connections=2)
        port = await listener_port("limited")
        c1, c2 = await connect(port), await connect(port)
        p1 = await connected(c1)
        await connected(c2)
        info = await listener_info("limited")
        # At the limit, no acceptor holds a slot: none can accept.
        assert (info["connections"], info["accepting"]) == (2, 0)
        c3 = await connect(port)  # completes in the kernel's backlog...
        await net.send(c3, b"waiting")
        # ... but nobody accepts it: no handler, no server-side socket.
        await assert_no_message(("connected", ANY, ANY), timeout=0.3)
        assert server_side_of(c3) == []
        assert (await listener_info("limited"))["connections"] == 2
        assert await round_trip(c2, b"still served") == b"still served"
        # One connection ends: the third is accepted, and what it sent is served.
        net.close(c1)
        assert await receive(("closed", ANY), timeout=T) == ("closed", p1)
        await connected(c3)
        assert await net.recv(c3, 7, timeout=T) == b"waiting"
        assert len(server_side_of(c3)) == 1
        info = await listener_info("limited")
        assert (info["connections"], info["accepting"]) == (2, 0)
        await stop_listener("limited")

    run(main)


def test_a_slot_held_by_a_killed_acceptor_is_given_back():
    async def main():
        me = beamlet.self()
        await start_listener("one", 0, Echo, (me,), num_acceptors=1, max_connections=1)
        port = await listener_port("one")
        [acceptor] = (await listener_info("one"))["acceptors"]
        # It held the only slot, waiting in accept.
        assert await stop_process(acceptor, "kill") == "killed"
        # Its successor gets the slot back and serves.
        c = await connect(port)
        await connected(c)
        assert await round_trip(c, b"ping") == b"ping"
        info = await listener_info("one")
        assert info["acceptors"] != [acceptor] and info["connections"] == 1
        await stop_listener("one")

    run(main)


# ---------------------------------------------------------------- failures


def test_a_handler_crash_ends_only_its_connection(caplog):
    async def main():
        me = beamlet.self()
        sup = await start_listener("crashy", 0, Echo, (me,), num_acceptors=2)
        port = await listener_port("crashy")
        acceptors = (await listener_info("crashy"))["acceptors"]
        c1, c2 = await connect(port), await connect(port)
        p1, p2 = await connected(c1), await connected(c2)
        ref = beamlet.monitor(p1)
        await net.send(c1, b"crash")
        down = await receive(Down(ref, p1, ANY), timeout=T)
        assert isinstance(down.reason, ValueError)
        assert await net.recv(c1, 0, timeout=T) == b""  # its socket closed with it
        # The other connection, the acceptors and the listener are untouched.
        assert await round_trip(c2, b"still here") == b"still here"
        assert beamlet.is_alive(p2) and beamlet.whereis("crashy") == sup
        info = await listener_info("crashy")
        assert info["acceptors"] == acceptors
        assert info["connection_pids"] == [p2]
        c3 = await connect(port)
        await connected(c3)
        assert await round_trip(c3, b"new") == b"new"
        await stop_listener("crashy")

    with caplog.at_level(logging.ERROR, logger="beamlet"):
        run(main)
    reports = [r.getMessage() for r in caplog.records if "crash report" in r.getMessage()]
    assert len(reports) == 1
    assert "Echo" in reports[0] and "the handler does not like this input" in reports[0]


def test_a_killed_acceptor_is_restarted_and_the_listener_keeps_serving():
    async def main():
        me = beamlet.self()
        sup = await start_listener("acc", 0, Echo, (me,), num_acceptors=1)
        port = await listener_port("acc")
        c1 = await connect(port)
        await connected(c1)
        [acceptor] = (await listener_info("acc"))["acceptors"]
        assert await stop_process(acceptor, "kill") == "killed"
        # The only acceptor is gone: serving c2 proves it was replaced.
        c2 = await connect(port)
        await connected(c2)
        assert await round_trip(c2, b"after") == b"after"
        assert await round_trip(c1, b"before") == b"before"  # connections live on
        info = await listener_info("acc")
        assert len(info["acceptors"]) == 1 and info["acceptors"] != [acceptor]
        assert info["supervisor"] == sup and info["connections"] == 2
        await stop_listener("acc")

    run(main)


def test_a_killed_listening_socket_owner_is_replaced_on_the_same_port():
    async def main():
        me = beamlet.self()
        sup = await start_listener("reopen", 0, Echo, (me,))
        port = await listener_port("reopen")
        c1 = await connect(port)
        await connected(c1)
        before = {cid: pid for cid, pid, _ in await which_children(sup)}
        assert await stop_process(before["listen_socket"], "kill") == "killed"
        after = {cid: pid for cid, pid, _ in await which_children(sup)}
        # rest_for_one: the socket's owner and the acceptors after it are new,
        # the connections supervisor (before it) and its connections stay.
        assert after["connections"] == before["connections"]
        assert after["listen_socket"] != before["listen_socket"]
        assert after["acceptors"] != before["acceptors"]
        assert await listener_port("reopen") == port
        c2 = await connect(port)
        await connected(c2)
        assert await round_trip(c2, b"new socket") == b"new socket"
        assert await round_trip(c1, b"old connection") == b"old connection"
        await stop_listener("reopen")

    run(main)


def test_a_listening_socket_closed_by_someone_is_reopened():
    async def main():
        me = beamlet.self()
        sup = await start_listener("closed", 0, Echo, (me,), num_acceptors=2)
        port = await listener_port("closed")
        before = {cid: pid for cid, pid, _ in await which_children(sup)}
        ls = (await listener_info("closed"))["socket"]
        assert net.sockname(ls) == ("127.0.0.1", port)
        owner = before["listen_socket"]
        ref = beamlet.monitor(owner)
        net.close(ls)
        # The acceptors find it closed and have its owner replaced, with the socket.
        assert await exited(ref, owner) == "listen_socket_closed"
        after = {cid: pid for cid, pid, _ in await which_children(sup)}
        assert after["connections"] == before["connections"]
        assert after["listen_socket"] != owner
        c = await connect(port)
        await connected(c)
        assert await round_trip(c, b"reopened") == b"reopened"
        await stop_listener("closed")

    run(main)


def test_accept_errors_like_emfile_are_logged_once_and_retried(monkeypatch, caplog):
    real_accept = _socket.accept
    failures = 5
    calls = []

    async def accept_out_of_descriptors(
        ls: net.Socket, timeout: float | None = None, handshake: bool = True
    ) -> Any:
        calls.append(1)
        if len(calls) <= failures:
            raise OSError(errno.EMFILE, "Too many open files")
        return await real_accept(ls, timeout, handshake)

    monkeypatch.setattr(_socket, "accept", accept_out_of_descriptors)
    monkeypatch.setattr(listener_module, "ACCEPT_RETRY", 0.01)

    async def main():
        me = beamlet.self()
        await start_listener("emfile", 0, Echo, (me,), num_acceptors=1)
        port = await listener_port("emfile")
        [acceptor] = (await listener_info("emfile"))["acceptors"]
        c = await connect(port)
        await connected(c)
        assert await round_trip(c, b"served") == b"served"
        # The same acceptor, which waited and retried instead of crashing.
        assert (await listener_info("emfile"))["acceptors"] == [acceptor]
        await stop_listener("emfile")

    with caplog.at_level(logging.WARNING, logger="beamlet"):
        run(main)
    assert len(calls) > failures
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "accept failed" in errors[0] and "Too many open files" in errors[0]
    recovered = [r.getMessage() for r in caplog.records if "accepts again" in r.getMessage()]
    assert len(recovered) == 1 and "4 more failures" in recovered[0]


# ---------------------------------------------------------------- the connection process


def test_the_connection_process_is_a_genserver_for_other_processes():
    async def main():
        me = beamlet.self()
        await start_listener("chat", 0, Echo, (me,))
        c = await connect(await listener_port("chat"))
        pid = await connected(c)
        ref = beamlet.monitor(pid)
        send(pid, ("push", b"by message;"))  # handle_info
        cast(pid, ("push", b"by cast"))  # handle_cast
        assert await net.recv(c, 18, timeout=T) == b"by message;by cast"
        assert await call(pid, "peer") == net.sockname(c)  # handle_call
        cast(pid, "close")  # CLOSE from handle_cast: the socket closes, the process ends
        assert await net.recv(c, 0, timeout=T) == b""
        assert await exited(ref, pid) == "normal"
        await stop_listener("chat")

    run(main)


def test_close_from_handle_data_ends_the_connection_normally():
    async def main():
        me = beamlet.self()
        await start_listener("bye", 0, Echo, (me,))
        c = await connect(await listener_port("bye"))
        pid = await connected(c)
        ref = beamlet.monitor(pid)
        assert await round_trip(c, b"one") == b"one"
        await net.send(c, b"bye")
        assert await net.recv(c, 0, timeout=T) == b""
        assert await exited(ref, pid) == "normal"
        await assert_no_message(("closed", ANY), timeout=0)  # we closed, not the peer
        await stop_listener("bye")

    run(main)


def test_a_handler_that_closes_the_socket_itself_ends_its_process():
    class Closer(Echo):
        async def handle_data(self, data: bytes) -> Any:
            await self.send(data)
            net.close(self.socket)  # not CLOSE: no TcpClosed will ever come

    async def main():
        me = beamlet.self()
        await start_listener("closer", 0, Closer, (me,))
        c = await connect(await listener_port("closer"))
        pid = await connected(c)
        ref = beamlet.monitor(pid)
        assert await round_trip(c, b"x") == b"x"
        assert await exited(ref, pid) == "normal"
        assert (await listener_info("closer"))["connections"] == 0
        await stop_listener("closer")

    run(main)


# ---------------------------------------------------------------- stopping, supervision


def test_stop_listener_closes_the_listening_socket_and_the_connections():
    async def main():
        me = beamlet.self()
        sup = await start_listener("stopped", 0, Echo, (me,))
        port = await listener_port("stopped")
        clients = [await connect(port) for _ in range(3)]
        pids = [await connected(c) for c in clients]
        ref = beamlet.monitor(sup)
        await stop_listener("stopped")
        assert (await receive(Down(ref, sup, ANY), timeout=T)).reason == "normal"
        assert not any(beamlet.is_alive(pid) for pid in pids)
        for c in clients:
            assert await net.recv(c, 0, timeout=T) == b""
        with pytest.raises(ConnectionRefusedError):
            await connect(port)
        assert beamlet.whereis("stopped") is None
        with pytest.raises(KeyError):
            await stop_listener("stopped")

    run(main)


def test_the_listener_runs_under_a_user_supervisor():
    async def main():
        me = beamlet.self()
        sup = await Supervisor.start_link([listener_spec("web", 0, Echo, (me,))])
        [(child_id, listener, kind)] = await which_children(sup)
        assert (child_id, kind) == (("listener", "web"), "supervisor")
        assert beamlet.whereis("web") == listener
        port = await listener_port("web")
        c = await connect(port)
        await connected(c)
        assert await round_trip(c, b"supervised") == b"supervised"
        await terminate_child(sup, ("listener", "web"))
        assert await net.recv(c, 0, timeout=T) == b""
        with pytest.raises(ConnectionRefusedError):
            await connect(port)
        await restart_child(sup, ("listener", "web"))
        c = await connect(await listener_port("web"))
        await connected(c)
        assert await round_trip(c, b"again") == b"again"
        beamlet.unlink(sup)
        assert await stop_process(sup, "shutdown") == "shutdown"
        assert await net.recv(c, 0, timeout=T) == b""

    run(main)


def test_start_listener_refuses_a_port_in_use_and_bad_arguments():
    async def main():
        ls = net.listen(0)
        port = net.sockname(ls)[1]
        with pytest.raises(OSError) as e:
            await start_listener("taken", port, Echo)
        assert e.value.errno == errno.EADDRINUSE
        with pytest.raises(TypeError, match="a subclass of"):
            await start_listener("bad", 0, object)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="handler_args"):
            await start_listener("bad", 0, Echo, (1, 2))  # Echo(observer) takes one
        with pytest.raises(ValueError, match="max_connections"):
            await start_listener("bad", 0, Echo, max_connections=0)
        assert beamlet.whereis("bad") is None
        with pytest.raises(KeyError):
            await listener_port("bad")

    run(main)


# ---------------------------------------------------------------- TLS


def test_a_tls_listener_serves_and_a_failed_handshake_does_not_stop_it(certificate):
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    untrusting = ssl.create_default_context()  # does not trust the self-signed certificate

    async def main():
        me = beamlet.self()
        await start_listener("tls", 0, Echo, (me,), num_acceptors=1, tls=server_ctx)
        port = await listener_port("tls")
        with pytest.raises(ssl.SSLError):
            await net.connect("127.0.0.1", port, timeout=T, tls=untrusting)
        c = await net.connect(
            "127.0.0.1", port, timeout=T, tls=client_ctx, server_hostname="localhost"
        )
        await connected(c)
        assert await round_trip(c, b"secret") == b"secret"
        await stop_listener("tls")

    run(main)


def test_a_tls_peer_that_never_finishes_its_handshake_holds_no_acceptor(certificate):
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main():
        me = beamlet.self()
        await start_listener(
            "slowloris", 0, Echo, (me,), num_acceptors=1, tls=server_ctx, handshake_timeout=1.0
        )
        port = await listener_port("slowloris")
        silent = await connect(port)  # plain TCP: never says a word of TLS
        # The only acceptor is free for the next peer at once.
        c = await net.connect(
            "127.0.0.1", port, timeout=T, tls=client_ctx, server_hostname="localhost"
        )
        served = await connected(c)
        assert await round_trip(c, b"served") == b"served"
        # The silent peer has a process of its own, waiting in the handshake...
        # (unless a very loaded machine took handshake_timeout to get here)...
        others = set((await listener_info("slowloris"))["connection_pids"]) - {served}
        watched = [(beamlet.monitor(pid), pid) for pid in others]
        # ... dropped after handshake_timeout, never seen by a handler.
        assert await net.recv(silent, 0, timeout=T) == b""
        for ref, pid in watched:
            assert await exited(ref, pid) == "normal"
        await assert_no_message(("connected", ANY, net.sockname(silent)), timeout=0)
        assert (await listener_info("slowloris"))["connection_pids"] == [served]
        await stop_listener("slowloris")

    run(main)
