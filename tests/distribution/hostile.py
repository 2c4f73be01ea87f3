"""Hostile clients for the distribution tests and benchmarks/dist_probe.py.

:class:`RawPeer` is a node in name only: it does the real handshake (with the
sans-I/O :class:`~beamlet.distribution.handshake.Initiator`) and then sends whatever it
is told -- well-formed control messages, invalid ones, raw bytes -- and can
check that the node still answers (``ping``: net_kernel's ``is_auth``, as
``net_adm:ping`` asks it). :func:`run_node` runs a beamlet node in this process
with the given limits. Everything is on 127.0.0.1 and bounded in time.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import beamlet
from beamlet.distribution.connection import NODE_FLAGS
from beamlet.distribution.control import NO_PAYLOAD, Control, RegSend
from beamlet.distribution.etf import encode_term
from beamlet.distribution.framing import frame
from beamlet.distribution.handshake import Complete, Failed, Initiator, Send
from beamlet.distribution.limits import Limits
from beamlet.distribution.node import Node, start_node, stop_node
from beamlet.distribution.session import DistSession, Message
from beamlet.terms import Atom, Pid, Ref

COOKIE = "hostile-cookie"
_ids = itertools.count(1)


class HandshakeRefused(ConnectionError):
    """The node closed the connection, or refused us, during the handshake."""


class RawPeer:
    """A scripted peer of the node listening on ``port`` (see the module doc)."""

    def __init__(
        self,
        port: int,
        cookie: str = COOKIE,
        name: str | None = None,
        *,
        timeout: float = 5.0,
        hidden: bool = True,
    ) -> None:
        self.name = Atom(name or f"raw{next(_ids)}@127.0.0.1")
        self.creation = 7
        self.pid = Pid(1)  # local to the peer: its own name and creation on the wire
        self.timeout = timeout
        self.inbox: list[Message] = []
        self._refs = itertools.count(1)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        hs = Initiator(self.name, cookie, self.creation, flags=NODE_FLAGS, hidden=hidden)
        self.session = DistSession(hs, text=True)
        try:
            self._handshake()
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self) -> None:
        deadline = time.monotonic() + self.timeout
        events: list[Any] = list(self.session.start(time.monotonic()))
        while True:
            for ev in events:
                if isinstance(ev, Send):
                    self.sock.sendall(ev.data)
                elif isinstance(ev, Complete):
                    return
                elif isinstance(ev, Failed):
                    raise HandshakeRefused(f"{ev.reason}: {ev.detail}")
                elif isinstance(ev, Message):
                    self.inbox.append(ev)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("handshake timed out")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                raise HandshakeRefused("the node closed the connection during the handshake")
            events = list(self.session.receive(data, time.monotonic()))

    # -- sending -------------------------------------------------------------------

    def send(self, control: Control, payload: Any = NO_PAYLOAD) -> None:
        self.sock.sendall(self.session.send(control, payload, now=time.monotonic()))

    def send_packet(self, body: bytes) -> None:
        """One 4-byte-framed packet with ``body`` as it is."""
        self.sock.sendall(frame(body))

    def send_control_tuple(self, control: tuple[Any, ...], payload: Any = NO_PAYLOAD) -> None:
        """A packet carrying any tuple as its control message (valid or not)."""
        body = b"\x83\x44\x00" + encode_term(control, self.session.ctx)
        if payload is not NO_PAYLOAD:
            body += encode_term(payload, self.session.ctx)
        self.send_packet(body)

    def new_ref(self) -> Ref:
        return Ref((next(self._refs), 0, 0))

    # -- receiving -----------------------------------------------------------------

    def _read(self, timeout: float) -> bool:
        """Read once; False if the node closed the connection."""
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return True
        except (ConnectionResetError, OSError):
            return False
        if not data:
            return False
        for ev in self.session.receive(data, time.monotonic()):
            if isinstance(ev, Message):
                self.inbox.append(ev)
            elif isinstance(ev, Failed):
                return False
        return True

    def receive(self, pred: Callable[[Message], bool], timeout: float | None = None) -> Message:
        """The first message (kept or arriving) for which ``pred`` is true."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i, m in enumerate(self.inbox):
                if pred(m):
                    del self.inbox[i]
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no such message from the node")
            if not self._read(left):
                raise ConnectionError("the node closed the connection")

    def closed_by_node(self, timeout: float | None = None) -> bool:
        """True once the node has closed this connection (False after ``timeout``)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (left := deadline - time.monotonic()) > 0:
            if not self._read(left):
                return True
        return False

    def call(self, name: str, request: Any, timeout: float | None = None) -> Any:
        """gen_server:call({name, node}, request) from this peer."""
        ref = self.new_ref()
        self.send(RegSend(self.pid, Atom(name)), (Atom("$gen_call"), (self.pid, ref), request))

        def is_reply(m: Message) -> bool:
            p = m.payload
            return type(p) is tuple and len(p) == 2 and p[0] == ref

        return self.receive(is_reply, timeout).payload[1]

    def ping(self, timeout: float | None = None) -> bool:
        """net_adm:ping: True if net_kernel answers is_auth with yes."""
        try:
            return self.call("net_kernel", (Atom("is_auth"), self.name), timeout) == "yes"
        except (TimeoutError, ConnectionError, OSError):
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def answers(port: int, cookie: str = COOKIE, timeout: float = 5.0) -> bool:
    """A fresh peer connects, handshakes and gets pong: the node is alive."""
    try:
        with RawPeer(port, cookie, timeout=timeout) as peer:
            return peer.ping(timeout)
    except (OSError, ConnectionError, TimeoutError):
        return False


def run_node(
    main: Callable[[Node], Awaitable[Any]],
    epmd_port: int,
    *,
    limits: Limits | None = None,
    cookie: str = COOKIE,
    name: str | None = None,
    **kw: Any,
) -> Any:
    """Run ``main(node)`` as the first process of a runtime that is the node
    ``name`` (started with ``limits``); stop the node when it returns."""
    node_name = name or f"target{next(_ids)}@127.0.0.1"

    async def boot() -> Any:
        if limits is not None:
            kw["limits"] = limits
        node = start_node(node_name, cookie, epmd_port=epmd_port, **kw)
        try:
            return await main(node)
        finally:
            stop_node()

    return beamlet.run(boot)


def blocking(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    """Run blocking client code (sockets) without holding a scheduler."""
    return beamlet.blocking(fn, *args)
