"""beamlet.net: sockets owned by processes (docs/semantics.md, NET-*; docs/net.md)."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import struct
import threading
from typing import Any

import pytest
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Down, exit, monitor, net, process_info, receive, self, send, spawn

T = 5.0  # bound on every wait: a failure fails instead of hanging


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def pair() -> tuple[net.Socket, net.Socket, net.Socket]:
    """(listener, client side, server side), all owned by the caller."""
    ls = net.listen(0)
    port = net.sockname(ls)[1]
    c = await net.connect("127.0.0.1", port, timeout=T)
    s = await net.accept(ls, timeout=T)
    return ls, c, s


async def wait_until(cond: Any, what: str) -> None:
    """Poll a condition between yields (no sleeps): fails after T seconds."""
    import time

    end = time.monotonic() + T
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await beamlet.sleep(0.001)


# ---------------------------------------------------------------- NET-1 ownership


def test_sockets_are_owned_by_the_process_that_opened_or_accepted_them():
    async def main():
        ls, c, s = await pair()
        me = self()
        infos = {i["id"]: i for i in net.sockets()}
        assert {infos[x.id]["owner"] for x in (ls, c, s)} == {me}
        assert {i["id"] for i in process_info(me)["sockets"]} == {ls.id, c.id, s.id}
        assert net.peername(c) == net.sockname(s)
        return True

    assert beamlet.run(main)


def test_only_the_owner_may_hand_a_socket_on_or_set_its_mode():
    async def main():
        _ls, _c, s = await pair()

        async def intruder(sock):
            for fn in (
                lambda: net.controlling_process(sock, self()),
                lambda: net.setopts(sock, active=True),
            ):
                try:
                    fn()
                except net.NotOwner as e:
                    send(parent, ("refused", str(e)))
                else:
                    send(parent, "allowed")

        parent = self()
        spawn(intruder, s)
        got = [await receive(timeout=T), await receive(timeout=T)]
        assert all(g[0] == "refused" for g in got), got
        return True

    assert beamlet.run(main)


def test_controlling_process_moves_the_sockets_messages_already_delivered_in_order():
    async def main():
        _ls, c, s = await pair()
        net.setopts(s, active=True)
        await net.send(c, b"one")
        first = await receive(net.Tcp(s, ANY), timeout=T)  # the socket delivers...
        send(self(), first)  # ...put it back, then more
        await net.send(c, b"two")
        send(self(), "unrelated")
        # Both reads are in the mailbox (with the unrelated message) ...
        await wait_until(lambda: process_info(self())["message_queue_len"] >= 3, "the reads")

        async def new_owner():
            got = []
            while True:
                m = await receive(timeout=T)
                got.append(m)
                if type(m) is net.TcpClosed:
                    send(parent, got)
                    return

        parent = self()
        pid = spawn(new_owner)
        net.controlling_process(s, pid)  # ... and go to the new owner, in order
        net.close(c)  # what comes next goes to the new owner directly
        got = await receive(list, timeout=T)
        assert await receive(timeout=0) == "unrelated"
        return got

    got = beamlet.run(main)
    data = b"".join(m.data for m in got if type(m) is net.Tcp)
    assert data == b"onetwo"
    assert type(got[-1]) is net.TcpClosed


# ---------------------------------------------------------------- NET-2 modes


def test_active_true_delivers_every_read_as_a_message_and_the_close():
    async def main():
        _ls, c, s = await pair()
        net.setopts(s, active=True)
        await net.send(c, b"hello ")
        await net.send(c, b"world")
        net.close(c)
        data = b""
        while True:
            m = await receive(timeout=T)
            if type(m) is net.TcpClosed:
                assert m.socket is s
                break
            assert type(m) is net.Tcp and m.socket is s
            data += m.data
        # The socket closed with the stream (exit_on_close).
        with pytest.raises(OSError) as e:
            await net.recv(s, 0)
        assert e.value.errno == errno.EBADF
        return data

    assert beamlet.run(main) == b"hello world"


def test_active_once_delivers_one_message_then_the_socket_is_passive():
    async def main():
        _ls, c, s = await pair()
        net.setopts(s, active="once")
        await net.send(c, b"first")
        m = await receive(net.Tcp(s, ANY), timeout=T)
        await net.send(c, b"second")
        # Passive now: the second read comes from recv, not as a message.
        got = await net.recv(s, 6, timeout=T)
        await assert_no_message(timeout=0)
        net.setopts(s, active="once")
        await net.send(c, b"third")
        m3 = await receive(net.Tcp(s, ANY), timeout=T)
        return m.data, got, m3.data, net.sockets()

    first, second, third, _infos = beamlet.run(main)
    assert (first, second, third) == (b"first", b"second", b"third")


def test_active_n_delivers_n_messages_then_tcp_passive():
    async def main():
        _ls, c, s = await pair()
        net.setopts(s, active=2)
        got = []
        for chunk in (b"a", b"b"):
            await net.send(c, chunk)
            got.append((await receive(net.Tcp(s, ANY), timeout=T)).data)
        await receive(net.TcpPassive(s), timeout=T)
        await net.send(c, b"c")
        assert await net.recv(s, 1, timeout=T) == b"c"
        net.setopts(s, active=0)  # N <= 0: passive at once, TcpPassive again
        await receive(net.TcpPassive(s), timeout=T)
        return got

    assert beamlet.run(main) == [b"a", b"b"]


def test_recv_on_an_active_socket_is_refused():
    async def main():
        _ls, _c, s = await pair()
        net.setopts(s, active=True)
        with pytest.raises(OSError) as e:
            await net.recv(s, 0, timeout=T)
        return e.value.errno

    assert beamlet.run(main) == errno.EINVAL


def test_recv_exactly_n_bytes_and_what_recv_left_comes_first_when_going_active():
    async def main():
        _ls, c, s = await pair()
        await net.send(c, b"0123456789")
        head = await net.recv(s, 4, timeout=T)
        # The rest is buffered in the socket: going active delivers it first.
        net.setopts(s, active=True)
        m = await receive(net.Tcp(s, ANY), timeout=T)
        return head, m.data

    head, rest = beamlet.run(main)
    assert head == b"0123"
    assert rest.startswith(b"45")


def test_recv_of_n_bytes_at_the_end_of_the_stream_raises_incomplete_read():
    async def main():
        _ls, c, s = await pair()
        await net.send(c, b"abc")
        net.close(c)
        with pytest.raises(net.IncompleteRead) as e:
            await net.recv(s, 10, timeout=T)
        assert e.value.partial == b"abc"
        assert await net.recv(s, 0, timeout=T) == b""  # the end of the stream
        return True

    assert beamlet.run(main)


def test_a_recv_timeout_loses_nothing():
    async def main():
        _ls, c, s = await pair()
        await net.send(c, b"ab")
        with pytest.raises(TimeoutError):
            await net.recv(s, 4, timeout=0.05)
        await net.send(c, b"cd")
        return await net.recv(s, 4, timeout=T)

    assert beamlet.run(main) == b"abcd"


# ---------------------------------------------------------------- NET-3 owner death


def test_a_socket_closes_when_its_owner_is_killed_before_anyone_learns_of_the_death():
    async def main():
        ls = net.listen(0)
        port = net.sockname(ls)[1]
        parent = self()

        async def owner():
            c = await net.connect("127.0.0.1", port, timeout=T)
            send(parent, ("sock", c))
            await receive()  # forever

        pid = spawn(owner)
        ref = monitor(pid)
        _, c = await receive(("sock", ANY), timeout=T)
        s = await net.accept(ls, timeout=T)
        exit(pid, "kill")
        await receive(Down(ref, pid, "killed"), timeout=T)
        assert c.id not in {i["id"] for i in net.sockets()}  # closed before the DOWN
        return await net.recv(s, 0, timeout=T)  # the peer sees the end of stream

    assert beamlet.run(main) == b""


@pytest.mark.parametrize("n", [1000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_no_descriptor_leaks_after_connections_whose_owners_crash(n):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))

    async def main():
        ls = net.listen(0, backlog=1024)
        port = net.sockname(ls)[1]

        async def crasher(sock):
            await receive("go")  # it owns the socket now (else it dies too soon)
            await net.recv(sock, 0, timeout=T)
            raise RuntimeError("crash with a socket in hand")

        async def acceptor():
            while True:
                s = await net.accept(ls)
                pid = spawn(crasher, s)
                net.controlling_process(s, pid)
                send(pid, "go")

        spawn(acceptor)
        before = open_fds()
        for _i in range(n):
            c = await net.connect("127.0.0.1", port, timeout=T)
            await net.send(c, b"x")
            assert await net.recv(c, 0, timeout=T) == b""  # its owner crashed: closed
            net.close(c)
        await wait_until(lambda: open_fds() <= before, "descriptors to be released")
        return open_fds() - before, len(net.sockets())

    logger = __import__("logging").getLogger("beamlet")
    logger.disabled = True  # n crash reports
    try:
        leaked, left = beamlet.run(main)
    finally:
        logger.disabled = False
    assert leaked <= 0
    assert left == 1  # the listener


# ---------------------------------------------------------------- NET-4 flow control


def test_a_fast_peer_never_fills_a_slow_owners_mailbox_in_active_once_mode():
    async def main():
        _ls, c, s = await pair()
        total = 4 * 1024 * 1024
        parent = self()

        async def blaster(sock):
            await net.send(sock, b"z" * total)
            send(parent, "sent")

        spawn(blaster, c)
        got = 0
        most = 0
        while got < total:
            net.setopts(s, active="once")
            m = await receive(net.Tcp(s, ANY), timeout=T)
            got += len(m.data)
            most = max(most, process_info(self())["message_queue_len"])
        await receive("sent", timeout=T)
        return got, most

    got, most = beamlet.run(main)
    assert got == 4 * 1024 * 1024
    assert most <= 1  # at most the "sent" note: never a second Tcp message


def test_send_waits_while_the_peer_does_not_read_and_queues_a_bounded_amount():
    async def main():
        _ls, c, s = await pair()
        chunk = b"q" * 65536
        parent = self()
        sent = [0]

        async def sender():
            for _ in range(400):  # 25 MB: more than the OS buffers hold
                await net.send(c, chunk)
                sent[0] += 1
            send(parent, "done")

        pid = spawn(sender)
        net.controlling_process(c, pid)
        # It stops while the peer does not read: it waits with a bounded queue.
        await wait_until(
            lambda: (
                (process_info(pid) or {}).get("status") == "waiting"
                and sent[0] < 400
                and any(i["queued"] for i in net.sockets() if i["id"] == c.id)
            ),
            "the sender to wait",
        )
        queued = next(i["queued"] for i in net.sockets() if i["id"] == c.id)
        assert queued <= net.HIGH_WATERMARK + len(chunk)
        got = 0
        while got < 400 * len(chunk):
            got += len(await net.recv(s, 0, timeout=T))
        await receive("done", timeout=T)
        return got

    assert beamlet.run(main) == 400 * 65536


# ---------------------------------------------------------------- errors


def test_errors_are_the_exceptions_python_users_expect():
    async def main():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        with pytest.raises(ConnectionRefusedError):
            await net.connect("127.0.0.1", free, timeout=T)
        ls = net.listen(0)
        with pytest.raises(OSError) as e:
            net.listen(net.sockname(ls)[1])
        assert e.value.errno == errno.EADDRINUSE
        with pytest.raises(TimeoutError):
            await net.accept(ls, timeout=0.01)
        net.close(ls)
        net.close(ls)  # twice: nothing
        with pytest.raises(OSError) as e:
            await net.accept(ls, timeout=T)
        assert e.value.errno == errno.EBADF
        with pytest.raises(beamlet.BadArg):
            await net.recv("not a socket", 0)
        return True

    assert beamlet.run(main)


def test_a_peer_reset_reaches_an_active_owner_as_tcp_error_then_tcp_closed():
    async def main():
        ls = net.listen(0)
        port = net.sockname(ls)[1]
        raw = socket.create_connection(("127.0.0.1", port))
        s = await net.accept(ls, timeout=T)
        net.setopts(s, active=True)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # RST
        m1 = await receive(timeout=T)
        m2 = await receive(timeout=T) if type(m1) is net.TcpError else None
        return m1, m2

    m1, m2 = beamlet.run(main)
    if type(m1) is net.TcpError:
        assert m1.reason == "econnreset"
        assert type(m2) is net.TcpClosed
    else:  # the reset may be read as a plain end of stream
        assert type(m1) is net.TcpClosed


def test_a_process_killed_while_waiting_in_send_leaves_the_socket_usable_and_unlocked():
    async def main():
        _ls, c, s = await pair()
        parent = self()

        async def sender():
            send(parent, "started")
            while True:
                await net.send(c, b"k" * 65536)

        pid = spawn(sender)
        await receive("started", timeout=T)
        await wait_until(
            lambda: (process_info(pid) or {}).get("status") == "waiting", "a full queue"
        )
        ref = monitor(pid)
        exit(pid, "kill")
        await receive(Down(ref, pid, "killed"), timeout=T)
        # The socket (owned by us, not the sender) is still ours and works.
        got = 0
        while got < 65536:
            got += len(await net.recv(s, 0, timeout=T))
        net.close(c)
        net.close(s)
        return True

    assert beamlet.run(main)


# ---------------------------------------------------------------- I/O past runaways


@pytest.mark.parametrize("runaways", [1, 4])
def test_io_keeps_flowing_past_processes_that_never_yield(runaways):
    async def spin():
        x = 0
        while True:
            x += 1

    async def echo(s):
        while True:
            data = await net.recv(s, 0)
            if not data:
                return
            await net.send(s, data)

    async def main():
        _ls, c, s = await pair()
        pid = spawn(echo, s)
        net.controlling_process(s, pid)
        for _ in range(runaways):
            spawn(spin)
        for i in range(50):
            await net.send(c, b"%d" % i)
            assert await net.recv(c, len(b"%d" % i), timeout=T) == b"%d" % i
        return True

    assert beamlet.run(main, schedulers=1)


# ---------------------------------------------------------------- UDP


def test_udp_active_and_passive():
    async def main():
        a = net.open_udp(0, active=True)
        b = net.open_udp(0)
        pa = net.sockname(a)[1]
        pb = net.sockname(b)[1]
        await net.sendto(b, "127.0.0.1", pa, b"ping")
        m = await receive(net.Udp(a, ANY, ANY, ANY), timeout=T)
        assert (m.host, m.port, m.data) == ("127.0.0.1", pb, b"ping")
        await net.sendto(a, "127.0.0.1", pb, b"pong")
        return await net.recvfrom(b, timeout=T)

    assert beamlet.run(main)[2] == b"pong"


# ---------------------------------------------------------------- TLS


def test_tls_echo_over_memory_bios_both_ways(certificate):
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def echo(s):
        await receive("go")  # it owns the socket now
        net.setopts(s, active=True)
        while True:
            m = await receive(timeout=T)
            if type(m) is net.TcpClosed:
                return
            await net.send(s, m.data)

    async def main():
        ls = net.listen(0, tls=server_ctx)
        port = net.sockname(ls)[1]

        async def acceptor():
            s = await net.accept(ls, timeout=T)
            pid = spawn(echo, s)
            net.controlling_process(s, pid)
            send(pid, "go")

        spawn(acceptor)
        threads_before = set(threading.enumerate())
        c = await net.connect(
            "127.0.0.1", port, timeout=T, tls=client_ctx, server_hostname="localhost"
        )
        big = os.urandom(300_000)
        await net.send(c, big)
        got = b""
        while len(got) < len(big):
            got += await net.recv(c, 0, timeout=T)
        assert got == big
        # No thread per socket (sysmon may have brought a scheduler thread in
        # while the encryption computed: that is the only kind allowed).
        new = [t.name for t in set(threading.enumerate()) - threads_before]
        assert all(n.startswith("beamlet-scheduler") for n in new), new
        kinds = {i["kind"] for i in net.sockets()}
        return kinds

    assert "tcp+tls" in beamlet.run(main)


def test_a_tls_handshake_with_an_untrusted_certificate_fails_with_ssl_error(certificate):
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context()  # does not trust our self-signed one

    async def main():
        ls = net.listen(0, tls=server_ctx)
        port = net.sockname(ls)[1]

        async def acceptor():
            try:
                await net.accept(ls, timeout=T)
            except (ssl.SSLError, OSError) as e:
                send(parent, ("acceptor", e))

        parent = self()
        spawn(acceptor)
        with pytest.raises(ssl.SSLCertVerificationError):
            await net.connect("127.0.0.1", port, timeout=T, tls=client_ctx)
        await receive(("acceptor", ANY), timeout=T)
        return len([i for i in net.sockets() if i["kind"] != "listen"])

    assert beamlet.run(main) == 0


def test_a_tls_listener_survives_garbage_and_silent_peers_and_serves_the_next(certificate):
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main():
        ls = net.listen(0, tls=server_ctx)
        port = net.sockname(ls)[1]
        garbage = socket.create_connection(("127.0.0.1", port))
        garbage.sendall(b"GET / HTTP/1.1\r\n\r\n" * 100)
        with pytest.raises(ssl.SSLError):
            await net.accept(ls, timeout=T)
        silent = socket.create_connection(("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            await net.accept(ls, timeout=0.1)  # the handshake counts in the timeout
        # Deferred: the acceptor is free at once; the connection's process waits.
        silent2 = socket.create_connection(("127.0.0.1", port))
        s2 = await net.accept(ls, timeout=T, handshake=False)
        with pytest.raises(TimeoutError):
            await net.handshake(s2, timeout=0.05)
        net.close(s2)
        parent = self()

        async def client():
            c = await net.connect("127.0.0.1", port, tls=client_ctx, server_hostname="localhost")
            await net.send(c, b"fine")
            send(parent, ("client", await net.recv(c, 4, timeout=T)))

        spawn(client)
        s = await net.accept(ls, timeout=T, handshake=False)
        await net.handshake(s, timeout=T)
        await net.send(s, await net.recv(s, 4, timeout=T))
        _, got = await receive(("client", ANY), timeout=T)
        for raw in (garbage, silent, silent2):
            raw.close()
        mine = process_info(self())["sockets"]
        left = [i for i in mine if i["kind"] != "listen" and i["id"] != s.id]
        return got, left

    got, left = beamlet.run(main)
    assert got == b"fine"
    assert left == []  # every failed handshake closed its socket


def test_close_flushes_what_is_queued_and_run_leaves_no_descriptor_behind():
    before = open_fds()

    async def main():
        _ls, c, s = await pair()
        parent = self()

        def queued():
            return next(i["queued"] for i in net.sockets() if i["id"] == c.id)

        async def sender():
            sent = 0
            while not queued():  # until the OS buffers are full and bytes wait on ours
                await net.send(c, b"L" * 16384)
                sent += 16384
            left = queued()
            net.close(c)  # the close flushes them
            send(parent, ("closed", sent, left))

        pid = spawn(sender)
        net.controlling_process(c, pid)
        _, sent, left = await receive(("closed", ANY, ANY), timeout=T)
        got = 0
        while True:
            data = await net.recv(s, 0, timeout=T)
            if not data:
                break
            got += len(data)
        # A socket that lingers at shutdown is closed by run() too.
        ls2 = net.listen(0)
        peer = socket.create_connection(("127.0.0.1", net.sockname(ls2)[1]))
        raw.append(peer)  # a peer outside the runtime that never reads
        c2 = await net.accept(ls2, timeout=T)
        while not any(i["queued"] for i in net.sockets() if i["id"] == c2.id):
            await net.send(c2, b"M" * 16384)
        net.close(c2)  # lingers: its peer never reads
        assert c2.id in {i["id"] for i in net.sockets(include_closed=True)}
        return got, sent, left

    raw: list[socket.socket] = []
    got, sent, left = beamlet.run(main)
    assert left > 0
    assert got == sent
    assert open_fds() <= before + 1  # (+ the raw peer, still open)
    raw[0].close()
