"""Connections to other nodes: the only code that owns distribution sockets.

A :class:`Connection` drives one :class:`~beamlet.dist.session.DistSession`
over one TCP socket. A reader thread per connection reads, feeds the session,
sends ticks (``net_ticktime``), and hands each decoded control message to the
node (:meth:`Node.dispatch`). Writes happen in the sending thread, under the
connection's lock: an encoding error reaches the sender as an exception, and a
slow peer blocks only its own senders (a scheduler blocked there is handed off
by sysmon like any process blocked in a syscall). Messages sent while the
connection is being set up wait in ``pending`` and go out, in order, once the
handshake completes.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from beamlet._kernel.parker import Parker
from beamlet.dist.control import NO_PAYLOAD, Control
from beamlet.dist.handshake import (
    BEAMLET_FLAGS,
    DFLAG_SPAWN,
    Acceptor,
    Complete,
    Failed,
    Initiator,
    Send,
)
from beamlet.dist.session import BadMessage, DistSession, Message
from beamlet.terms import Atom, Pid, Ref

if TYPE_CHECKING:
    from beamlet.dist.node import Node

logger = logging.getLogger("beamlet.dist")

#: The node answers SPAWN_REQUEST (for erpc, which rpc:call uses since OTP 23).
NODE_FLAGS = BEAMLET_FLAGS | DFLAG_SPAWN

CONNECTING = "connecting"
UP = "up"
DOWN = "down"


class ConnectionDown(Exception):
    """The connection is not (or no longer) up."""


class Connection:
    """One connection to ``peer`` (None until an accepted handshake names it)."""

    def __init__(self, node: Node, peer: Atom | None, *, accepted: bool) -> None:
        self.node = node
        self.peer = peer
        self.accepted = accepted
        self.state = CONNECTING
        self.session: DistSession | None = None
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()  # state, pending, socket writes
        self.pending: list[tuple[Control, Any]] = []
        self.peer_hidden = False
        self.reason: str | None = None
        self.settled = threading.Event()  # set once up, or down
        self.outbuf = bytearray()  # encoded packets waiting for the writer thread
        self.flush_scheduled = False
        self.writer = Parker()
        self.cleaned = False  # Node.connection_down has run
        # What crosses this connection, to clean up when it goes down.
        self.track = threading.Lock()
        self.links: set[tuple[Pid, Pid]] = set()  # (local, remote)
        self.out_monitors: dict[
            Ref, tuple[Pid, Any]
        ] = {}  # ref -> (local watcher, what Down reports)
        self.in_monitors: dict[Ref, tuple[Pid, Pid]] = {}  # ref -> (remote watcher, local target)

    def __repr__(self) -> str:
        return f"<Connection {self.peer} {self.state}>"

    # -- sending ---------------------------------------------------------

    def send(self, control: Control, payload: Any = NO_PAYLOAD) -> None:
        """Send a control message, or queue it while the connection is set up.
        Raises ConnectionDown if it is down, TypeError/ValueError if a term
        cannot be encoded (then nothing is sent)."""
        with self.lock:
            if self.state == CONNECTING:
                self.pending.append((control, payload))
                return
            if self.state != UP:
                raise ConnectionDown(self.reason or "down")
            assert self.session is not None
            self.outbuf += self.session.send(control, payload, now=time.monotonic())
            wake = not self.flush_scheduled
            self.flush_scheduled = True
        if wake:
            self.writer.unpark()

    def _write(self, data: bytes) -> None:
        with self.lock:
            if self.state == DOWN:
                return
            self.outbuf += data
            wake = not self.flush_scheduled
            self.flush_scheduled = True
        if wake:
            self.writer.unpark()

    def _writer_loop(self) -> None:
        """The only writer of the socket: it writes whatever senders queued
        since its last write in one go, so a stream of small messages costs few
        system calls, and a sender never waits for the network."""
        while True:
            self.writer.park()
            with self.lock:
                data, self.outbuf = self.outbuf, bytearray()
                self.flush_scheduled = False
                sock = self.sock
                if self.state == DOWN and not data:
                    return
            if data and sock is not None:
                try:
                    sock.sendall(data)
                except OSError as e:
                    self.fail(f"write failed: {e}")
                    return
            if self.state == DOWN:
                return

    # -- life cycle ------------------------------------------------------

    def connect_in_background(self, host: str, port_of: Any) -> None:
        threading.Thread(
            target=self._connect,
            args=(host, port_of),
            name=f"beamlet-dist-connect-{self.peer}",
            daemon=True,
        ).start()

    def _connect(self, host: str, port_of: Any) -> None:
        node = self.node
        assert self.peer is not None
        try:
            port = port_of(self.peer)
            if port is None:
                raise ConnectionDown(f"{self.peer} is not registered with EPMD on {host}")
            sock = socket.create_connection((host, port), timeout=node.setup_time)
        except (OSError, ConnectionDown) as e:
            node.connection_down(self, f"cannot connect: {e}")
            return
        hs = Initiator(
            node.name,
            node.cookie,
            node.creation,
            peer_name=self.peer,
            hidden=node.hidden,
            flags=NODE_FLAGS,
        )
        self._run(
            sock, DistSession(hs, tick_time=node.tick_time, setup_time=node.setup_time, text=True)
        )

    def serve_accepted(self, sock: socket.socket) -> None:
        node = self.node
        hs = Acceptor(
            node.name,
            node.cookie,
            node.creation,
            hidden=node.hidden,
            status=node.accept_status,
            flags=NODE_FLAGS,
        )
        threading.Thread(
            target=self._run,
            args=(
                sock,
                DistSession(hs, tick_time=node.tick_time, setup_time=node.setup_time, text=True),
            ),
            name="beamlet-dist-accepted",
            daemon=True,
        ).start()

    def _run(self, sock: socket.socket, session: DistSession) -> None:
        """The reader loop: handshake, then messages and ticks, until down."""
        # As Erlang's dist does: small control messages must not wait for Nagle.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            if self.state == DOWN:  # superseded or closed meanwhile
                sock.close()
                return
            self.sock = sock
            self.session = session
        threading.Thread(
            target=self._writer_loop, name=f"beamlet-dist-writer-{self.peer}", daemon=True
        ).start()
        try:
            for event in session.start(time.monotonic()):
                self._handle(event)
            while self.state != DOWN:
                now = time.monotonic()
                sock.settimeout(max(0.01, session.next_deadline(now)))
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    for event in session.poll(time.monotonic()):
                        self._handle(event)
                    continue
                except OSError as e:
                    self.fail(f"read failed: {e}")
                    break
                if not data:
                    self.fail("closed by the peer")
                    break
                for event in session.receive(data, time.monotonic()):
                    self._handle(event)
        except Exception as e:  # a bug here must cost this connection only, never the node
            logger.exception("distribution connection to %s failed", self.peer)
            self.fail(f"internal error: {e!r}")
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _handle(self, event: Any) -> None:
        if isinstance(event, Send):
            self._write(event.data)
        elif isinstance(event, Message):
            self.node.dispatch(self, event.control, event.payload)
        elif isinstance(event, Complete):
            self._complete(event)
        elif isinstance(event, BadMessage):
            logger.warning(
                "bad packet from %s (%s): %s",
                self.peer,
                "connection dropped" if event.fatal else "message lost",
                event.error,
            )
        elif isinstance(event, Failed):
            if event.reason == "bad_cookie":
                logger.warning("connection from %s refused: wrong cookie", self.peer or "a node")
            self.fail(f"{event.reason}: {getattr(event, 'detail', '')}")

    def _complete(self, done: Complete) -> None:
        self.peer = done.peer_name
        self.peer_hidden = done.peer_hidden
        if not self.node.adopt(self):
            self.fail("superseded")
            return
        with self.lock:
            pending, self.pending = self.pending, []
            self.state = UP
        self.settled.set()
        for control, payload in pending:
            try:
                self.send(control, payload)
            except (TypeError, ValueError) as e:
                logger.error("dropped a message to %s that cannot be encoded: %s", self.peer, e)
            except ConnectionDown:
                break
        logger.info("connected to %s%s", self.peer, " (hidden)" if self.peer_hidden else "")

    def fail(self, reason: str) -> None:
        with self.lock:
            self._fail_locked(reason)

    def _fail_locked(self, reason: str) -> None:
        if self.state == DOWN:
            return
        self.state = DOWN
        self.reason = reason
        self.settled.set()
        self.writer.unpark()
        if self.session is not None:
            self.session.close(reason)
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        threading.Thread(target=self.node.connection_down, args=(self, reason), daemon=True).start()

    def take_pending(self) -> list[tuple[Control, Any]]:
        """Hand the queued messages to the connection that replaces this one."""
        with self.lock:
            pending, self.pending = self.pending, []
            self.state = DOWN
            self.reason = "superseded"
        return pending

    def wait_settled(self, timeout: float) -> bool:
        """Block until the connection is up or down; True if up."""
        self.settled.wait(timeout)
        return self.state == UP
