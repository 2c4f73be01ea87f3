"""A node under hostile peers and faults: its parts are never silenced
(issue 10; docs/distribution.md, "Security").

Every test starts a node in this process (on 127.0.0.1, with the built-in
EPMD fixture) and scripts peers against it with :class:`hostile.RawPeer`: a
real handshake, then whatever the test sends. "The node answers" means a fresh
peer handshakes and net_kernel answers is_auth (net_adm:ping's question).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from dist_helpers import wait_until
from hostile import RawPeer, answers, blocking, run_node

import beamlet
import beamlet.net_kernel
import beamlet.rpc
from beamlet import ANY, Atom, Down, Pid
from beamlet._kernel.runtime import Runtime
from beamlet.distribution import connection as conn_mod
from beamlet.distribution.control import (
    NO_PAYLOAD,
    Link,
    MonitorP,
    PayloadExit,
    PayloadExit2,
    PayloadMonitorPExit,
    RegSend,
    SpawnRequest,
)
from beamlet.distribution.epmd_server import EPMDServer
from beamlet.distribution.limits import Limits
from beamlet.distribution.node import SPAWN_GO, Node
from beamlet.distribution.session import Message


def as_seen_by_peers(node: Node, pid: Pid) -> Pid:
    """A local pid as a peer names it: our node name and creation."""
    return Pid(*pid.wire_words(), node.name, node.creation)


def up(node: Node, peer: RawPeer) -> object:
    """The node's connection to ``peer`` once it is up (the peer finishes its
    handshake a moment before the node does)."""
    conn = node.conns.get(peer.name)
    return conn if conn is not None and conn.state == "up" else None


def _threads(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


# -- defect 2: the node keeps accepting ------------------------------------------------


def test_a_failed_thread_start_costs_only_that_connection(
    builtin_epmd: EPMDServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = conn_mod.Connection.serve_accepted
    failures = [1]

    def no_thread(self: conn_mod.Connection, sock: object) -> None:
        if failures:
            failures.pop()
            raise RuntimeError("can't start new thread")
        real(self, sock)  # type: ignore[arg-type]

    monkeypatch.setattr(conn_mod.Connection, "serve_accepted", no_thread)

    async def main(node: Node) -> tuple[bool, bool]:
        def first() -> bool:
            try:
                RawPeer(node.port).close()
            except ConnectionError:
                return True  # refused: the thread could not start
            return False

        return await blocking(first), await blocking(answers, node.port)

    refused, alive = run_node(main, builtin_epmd.port)
    assert refused and alive


class _Exhausted:
    """The node's listening socket, whose accept() fails with EMFILE for a while."""

    def __init__(self, real: object, seconds: float) -> None:
        import time

        self.real = real
        self.seconds = seconds
        self.until: float | None = None
        self.calls = 0
        self._time = time.monotonic

    def accept(self) -> object:
        import errno

        self.calls += 1
        now = self._time()
        if self.until is None:
            self.until = now + self.seconds
        if now < self.until:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_out_of_descriptors_the_node_backs_off_and_keeps_accepting(
    builtin_epmd: EPMDServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 2: one accept() error (EMFILE under a flood) ended the accept
    loop for good. Now it is logged, accepting pauses (0.05 s doubling to
    1 s) and goes on."""

    async def main(node: Node) -> tuple[bool, int]:
        flaky = _Exhausted(node.listener, seconds=0.3)
        # the accept thread is blocked in accept() on the real socket: the next
        # connection is accepted there, the ones after it go through flaky
        node.listener = flaky  # type: ignore[assignment]
        alive = await blocking(answers, node.port)  # accepted by the blocked call
        alive = alive and await blocking(answers, node.port)  # after 0.3 s of EMFILE
        return alive, flaky.calls

    with caplog.at_level(logging.WARNING, "beamlet.distribution"):
        alive, calls = run_node(main, builtin_epmd.port)
    assert alive
    assert 2 <= calls <= 6  # backed off: not thousands of calls
    assert any("cannot accept" in r.getMessage() for r in caplog.records)


def test_a_broken_listening_socket_is_replaced_on_the_same_port(
    builtin_epmd: EPMDServer, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    async def main(node: Node) -> tuple[bool, bool]:
        port = node.port
        assert node.listener is not None
        node.listener.shutdown(socket.SHUT_RDWR)  # accept() now fails with EINVAL
        # until the node listens again, a caller is refused: retry for a while
        alive = await blocking(wait_until, lambda: answers(port, timeout=1), 5, "an answer")
        return alive, node.port == port

    with caplog.at_level(logging.ERROR, "beamlet.distribution"):
        alive, same_port = run_node(main, builtin_epmd.port)
    assert alive and same_port
    assert any("listening socket" in r.getMessage() for r in caplog.records)


# -- bound: handshakes in flight -------------------------------------------------------


def test_handshakes_in_flight_are_capped_and_cost_one_thread_each(
    builtin_epmd: EPMDServer,
) -> None:
    import socket

    limits = Limits(max_handshakes=4)

    async def main(node: Node) -> tuple[bool, int, int, bool]:
        def flood() -> tuple[bool, int, int, bool]:
            idle = [socket.create_connection(("127.0.0.1", node.port), 5) for _ in range(4)]
            try:
                wait_until(lambda: node.handshakes == 4, 5, "4 handshakes in flight")
                readers = _threads("beamlet-dist-accepted")
                writers = _threads("beamlet-dist-writer")
                with socket.create_connection(("127.0.0.1", node.port), 5) as extra:
                    extra.settimeout(5)
                    refused = extra.recv(1) == b""  # closed at accept
            finally:
                for s in idle:
                    s.close()
            wait_until(lambda: node.handshakes == 0, 5, "the idle handshakes to end")
            return refused, readers, writers, answers(node.port)

        return await blocking(flood)

    refused, readers, writers, alive = run_node(main, builtin_epmd.port, limits=limits)
    assert refused and alive
    assert readers == 4 and writers == 0  # one thread per pending handshake, no writer yet


def test_a_flood_of_the_built_in_epmd_does_not_starve_the_node(tmp_path: object) -> None:
    import socket

    from dist_helpers import free_port

    limits = Limits(epmd_max_connections=8)

    async def main(node: Node) -> tuple[int, bool]:
        assert node.epmd_server is not None  # this node runs the built-in EPMD

        def flood() -> tuple[int, bool]:
            clients = []
            try:
                for _ in range(200):
                    clients.append(socket.create_connection(("127.0.0.1", node.epmd_port), 5))
                held = node.epmd_server.connections()[0]  # type: ignore[union-attr]
                return held, answers(node.port)
            finally:
                for s in clients:
                    s.close()

        return await blocking(flood)

    held, alive = run_node(main, free_port(), limits=limits)
    assert held <= 8 and alive


# -- defect 3: net_kernel and rex cannot be silenced -----------------------------------

BAD_CALLS = [
    ("net_kernel", (Atom("$gen_call"), "not a pair", (Atom("is_auth"), Atom("x@y")))),
    ("net_kernel", (Atom("$gen_call"), (1, 2, 3), (Atom("is_auth"), Atom("x@y")))),
    ("net_kernel", (Atom("$gen_call"), (Atom("a"), Atom("b")), Atom("x"))),
    ("rex", (Atom("$gen_call"), "nope", (Atom("call"), Atom("m"), Atom("f"), [], None))),
    ("rex", ("$gen_call", None, (Atom("call"), 10**5000, Atom("f"), [], None))),
    ("rex", (Atom("features_request"), 10**5000)),
    ("global_name_server", (Atom("$gen_call"), 42, Atom("x"))),
]


@pytest.mark.parametrize("service, message", BAD_CALLS)
def test_a_malformed_request_does_not_kill_a_service(
    builtin_epmd: EPMDServer, service: str, message: object
) -> None:
    """Defect 3: a `From` that is not a pair, or a 5000-digit module name,
    killed net_kernel / rex for good (ping answered pang)."""

    async def main(node: Node) -> tuple[bool, bool]:
        before = beamlet.whereis(service)

        def attack() -> bool:
            with RawPeer(node.port) as peer:
                msg = message
                if msg[1] is None:  # a well-formed From for the bignum request
                    msg = (msg[0], (peer.pid, peer.new_ref()), msg[2])
                peer.send(RegSend(peer.pid, Atom(service)), msg)
                return peer.ping()

        alive = await blocking(attack)
        return alive, beamlet.whereis(service) == before

    alive, same = run_node(main, builtin_epmd.port)
    assert alive and same  # handled (answered or dropped), not crashed and restarted


def test_rex_answers_a_call_with_a_non_atom_module_with_badrpc(builtin_epmd: EPMDServer) -> None:
    async def main(node: Node) -> object:
        def attack() -> object:
            with RawPeer(node.port) as peer:
                return peer.call("rex", (Atom("call"), 10**5000, Atom("f"), [], peer.pid))

        return await blocking(attack)

    reply = run_node(main, builtin_epmd.port)
    assert reply == (Atom("badrpc"), Atom("badarg"))


@pytest.mark.parametrize("service", ["net_kernel", "rex", "global_name_server"])
def test_a_peer_cannot_kill_a_node_service(builtin_epmd: EPMDServer, service: str) -> None:
    """exit(Service, kill) from a peer is refused; a link from a peer that dies
    with reason kill is survived (services trap exits)."""

    async def main(node: Node) -> tuple[bool, bool]:
        target = beamlet.whereis(service)
        assert target is not None
        wire = as_seen_by_peers(node, target)

        def attack() -> bool:
            with RawPeer(node.port) as peer:
                peer.send(PayloadExit2(peer.pid, wire), Atom("kill"))
                peer.send(Link(peer.pid, wire))
                peer.send(PayloadExit(peer.pid, wire), Atom("kill"))
                return peer.ping()

        alive = await blocking(attack)
        return alive, beamlet.whereis(service) == target

    alive, same = run_node(main, builtin_epmd.port)
    assert alive and same


@pytest.mark.parametrize("service", ["net_kernel", "rex", "global_name_server"])
def test_a_service_that_dies_is_restarted_and_registered_again(
    builtin_epmd: EPMDServer, service: str
) -> None:
    async def main(node: Node) -> tuple[bool, bool]:
        old = beamlet.whereis(service)
        assert old is not None
        ref = beamlet.monitor(old)
        beamlet.exit(old, "kill")
        await beamlet.receive(Down(ref, ANY, ANY), timeout=5)

        async def restarted() -> Pid:
            for _ in range(500):
                new = beamlet.whereis(service)
                if new is not None and new != old:
                    return new
                await beamlet.sleep(0.01)
            raise AssertionError(f"{service} was not restarted")

        await restarted()
        return await blocking(answers, node.port), True

    alive, _ = run_node(main, builtin_epmd.port)
    assert alive


# -- bound: invalid control messages cost the peer its connection -------------------

THIRD = Atom("third@127.0.0.1")


def _invalid_messages(node: Node, peer: RawPeer) -> dict[str, tuple[tuple[object, ...], object]]:
    """Control tuples erts calls invalid (erts_net_message in dist.c)."""
    me = peer.pid
    target = as_seen_by_peers(node, beamlet.whereis("net_kernel"))  # type: ignore[arg-type]
    third = Pid(5, 0, THIRD, 1)
    ref = peer.new_ref()
    none = object()
    return {
        "link-from-a-third-node": ((1, third, target), none),
        "link-to-a-third-node": ((1, me, third), none),
        "exit2-to-a-third-node": ((26, me, third), Atom("kill")),
        "exit-from-a-third-node": ((24, third, target), Atom("boom")),
        "monitor-of-a-third-node": ((19, me, third, ref), none),
        "monitor-without-a-ref": ((19, me, target, 42), none),
        "unlink-id-zero": ((35, 0, me, target), none),
        "old-unlink": ((4, me, target), none),
        "node-link": ((5,), none),
        "unknown-tag": ((99, me), none),
        "reg-send-to-a-non-atom": ((6, me, Atom(""), 42), "hi"),
        "send-to-a-non-pid": ((22, me, 42), "hi"),
        "spawn-request-bad-mfa": ((29, ref, me, me, (1, 2, 3), []), []),
        "spawn-reply-to-a-third-node": ((31, ref, third, 0, Atom("ok")), none),
        "not-a-tuple": ((), none),
    }


INVALID = [
    "link-from-a-third-node",
    "link-to-a-third-node",
    "exit2-to-a-third-node",
    "exit-from-a-third-node",
    "monitor-of-a-third-node",
    "monitor-without-a-ref",
    "unlink-id-zero",
    "old-unlink",
    "node-link",
    "unknown-tag",
    "reg-send-to-a-non-atom",
    "send-to-a-non-pid",
    "spawn-request-bad-mfa",
    "spawn-reply-to-a-third-node",
    "not-a-tuple",
]


@pytest.mark.parametrize("which", INVALID)
def test_an_invalid_control_message_costs_the_peer_its_connection(
    builtin_epmd: EPMDServer, which: str
) -> None:
    """OTP drops a connection at its first invalid message; beamlet logged a
    warning per bad packet and kept it, and dialed any node named by a pid."""

    async def main(node: Node) -> tuple[bool, bool, bool]:
        def attack() -> tuple[bool, bool]:
            with RawPeer(node.port) as peer:
                control, payload = _invalid_messages(node, peer)[which]
                if control == ():
                    peer.send_packet(b"\x83\x44\x00" + b"a\x07")  # control is an integer
                elif type(payload) is object:
                    peer.send_control_tuple(control)
                else:
                    peer.send_control_tuple(control, payload)
                return peer.closed_by_node(), answers(node.port)

        dropped, alive = await blocking(attack)
        return dropped, alive, THIRD in node.conns

    dropped, alive, dialed = run_node(main, builtin_epmd.port)
    assert dropped and alive
    assert not dialed  # a pid of a third node is not a reason to dial it


def test_a_packet_that_does_not_decode_costs_the_connection(builtin_epmd: EPMDServer) -> None:
    async def main(node: Node) -> tuple[bool, bool]:
        def attack() -> tuple[bool, bool]:
            with RawPeer(node.port) as peer:
                # a SEND to net_kernel whose payload is a truncated binary
                good = Pid(*beamlet.whereis("net_kernel").wire_words(), node.name, node.creation)  # type: ignore[union-attr]
                from beamlet.distribution.etf import encode_term

                body = b"\x83\x44\x00" + encode_term((2, Atom(""), good), peer.session.ctx)
                peer.send_packet(body + b"m\x00\x00\x10\x00abc")
                return peer.closed_by_node(), answers(node.port)

        return await blocking(attack)

    dropped, alive = run_node(main, builtin_epmd.port)
    assert dropped and alive


def test_links_and_monitors_from_the_peer_itself_still_work(builtin_epmd: EPMDServer) -> None:
    """The checks refuse what erts refuses, nothing more."""

    async def main(node: Node) -> tuple[object, object]:
        async def wait() -> None:
            await beamlet.receive()

        victim = beamlet.spawn(wait)
        wire = as_seen_by_peers(node, victim)

        def peer_side() -> tuple[object, object]:
            with RawPeer(node.port) as peer:
                ref = peer.new_ref()
                peer.send(Link(peer.pid, wire))
                peer.send(MonitorP(peer.pid, wire, ref))
                assert peer.ping()
                beamlet.exit(victim, "boom")
                down = peer.receive(lambda m: getattr(m.control, "ref", None) == ref)
                exit_ = peer.receive(lambda m: type(m.control).__name__ == "PayloadExit")
                return down.payload, exit_.payload

        return await blocking(peer_side)

    down, exit_reason = run_node(main, builtin_epmd.port)
    assert down == "boom" and exit_reason == "boom"


def test_a_process_a_peer_spawns_sends_nothing_before_the_spawn_reply(
    builtin_epmd: EPMDServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[SPAWN-2] erpc's process may end before the reader thread goes on; its
    DOWN still follows the SPAWN_REPLY (erts drops a connection that breaks
    this order, "Missing 'spawn_reply' signal", OTP-17737). The worst case is
    forced: delivering SPAWN_GO waits until the process's DOWN has been sent."""
    down_sent = threading.Event()
    send, deliver = conn_mod.Connection.send, Runtime.deliver

    def send_and_note(conn: Any, control: Any, payload: Any = NO_PAYLOAD) -> None:
        send(conn, control, payload)
        if type(control) is PayloadMonitorPExit:
            down_sent.set()

    def deliver_then_wait(rt: Any, pid: Any, item: Any) -> None:
        deliver(rt, pid, item)
        if item is SPAWN_GO:
            assert down_sent.wait(10), "the spawned process did not end"

    monkeypatch.setattr(conn_mod.Connection, "send", send_and_note)
    monkeypatch.setattr(Runtime, "deliver", deliver_then_wait)
    beamlet.rpc.expose("ordering", "answer", lambda: 42)

    async def main(node: Node) -> list[tuple[str, object]]:
        def peer_side() -> list[tuple[str, object]]:
            with RawPeer(node.port) as peer:
                req, ref = peer.new_ref(), peer.new_ref()
                mfa = (Atom("erpc"), Atom("execute_call"), 4)
                peer.send(
                    SpawnRequest(req, peer.pid, peer.pid, mfa, [Atom("monitor")]),
                    [ref, Atom("ordering"), Atom("answer"), []],
                )

                def about_req(m: Message) -> bool:  # the reply's req_id, the DOWN's ref
                    return req in (
                        getattr(m.control, "req_id", None),
                        getattr(m.control, "ref", None),
                    )

                return [
                    (type(m.control).__name__, m.payload)
                    for m in (peer.receive(about_req), peer.receive(about_req))
                ]

        return await blocking(peer_side)

    try:
        seen = run_node(main, builtin_epmd.port)
    finally:
        beamlet.rpc.unexpose("ordering", "answer")
    assert [name for name, _ in seen] == ["SpawnReply", "PayloadMonitorPExit"]
    assert seen[1][1][1:] == (Atom("return"), 42)  # erpc's result, in the DOWN


# -- bound: log lines ------------------------------------------------------------------


def test_a_log_line_about_bad_input_is_short(
    builtin_epmd: EPMDServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen: a 96 MB log line (repr of a 32 MiB binary in a bad control message)."""
    big = b"x" * (32 << 20)

    async def main(node: Node) -> None:
        def attack() -> None:
            for control in ((99, big), (1, big)):  # unknown tag; LINK with 1 element
                with RawPeer(node.port) as peer:
                    peer.send_control_tuple(control)
                    assert peer.closed_by_node(20)

        await blocking(attack)

    with caplog.at_level(logging.DEBUG, "beamlet"):
        run_node(main, builtin_epmd.port)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("dropped" in line for line in lines) >= 2
    assert max(map(len, lines)) < 2000


def test_log_lines_a_peer_causes_are_rate_limited(
    builtin_epmd: EPMDServer, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(log_burst=3, log_period=3600)

    async def main(node: Node) -> bool:
        def attack() -> bool:
            for _ in range(20):
                try:
                    RawPeer(node.port, cookie="wrong").close()
                except ConnectionError:
                    pass
            return answers(node.port)

        return await blocking(attack)

    with caplog.at_level(logging.WARNING, "beamlet.distribution"):
        assert run_node(main, builtin_epmd.port, limits=limits)
    cookie_lines = [r for r in caplog.records if "wrong cookie" in r.getMessage()]
    assert len(cookie_lines) == 3


# -- bound: CPU and memory per message -------------------------------------------------


def test_a_map_built_to_collide_costs_the_connection_not_seconds_of_cpu(
    builtin_epmd: EPMDServer,
) -> None:
    import struct
    import time

    from beamlet.distribution.etf import encode_term

    p = (1 << 61) - 1
    keys = b"".join(encode_term(i * p) + b"a\x01" for i in range(1, 60_001))  # ~880 KB

    async def main(node: Node) -> tuple[bool, bool, float]:
        def attack() -> tuple[bool, bool, float]:
            with RawPeer(node.port) as peer:
                target = as_seen_by_peers(node, beamlet.whereis("net_kernel"))  # type: ignore[arg-type]
                head = b"\x83\x44\x00" + encode_term((2, Atom(""), target), peer.session.ctx)
                t0 = time.monotonic()
                peer.send_packet(head + b"t" + struct.pack(">I", 60_000) + keys)
                dropped = peer.closed_by_node(30)
                return dropped, answers(node.port), time.monotonic() - t0

        return await blocking(attack)

    dropped, alive, _seconds = run_node(main, builtin_epmd.port)
    assert dropped and alive


def test_a_term_with_too_many_elements_costs_the_connection(builtin_epmd: EPMDServer) -> None:
    import struct

    from beamlet.distribution.etf import encode_term

    limits = Limits(max_term_elements=100_000)

    async def main(node: Node) -> tuple[bool, bool]:
        def attack() -> tuple[bool, bool]:
            with RawPeer(node.port) as peer:
                target = as_seen_by_peers(node, beamlet.whereis("net_kernel"))  # type: ignore[arg-type]
                head = b"\x83\x44\x00" + encode_term((2, Atom(""), target), peer.session.ctx)
                nils = b"l" + struct.pack(">I", 200_000) + b"j" * 200_001  # [[], [], ...]
                peer.send_packet(head + nils)
                return peer.closed_by_node(), answers(node.port)

        return await blocking(attack)

    dropped, alive = run_node(main, builtin_epmd.port, limits=limits)
    assert dropped and alive


def test_a_peer_that_does_not_read_is_dropped_at_the_send_buffer_limit(
    builtin_epmd: EPMDServer,
) -> None:
    limits = Limits(max_send_buffer=1 << 20)

    async def main(node: Node) -> str | None:
        peer = await blocking(RawPeer, node.port)
        try:
            conn = await blocking(wait_until, lambda: up(node, peer), 5, "the connection")
            remote = Pid(1, 0, peer.name, peer.creation)
            chunk = b"y" * (256 << 10)
            for _ in range(1024):  # up to 256 MiB, far more than socket buffers and limit
                if conn.state == "down":
                    break
                beamlet.send(remote, chunk)
                await beamlet.sleep(0)
            return conn.reason
        finally:
            peer.close()

    reason = run_node(main, builtin_epmd.port, limits=limits)
    assert reason is not None and reason.startswith("send buffer over")


class TruncatingEPMD:
    """An EPMD that registers nodes but answers every PORT_PLEASE2_REQ with a
    truncated PORT2_RESP (one byte, then close)."""

    def __init__(self) -> None:
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[Any] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from beamlet.distribution import epmd

        while True:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            head = s.recv(3)
            if head[2:3] == bytes((epmd.ALIVE2_REQ,)):
                s.recv(4096)
                s.sendall(epmd.alive2_resp(0, 1))
                self.held.append(s)  # the registration lasts while this stays open
            else:
                s.recv(4096)
                s.sendall(bytes((epmd.PORT2_RESP,)))
                s.close()

    def close(self) -> None:
        self.listener.close()
        for s in self.held:
            s.close()


def test_a_truncated_epmd_answer_fails_the_connection_attempt_not_the_node(caplog):
    """An EPMD reply that cannot be parsed is a failed connection attempt
    (connection_down, logged), as an unreachable peer is: connect returns
    False, and a second attempt fails the same way (nothing left pending)."""
    fake = TruncatingEPMD()
    caplog.set_level(logging.INFO, logger="beamlet.distribution")

    async def main(node: Node) -> Any:
        first = await beamlet.net_kernel.connect("ghost@127.0.0.1", timeout=30)
        second = await beamlet.net_kernel.connect("ghost@127.0.0.1", timeout=30)
        return first, second

    try:
        assert run_node(main, fake.port) == (False, False)
    finally:
        fake.close()
    assert "truncated PORT2_RESP" in caplog.text
