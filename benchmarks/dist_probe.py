"""Throw hostile inputs and faults at a beamlet node; count what it survives.

Run: ``python benchmarks/dist_probe.py`` (from the repository root; about a
minute). Everything is on 127.0.0.1 with private ports.

The target is a node in this process (so every component can be checked
directly), hosting the built-in EPMD. Each step is one bad input (to EPMD, to
the handshake, or from an authenticated peer: tests/distribution/hostile.py's
RawPeer) or one fault (a service killed, accept() failing, EPMD's host
killed...). After each step the probe checks, with a deadline of 5 s:

* component deaths -- a part down for good: the accept thread, the built-in
  EPMD, the EPMD registration, net_kernel / rex / global_name_server (the
  keeper restarts them: a restart is counted apart, not as a death);
* hangs -- a fresh peer cannot handshake and get ``pong`` from net_kernel
  (what ``net_adm:ping`` asks), or the step itself did not end in 60 s;
* expectations -- what the step should cause (connection dropped, request
  refused, service restarted, EPMD taken over...).

Prints one line per failed check and a summary: bad inputs tried, component
deaths (goal 0), hangs (goal 0), faults survived.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "distribution"))

from hostile import COOKIE, HandshakeRefused, RawPeer, answers, run_node  # noqa: E402

import beamlet  # noqa: E402
from beamlet.distribution import epmd, epmd_client  # noqa: E402
from beamlet.distribution import epmd_server as epmd_server_mod  # noqa: E402
from beamlet.distribution.control import (  # noqa: E402
    Link,
    PayloadExit,
    PayloadExit2,
    RegSend,
    SpawnRequest,
)
from beamlet.distribution.etf import encode_term  # noqa: E402
from beamlet.distribution.framing import frame  # noqa: E402
from beamlet.distribution.handshake import DFLAG_HANDSHAKE_23  # noqa: E402
from beamlet.distribution.limits import Limits  # noqa: E402
from beamlet.distribution.node import Node  # noqa: E402
from beamlet.terms import Atom, Pid  # noqa: E402

SERVICES = ("net_kernel", "rex", "global_name_server")
P61 = (1 << 61) - 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


# -- the target and its checks ------------------------------------------------------


@dataclass
class Target:
    node: Node
    port: int
    epmd_port: int
    services: dict[str, Pid] = field(default_factory=dict)
    restarts: int = 0
    kills: int = 0
    run_async: Callable[[Callable[[], Any]], Any] | None = None

    def alive_parts(self) -> list[str]:
        """The names of the components that are down now."""
        down = []
        node = self.node
        if not node.running:
            down.append("node")
        if node.acceptor is None or not node.acceptor.is_alive():
            down.append("accept thread")
        if node.epmd_keeper is None or not node.epmd_keeper.is_alive():
            down.append("EPMD keeper")
        if node.epmd_server is not None and not node.epmd_server.alive:
            down.append("built-in EPMD")
        try:
            names = dict(epmd_client.names(epmd_port=self.epmd_port, timeout=1))
        except OSError:
            names = {}
        if names.get(node.name.split("@")[0]) != self.port:
            down.append("EPMD registration")
        for name in SERVICES:
            if beamlet.whereis(name) is None:
                down.append(name)
        return down

    def note_restarts(self) -> None:
        """Count a service whose pid changed during a step (restarted)."""
        for name in SERVICES:
            pid = beamlet.whereis(name)
            if pid is not None and self.services.get(name) not in (None, pid):
                self.restarts += 1
            if pid is not None:
                self.services[name] = pid


class Probe:
    def __init__(self, target: Target, verbose: bool) -> None:
        self.t = target
        self.verbose = verbose
        self.inputs = 0
        self.faults = 0
        self.faults_survived = 0
        self.deaths: list[str] = []
        self.hangs: list[str] = []
        self.unexpected: list[str] = []

    def step(self, kind: str, name: str, fn: Callable[[Target], Any]) -> None:
        """Run one step (an input or a fault), then check the node."""
        if kind == "input":
            self.inputs += 1
        else:
            self.faults += 1
        t0 = time.monotonic()
        result: list[Any] = []

        def run() -> None:
            try:
                result.append(fn(self.t))
            except Exception as e:
                result.append(e)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(60)
        took = time.monotonic() - t0
        ok = True
        if worker.is_alive():
            self.hangs.append(f"{name}: the step did not end in 60 s")
            ok = False
        else:
            outcome = result[0] if result else None
            if isinstance(outcome, BaseException) or outcome is False:
                self.unexpected.append(f"{name}: {outcome!r}")
                ok = False
        wait_until(lambda: not self.t.alive_parts(), 5)  # restarts get 5 s
        down = self.t.alive_parts()
        if down:
            self.deaths.append(f"{name}: {', '.join(down)}")
            ok = False
        if not answers(self.t.port, timeout=5):
            self.hangs.append(f"{name}: the node did not answer a ping within 5 s")
            ok = False
        self.t.note_restarts()
        if kind == "fault" and ok:
            self.faults_survived += 1
        if self.verbose or not ok:
            print(f"  {'ok  ' if ok else 'FAIL'} {kind:5} {name} ({took:.2f} s)", flush=True)


# -- EPMD inputs ---------------------------------------------------------------------


def _alive2(name: bytes, port: int = 4000, extra: bytes = b"") -> bytes:
    body = (
        bytes((epmd.ALIVE2_REQ,))
        + struct.pack(">HBBHH", port, epmd.NODE_NORMAL, 0, 6, 6)
        + struct.pack(">H", len(name))
        + name
        + struct.pack(">H", len(extra))
        + extra
    )
    return struct.pack(">H", len(body)) + body


def _req(code: int, body: bytes = b"") -> bytes:
    return struct.pack(">H", 1 + len(body)) + bytes((code,)) + body


def _exchange(port: int, data: bytes, hold: float = 0.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(data)
        s.settimeout(5)
        out = b""
        try:
            while chunk := s.recv(4096):
                out += chunk
                if hold and len(out) >= 2:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def epmd_inputs() -> list[tuple[str, Callable[[Target], Any]]]:
    def registered_then_lookup(name: bytes) -> Callable[[Target], Any]:
        def step(t: Target) -> bool:
            with socket.create_connection(("127.0.0.1", t.epmd_port), 5) as reg:
                reg.sendall(_alive2(name))
                reg.settimeout(5)
                answer = reg.recv(2)
                _exchange(t.epmd_port, _req(epmd.PORT_PLEASE2_REQ, name))
            return answer == bytes((epmd.ALIVE2_X_RESP, 1))

        return step

    def refused(data: bytes) -> Callable[[Target], Any]:
        return lambda t: _exchange(t.epmd_port, data) == b""

    def flood(n: int) -> Callable[[Target], Any]:
        def step(t: Target) -> bool:
            socks = []
            try:
                for _ in range(n):
                    try:
                        socks.append(socket.create_connection(("127.0.0.1", t.epmd_port), 1))
                    except OSError:
                        break
                return answers(t.port)  # the node's own port is not starved
            finally:
                for s in socks:
                    s.close()

        return step

    def many_registrations(t: Target) -> bool:
        regs = []
        try:
            for i in range(400):
                try:
                    regs.append(epmd_client.register(f"probe{i}", 1000, epmd_port=t.epmd_port))
                except (epmd.EPMDError, OSError):
                    break
            return len(regs) < 400
        finally:
            for r in regs:
                r.close()

    def silent(t: Target) -> bool:
        with socket.create_connection(("127.0.0.1", t.epmd_port), 5) as s:
            s.sendall(b"\x00")
            s.settimeout(5)
            return s.recv(1) == b""  # dropped after the request timeout

    def data_after_alive2(t: Target) -> bool:
        with socket.create_connection(("127.0.0.1", t.epmd_port), 5) as s:
            s.sendall(_alive2(b"chatty"))
            s.settimeout(5)
            s.recv(6)
            s.sendall(b"more")
            return s.recv(1) == b""

    return [
        ("ALIVE2 empty name, then PORT_PLEASE2 for it", registered_then_lookup(b"")),
        ("ALIVE2 name with '@'", registered_then_lookup(b"a@b")),
        ("ALIVE2 256-character name", registered_then_lookup("é".encode() * 256)),
        ("ALIVE2 name with NUL", registered_then_lookup(b"a\x00b")),
        ("ALIVE2 name not UTF-8", refused(_alive2(b"\xff\xfe"))),
        ("ALIVE2 truncated", refused(_alive2(b"x")[:-3])),
        ("ALIVE2 extra over 1020 bytes", registered_then_lookup(b"")),
        (
            "ALIVE2 the target's own name",
            lambda t: (
                _exchange(t.epmd_port, _alive2(t.node.name.split("@")[0].encode()))[:2]
                == bytes((118, 1))
            ),
        ),
        (
            "PORT_PLEASE2 empty name",
            lambda t: _exchange(t.epmd_port, _req(epmd.PORT_PLEASE2_REQ))[:2] == bytes((119, 1)),
        ),
        ("PORT_PLEASE2 not UTF-8", refused(_req(epmd.PORT_PLEASE2_REQ, b"\xff"))),
        (
            "PORT_PLEASE2 2000-byte name",
            lambda t: (
                _exchange(t.epmd_port, _req(epmd.PORT_PLEASE2_REQ, b"n" * 2000))[:2]
                == bytes((119, 1))
            ),
        ),
        ("two NAMES_REQ in one connection", refused(_req(epmd.NAMES_REQ) * 2)),
        ("request of length 0", refused(b"\x00\x00")),
        ("request of length 65535", refused(b"\xff\xff" + b"x" * 100)),
        ("unknown request code", refused(_req(200))),
        ("DUMP_REQ", refused(_req(100))),
        ("KILL_REQ", refused(_req(107))),
        ("STOP_REQ", refused(_req(115, b"target"))),
        ("half a length header, then silence", silent),
        ("1 KB of garbage", refused(os.urandom(1024))),
        ("data after a registration", data_after_alive2),
        ("200 idle connections", flood(200)),
        ("400 registrations", many_registrations),
    ]


# -- handshake inputs (unauthenticated) -----------------------------------------------


def _send_name(name: bytes, flags: int) -> bytes:
    return frame(b"N" + struct.pack(">QIH", flags, 1, len(name)) + name, 2)


def handshake_inputs() -> list[tuple[str, Callable[[Target], Any]]]:
    from beamlet.distribution.connection import NODE_FLAGS

    def closed_after(data: bytes) -> Callable[[Target], Any]:
        def step(t: Target) -> bool:
            with socket.create_connection(("127.0.0.1", t.port), 5) as s:
                s.sendall(data)
                s.settimeout(10)
                try:
                    while s.recv(4096):
                        pass
                except (TimeoutError, ConnectionResetError):
                    return False
                return True

        return step

    def wrong_cookie(t: Target) -> bool:
        try:
            RawPeer(t.port, cookie="wrong").close()
        except HandshakeRefused:
            return True
        return False

    def many_wrong_cookies(t: Target) -> bool:
        return all(wrong_cookie(t) for _ in range(30))

    def idle_flood(t: Target) -> bool:
        socks = []
        try:
            for _ in range(200):
                try:
                    socks.append(socket.create_connection(("127.0.0.1", t.port), 1))
                except OSError:
                    break
            return t.node.handshakes <= t.node.limits.max_handshakes
        finally:
            for s in socks:
                s.close()
            wait_until(lambda: t.node.handshakes == 0, 5)

    def claims_our_name(t: Target) -> bool:
        try:
            RawPeer(t.port, name=str(t.node.name)).close()
        except (HandshakeRefused, OSError):
            pass
        return True

    return [
        ("garbage on the node port", closed_after(os.urandom(300))),
        ("connect and close", closed_after(b"")),
        ("2-byte length 65535, then silence", closed_after(b"\xff\xff" + b"x" * 10)),
        ("send_name without '@'", closed_after(_send_name(b"nohost", NODE_FLAGS))),
        (
            "send_name 300-byte name",
            closed_after(_send_name(b"a" * 290 + b"@127.0.0.1", NODE_FLAGS)),
        ),
        (
            "send_name lacking mandatory flags",
            closed_after(_send_name(b"x@127.0.0.1", DFLAG_HANDSHAKE_23)),
        ),
        (
            "old 'n' name without HANDSHAKE_23",
            closed_after(frame(b"n\x00\x06\x00\x00\x00\x04x@y1", 2)),
        ),
        ("wrong cookie", wrong_cookie),
        ("30 wrong cookies in a row", many_wrong_cookies),
        ("200 idle connections (handshake cap)", idle_flood),
        ("a peer claiming the node's own name", claims_our_name),
    ]


# -- authenticated peer inputs -------------------------------------------------------


def _me(t: Target, name: str) -> Pid:
    pid = beamlet.whereis(name)
    assert pid is not None
    return Pid(*pid.wire_words(), t.node.name, t.node.creation)


def peer_inputs() -> list[tuple[str, Callable[[Target], Any]]]:
    third = Pid(5, 0, Atom("third@127.0.0.1"), 1)

    def dropped(build: Callable[[Target, RawPeer], None]) -> Callable[[Target], Any]:
        def step(t: Target) -> bool:
            with RawPeer(t.port) as peer:
                try:
                    build(t, peer)
                except OSError:  # the node dropped us while we were still sending
                    pass
                gone = peer.closed_by_node(30)
            return gone and Atom("third@127.0.0.1") not in t.node.conns

        return step

    def survives(
        build: Callable[[Target, RawPeer], Any], timeout: float = 5.0
    ) -> Callable[[Target], Any]:
        def step(t: Target) -> bool:
            before = {n: beamlet.whereis(n) for n in SERVICES}
            with RawPeer(t.port) as peer:
                build(t, peer)
                alive = peer.ping(timeout)  # answered after the bad input
            return alive and before == {n: beamlet.whereis(n) for n in SERVICES}

        return step

    def ctl(
        control: tuple[Any, ...], payload: Any = None, has: bool = False
    ) -> Callable[[Target, RawPeer], None]:
        def build(t: Target, peer: RawPeer) -> None:
            c = tuple(x(t, peer) if callable(x) else x for x in control)
            if has:
                peer.send_control_tuple(c, payload)
            else:
                peer.send_control_tuple(c)

        return build

    def me(t: Target, peer: RawPeer) -> Pid:
        return peer.pid

    def nk(t: Target, peer: RawPeer) -> Pid:
        return _me(t, "net_kernel")

    def raw(body: Callable[[Target, RawPeer], bytes]) -> Callable[[Target, RawPeer], None]:
        return lambda t, peer: peer.send_packet(body(t, peer))

    def send_to_nk(payload: bytes) -> Callable[[Target, RawPeer], bytes]:
        return lambda t, peer: (
            b"\x83\x44\x00"
            + encode_term((2, Atom(""), _me(t, "net_kernel")), peer.session.ctx)
            + payload
        )

    def call(service: str, request: Any, frm: Any = "pair") -> Callable[[Target, RawPeer], None]:
        def build(t: Target, peer: RawPeer) -> None:
            f = (peer.pid, peer.new_ref()) if frm == "pair" else frm
            if frm == "third":
                f = (third, peer.new_ref())
            peer.send(RegSend(peer.pid, Atom(service)), (Atom("$gen_call"), f, request))

        return build

    def kill(service: str, how: str) -> Callable[[Target, RawPeer], None]:
        def build(t: Target, peer: RawPeer) -> None:
            target = _me(t, service)
            if how == "exit2":
                peer.send(PayloadExit2(peer.pid, target), Atom("kill"))
            else:
                peer.send(Link(peer.pid, target))
                peer.send(PayloadExit(peer.pid, target), Atom("kill"))

        return build

    def spawn(mfa: Any, args: Any) -> Callable[[Target, RawPeer], None]:
        def build(t: Target, peer: RawPeer) -> None:
            peer.send(
                SpawnRequest(peer.new_ref(), peer.pid, peer.pid, mfa, [Atom("monitor")]), args
            )

        return build

    def atoms(n: int) -> bytes:
        return (
            b"l"
            + struct.pack(">I", n)
            + b"".join(
                b"w" + bytes((len(s),)) + s for s in (f"probe_atom_{i}".encode() for i in range(n))
            )
            + b"j"
        )

    def colliding_map(n: int, tuples: bool = False) -> bytes:
        key = (
            (lambda i: b"h\x01" + encode_term(i * P61))
            if tuples
            else (lambda i: encode_term(i * P61))
        )
        return b"t" + struct.pack(">I", n) + b"".join(key(i) + b"a\x01" for i in range(1, n + 1))

    def fragments(kind: str) -> Callable[[Target, RawPeer], None]:
        def build(t: Target, peer: RawPeer) -> None:
            if kind == "unknown-seq":
                peer.send_packet(struct.pack(">BBQQ", 131, 70, 99, 1) + b"x")
            elif kind == "many-seqs":
                for seq in range(1, 2000):
                    peer.send_packet(struct.pack(">BBQQ", 131, 69, seq, 5) + b"\x00" + b"a\x01")
            else:  # too big in total
                head = struct.pack(">BBQQ", 131, 69, 1, 3000) + b"\x00"
                peer.send_packet(head + b"x" * (1 << 20))
                for i in range(2999, 0, -1):
                    peer.send_packet(struct.pack(">BBQQ", 131, 70, 1, i) + b"x" * (1 << 20))

        return build

    nil_flood = b"l" + struct.pack(">I", 5_000_000) + b"j" * 5_000_001

    return [
        ("unknown control tag", dropped(ctl((99, me)))),
        ("control message not a tuple", dropped(raw(lambda t, p: b"\x83\x44\x00a\x07"))),
        ("empty control tuple", dropped(ctl(()))),
        ("control tag not an integer", dropped(ctl((Atom("link"), me, nk)))),
        ("LINK from a third node's pid", dropped(ctl((1, third, nk)))),
        ("LINK to a third node's pid", dropped(ctl((1, me, third)))),
        ("EXIT to a third node's pid", dropped(ctl((24, me, third), Atom("x"), True))),
        ("EXIT2 to a third node's pid", dropped(ctl((26, me, third), Atom("kill"), True))),
        ("MONITOR_P without a reference", dropped(ctl((19, me, nk, 42)))),
        ("MONITOR_P of a third node's pid", dropped(ctl((19, me, third, Atom("r"))))),
        ("DEMONITOR_P of a binary", dropped(ctl((20, me, b"x", Atom("r"))))),
        ("UNLINK (refused since OTP 26)", dropped(ctl((4, me, nk)))),
        ("UNLINK_ID with id 0", dropped(ctl((35, 0, me, nk)))),
        ("UNLINK_ID with id 2**64", dropped(ctl((35, 1 << 64, me, nk)))),
        ("NODE_LINK", dropped(ctl((5,)))),
        (
            "SPAWN_REQUEST with a bad MFA",
            dropped(ctl((29, Atom("r"), me, me, (1, 2, 3), []), [], True)),
        ),
        ("SPAWN_REPLY to a third node's pid", dropped(ctl((31, Atom("r"), third, 0, Atom("ok"))))),
        ("REG_SEND to a 5000-digit integer", dropped(ctl((6, me, Atom(""), 10**5000), "hi", True))),
        ("SEND to a non-pid", dropped(ctl((22, me, 42), "hi", True))),
        ("ALIAS_SEND to a non-reference", dropped(ctl((33, me, 42), "hi", True))),
        ("truncated payload", dropped(raw(send_to_nk(b"m\x00\x00\x10\x00abc")))),
        ("unknown term tag", dropped(raw(send_to_nk(b"\xfe")))),
        (
            "term nested 10,000 deep",
            dropped(raw(send_to_nk(b"l\x00\x00\x00\x01" * 10_000 + b"j" * 10_001))),
        ),
        ("list claiming 2**32-1 elements", dropped(raw(send_to_nk(b"l\xff\xff\xff\xff" + b"j")))),
        (
            "compressed term inside a packet",
            dropped(raw(send_to_nk(b"P\x00\x00\x00\x05" + b"x" * 10))),
        ),
        (
            "map of 60,000 int keys that collide in Python's hash",
            dropped(raw(send_to_nk(colliding_map(60_000)))),
        ),
        (
            "map of 60,000 tuple keys that collide",
            dropped(raw(send_to_nk(colliding_map(60_000, True)))),
        ),
        ("list of 5,000,000 empty lists (1 byte each)", dropped(raw(send_to_nk(nil_flood)))),
        ("32 MiB binary in an invalid control message", dropped(ctl((99, b"x" * (32 << 20))))),
        ("packet length 2**32-1", dropped(lambda t, p: p.sock.sendall(b"\xff" * 4 + b"x" * 100))),
        ("fragment of an unknown sequence", dropped(fragments("unknown-seq"))),
        ("2,000 fragmented messages started", dropped(fragments("many-seqs"))),
        ("fragments adding up to 3 GB", dropped(fragments("too-big"))),
        ("atom cache header truncated", dropped(raw(lambda t, p: b"\x83\x44\x05"))),
        (
            "atom cache reference to an empty slot",
            dropped(raw(lambda t, p: b"\x83\x44\x01\x00\x07")),
        ),
        # 18 MiB; decoding costs seconds of CPU (GC-bound): the ping waits behind it
        ("1,000,000 distinct atoms", survives(raw(send_to_nk(atoms(1_000_000))), 60)),
        (
            "net_kernel call with From not a pair",
            survives(call("net_kernel", (Atom("is_auth"), Atom("x@y")), "nope")),
        ),
        (
            "net_kernel call with a 3-tuple From",
            survives(call("net_kernel", (Atom("is_auth"), Atom("x@y")), (1, 2, 3))),
        ),
        (
            "net_kernel call with From of a third node",
            survives(call("net_kernel", (Atom("is_auth"), Atom("x@y")), "third")),
        ),
        ("net_kernel call with a bignum request", survives(call("net_kernel", 10**5000))),
        (
            "rex call with a 5000-digit module",
            survives(call("rex", (Atom("call"), 10**5000, Atom("f"), [], Atom("u")))),
        ),
        (
            "rex call with From not a pair",
            survives(call("rex", (Atom("call"), Atom("os"), Atom("cmd"), ["ls"], Atom("u")), 7)),
        ),
        (
            "rex call of an unexposed function",
            survives(call("rex", (Atom("call"), Atom("os"), Atom("cmd"), ["ls"], Atom("u")))),
        ),
        (
            "rex features_request with a bignum",
            survives(
                lambda t, p: p.send(
                    RegSend(p.pid, Atom("rex")), (10**5000, Atom("features_request"))
                )
            ),
        ),
        (
            "global_name_server call with From an int",
            survives(call("global_name_server", Atom("x"), 42)),
        ),
        ("EXIT2 kill to net_kernel", survives(kill("net_kernel", "exit2"))),
        ("EXIT2 kill to rex", survives(kill("rex", "exit2"))),
        ("EXIT2 kill to global_name_server", survives(kill("global_name_server", "exit2"))),
        ("LINK then EXIT kill to net_kernel", survives(kill("net_kernel", "link"))),
        ("LINK then EXIT kill to rex", survives(kill("rex", "link"))),
        ("SPAWN_REQUEST of os:cmd/1", survives(spawn((Atom("os"), Atom("cmd"), 1), ["ls"]))),
        (
            "SPAWN_REQUEST erpc of an unexposed function",
            survives(
                spawn(
                    (Atom("erpc"), Atom("execute_call"), 4),
                    [Atom("r"), Atom("os"), Atom("cmd"), [b"ls"]],
                )
            ),
        ),
        (
            "SPAWN_REQUEST erpc with a bignum module",
            survives(
                spawn((Atom("erpc"), Atom("execute_call"), 4), [Atom("r"), 10**5000, Atom("f"), []])
            ),
        ),
    ]


# -- faults --------------------------------------------------------------------------


class Local:
    """Run code in a process of the target runtime (kills need a process)."""

    def __init__(self, t: Target) -> None:
        self.t = t

    def __call__(self, fn: Callable[[], Any]) -> Any:
        assert self.t.run_async is not None
        return self.t.run_async(fn)


def faults(exe: str) -> list[tuple[str, Callable[[Target], Any]]]:
    def kill_service(name: str, times: int = 1) -> Callable[[Target], Any]:
        def step(t: Target) -> bool:
            t.kills += times
            for _ in range(times):
                old = beamlet.whereis(name)
                Local(t)(lambda old=old: beamlet.exit(old, "kill"))
                if not wait_until(lambda old=old: beamlet.whereis(name) not in (None, old), 10):
                    return False
            return True

        return step

    def accept_emfile(t: Target) -> bool:
        node = t.node

        class Exhausted:
            def __init__(self, real: Any) -> None:
                self.real, self.until = real, None

            def accept(self) -> Any:
                now = time.monotonic()
                self.until = self.until or now + 0.5
                if now < self.until:
                    raise OSError(errno.EMFILE, "Too many open files")
                node.listener = self.real
                return self.real.accept()

            def __getattr__(self, name: str) -> Any:
                return getattr(self.real, name)

        node.listener = Exhausted(node.listener)  # type: ignore[assignment]
        answers(t.port)  # accepted by the call already blocked; then EMFILE for 0.5 s
        return wait_until(lambda: answers(t.port, timeout=2), 10)

    def thread_start_fails(t: Target) -> bool:
        from beamlet.distribution import connection

        real = connection.Connection.serve_accepted

        def once(self: Any, sock: Any) -> None:
            connection.Connection.serve_accepted = real  # type: ignore[method-assign]
            raise RuntimeError("can't start new thread")

        connection.Connection.serve_accepted = once  # type: ignore[method-assign]
        try:
            RawPeer(t.port).close()
        except (HandshakeRefused, OSError):
            pass
        return answers(t.port)

    def listener_broken(t: Target) -> bool:
        assert t.node.listener is not None
        t.node.listener.shutdown(socket.SHUT_RDWR)
        return wait_until(lambda: answers(t.port, timeout=1), 10)

    def epmd_answer_bug(t: Target) -> bool:
        real = epmd.port2_resp

        def broken(*a: Any) -> bytes:
            raise RuntimeError("bug")

        epmd.port2_resp = broken  # type: ignore[assignment]
        try:
            _exchange(t.epmd_port, _req(epmd.PORT_PLEASE2_REQ, b"x"))
        finally:
            epmd.port2_resp = real  # type: ignore[assignment]
        return epmd_client.port_please("x", epmd_port=t.epmd_port) is None

    def epmd_loop_bug(t: Target) -> bool:
        server = t.node.epmd_server
        assert server is not None
        real = server._next_timeout
        calls = [0]

        def once(now: float) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                raise RuntimeError("bug in the loop")
            return real(now)

        server._next_timeout = once  # type: ignore[method-assign]
        try:
            epmd_client.names(epmd_port=t.epmd_port)  # wakes the loop: it raises once
            return wait_until(lambda: server.loop_errors >= 1, 5) and bool(
                epmd_client.names(epmd_port=t.epmd_port)
            )
        finally:
            server._next_timeout = real  # type: ignore[method-assign]

    def peer_process(name: str, epmd_port: int) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        proc = subprocess.Popen(
            [exe, str(ROOT / "tests/distribution/target_node.py"), name, COOKIE, str(epmd_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
        return proc

    def peer_killed(t: Target) -> bool:
        proc = peer_process(f"victim{time.monotonic_ns()}@127.0.0.1", t.epmd_port)
        try:
            name = Atom(proc.args[2])  # type: ignore[index]
            ok = Local(t)(lambda: beamlet.monitor_node(str(name)))
            del ok
            if not wait_until(lambda: name in t.node.conns, 10):
                return False
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            seen = wait_until(lambda: name not in t.node.conns, 10)
            t.peer_down_ms = (time.monotonic() - t0) * 1000  # type: ignore[attr-defined]
            return seen
        finally:
            proc.kill()
            proc.wait(10)

    def epmd_host_dies(signum: int | None) -> Callable[[Target], Any]:
        """A second node (in its own process) on a fresh EPMD port serves EPMD;
        this probe registers a helper node with it, the host dies, the helper
        must serve or register again (timed)."""

        def step(t: Target) -> bool:
            port = free_port()
            host = peer_process("epmdhost@127.0.0.1", port)
            other = peer_process(f"other{time.monotonic_ns()}@127.0.0.1", port)
            try:
                t0 = time.monotonic()
                if signum is None:
                    assert host.stdin is not None
                    host.stdin.close()  # a clean stop
                else:
                    host.send_signal(signum)
                host.wait(10)  # gone (its EPMD with it): from now on "other" must act

                def found() -> bool:
                    try:
                        names = {n for n, _ in epmd_client.names(epmd_port=port, timeout=0.5)}
                    except OSError:
                        return False
                    return any(n.startswith("other") for n in names)

                ok = wait_until(found, 10)
                t.takeover_ms = getattr(t, "takeover_ms", [])  # type: ignore[attr-defined]
                t.takeover_ms.append((time.monotonic() - t0) * 1000)  # type: ignore[attr-defined]
                return ok
            finally:
                for p in (host, other):
                    p.kill()
                    p.wait(10)

        return step

    def reconnect_storm(t: Target) -> bool:
        for _ in range(50):
            with RawPeer(t.port, name="storm@127.0.0.1") as peer:
                if not peer.ping():
                    return False
        return True

    def silent_peer(t: Target) -> bool:
        peer = RawPeer(t.port)  # authenticated, then says nothing: tick timeout ends it
        try:
            return peer.closed_by_node(t.node.tick_time + 5)
        finally:
            peer.close()

    def slow_reader(t: Target) -> bool:
        peer = RawPeer(t.port)
        try:
            wait_until(lambda: t.node.conns.get(peer.name) is not None, 5)
            conn = t.node.conns.get(peer.name)
            remote = Pid(1, 0, peer.name, peer.creation)
            for _ in range(4000):
                if conn is None or conn.state == "down":
                    break
                Local(t)(lambda: beamlet.send(remote, b"z" * (64 << 10)))
            return conn is not None and conn.state == "down"
        finally:
            peer.close()

    def half_handshake_close(t: Target) -> bool:
        with socket.create_connection(("127.0.0.1", t.port), 5) as s:
            s.sendall(_send_name(b"half@127.0.0.1", 0xFFFFFFFFF)[:5])
        return wait_until(lambda: t.node.handshakes == 0, 5)

    def mid_fragment_close(t: Target) -> bool:
        with RawPeer(t.port) as peer:
            peer.send_packet(struct.pack(">BBQQ", 131, 69, 1, 10) + b"\x00" + b"x" * 100)
        return True

    def links_then_gone(t: Target) -> bool:
        async def linked() -> None:
            beamlet.process_flag("trap_exit", True)
            await beamlet.receive()

        pids = [Local(t)(lambda: beamlet.spawn(linked)) for _ in range(200)]
        with RawPeer(t.port) as peer:
            for p in pids:
                peer.send(Link(peer.pid, Pid(*p.wire_words(), t.node.name, t.node.creation)))
            peer.ping()
        return True

    return [
        ("net_kernel killed", kill_service("net_kernel")),
        ("rex killed", kill_service("rex")),
        ("global_name_server killed", kill_service("global_name_server")),
        ("net_kernel killed 15 times in a row (back-off)", kill_service("net_kernel", 15)),
        ("accept() fails with EMFILE for 0.5 s", accept_emfile),
        ("a connection's thread cannot start", thread_start_fails),
        ("the listening socket breaks", listener_broken),
        ("a bug in an EPMD answer", epmd_answer_bug),
        ("a bug in the EPMD loop", epmd_loop_bug),
        ("a connected peer is SIGKILLed", peer_killed),
        ("the EPMD host is SIGKILLed", epmd_host_dies(signal.SIGKILL)),
        ("the EPMD host stops", epmd_host_dies(None)),
        ("the EPMD host is SIGTERMed", epmd_host_dies(signal.SIGTERM)),
        ("50 reconnects in a row under one name", reconnect_storm),
        ("an authenticated peer falls silent (tick timeout)", silent_peer),
        ("a peer that does not read (send buffer)", slow_reader),
        ("a peer closes mid-handshake", half_handshake_close),
        ("a peer closes mid-fragment", mid_fragment_close),
        ("a peer with 200 links goes away", links_then_gone),
    ]


# -- main ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per step")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the node's own (bounded) lines: not here
    epmd_port = free_port()
    limits = Limits(max_send_buffer=8 << 20, log_burst=5)
    report: dict[str, Any] = {}

    async def run(node: Node) -> None:
        import queue as q

        jobs: q.Queue[tuple[Callable[[], Any], q.Queue[Any]] | None] = q.Queue()

        async def helper() -> None:  # runs what a step needs done in a process
            while True:
                job = await beamlet.blocking(jobs.get)
                if job is None:  # the probe is over (and no pool thread is left waiting)
                    return
                fn, out = job
                try:
                    out.put((True, fn()))
                except Exception as e:
                    out.put((False, e))

        beamlet.spawn(helper)

        def run_async(fn: Callable[[], Any]) -> Any:
            out: q.Queue[Any] = q.Queue()
            jobs.put((fn, out))
            ok, value = out.get(timeout=30)
            if not ok:
                raise value
            return value

        t = Target(node, node.port, epmd_port, run_async=run_async)
        t.note_restarts()
        probe = Probe(t, args.verbose)

        def steps() -> None:
            for group, items in (
                ("EPMD", epmd_inputs()),
                ("handshake", handshake_inputs()),
                ("peer", peer_inputs()),
            ):
                print(f"{group}: {len(items)} inputs", flush=True)
                for name, fn in items:
                    probe.step("input", f"{group}: {name}", fn)
            items = faults(sys.executable)
            print(f"faults: {len(items)}", flush=True)
            for name, fn in items:
                probe.step("fault", name, fn)

        try:
            await beamlet.blocking(steps)
        finally:
            jobs.put(None)
        report["probe"] = probe
        report["target"] = t

    t0 = time.monotonic()
    run_node(run, epmd_port, name="probed@127.0.0.1", limits=limits, tick_time=4.0)
    probe: Probe = report["probe"]
    t = report["target"]
    print()
    print(f"bad inputs tried:   {probe.inputs}")
    print(f"component deaths:   {len(probe.deaths)}  (goal 0)")
    for d in probe.deaths:
        print(f"    {d}")
    print(f"hangs:              {len(probe.hangs)}  (goal 0)")
    for h in probe.hangs:
        print(f"    {h}")
    print(f"faults survived:    {probe.faults_survived} / {probe.faults}")
    print(f"unexpected results: {len(probe.unexpected)}")
    for u in probe.unexpected:
        print(f"    {u}")
    print(f"services killed:    {t.kills}, each restarted by the keeper")
    if hasattr(t, "peer_down_ms"):
        print(f"SIGKILLed peer seen down after: {t.peer_down_ms:.0f} ms")
    if hasattr(t, "takeover_ms"):
        print("EPMD host gone -> other node found again after: "
              + ", ".join(f"{ms:.0f} ms" for ms in t.takeover_ms))  # fmt: skip
    print(f"({time.monotonic() - t0:.0f} s)")
    _ = epmd_server_mod


if __name__ == "__main__":
    main()
