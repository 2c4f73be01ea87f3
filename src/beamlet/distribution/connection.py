"""Connections to other nodes: the only code that owns distribution sockets.

A :class:`Connection` drives one :class:`~beamlet.distribution.session.DistSession`
over one TCP socket. A reader thread per connection reads, feeds the session,
sends ticks (``net_ticktime``), and hands each decoded control message to the
node (:meth:`Node.dispatch`). Senders encode in their own thread, under the
connection's lock (an encoding error reaches the sender as an exception), and
queue the bytes for the connection's writer thread. Messages sent while the
connection is being set up wait in ``pending`` and go out, in order, once the
handshake completes.

What a peer costs (docs/distribution.md, "Security"): during the handshake one
thread (the reader writes the few handshake messages itself; the writer thread
starts once the peer is authenticated) and at most 64 KiB of buffer; after it,
the bounds of :class:`~beamlet.distribution.limits.Limits` (packet, message, term and
send-buffer sizes). The first packet that cannot be decoded ends the
connection, as in erts (``erts_net_message``: any decode error or invalid
message kills the connection).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from beamlet._kernel.parker import Parker
from beamlet.distribution.control import NO_PAYLOAD, Control
from beamlet.distribution.epmd import EPMDError
from beamlet.distribution.handshake import (
    BEAMLET_FLAGS,
    DFLAG_SPAWN,
    Acceptor,
    Complete,
    Failed,
    Initiator,
    Send,
)
from beamlet.distribution.limits import brief_exception
from beamlet.distribution.session import BadMessage, DistSession, Message
from beamlet.terms import Atom, Pid, Ref

if TYPE_CHECKING:
    from beamlet.distribution.node import Node

logger = logging.getLogger("beamlet.distribution")

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
        self.writer_started = False  # once the handshake is done
        self.counted = False  # counted in node.handshakes (an accepted one, in its handshake)
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
            if len(self.outbuf) > self.node.limits.max_send_buffer:
                self._overflow()  # a backlog the peer does not read (one big message is fine)
                raise ConnectionDown(self.reason or "down")
            self.outbuf += self.session.send(control, payload, now=time.monotonic())
            wake = not self.flush_scheduled
            self.flush_scheduled = True
        if wake:
            self.writer.unpark()

    def _overflow(self) -> None:
        """The peer does not read what we send: drop it rather than hold more."""
        limit = self.node.limits.max_send_buffer
        self.node.log.log(
            logger,
            logging.WARNING,
            "send_buffer",
            "connection to %s dropped: over %d bytes queued that it does not read",
            self.peer,
            limit,
        )
        self.outbuf = bytearray()
        self._fail_locked(f"send buffer over {limit} bytes")

    def _write(self, data: bytes) -> None:
        if not self.writer_started:
            # The handshake: the reader thread writes its few small messages itself.
            sock = self.sock
            if sock is not None:
                try:
                    sock.sendall(data)
                except OSError as e:
                    self.fail(f"write failed: {e}")
            return
        with self.lock:
            if self.state == DOWN:
                return
            if len(self.outbuf) > self.node.limits.max_send_buffer:
                self._overflow()
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
        except (OSError, ConnectionDown, EPMDError) as e:
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
        self._run(sock, self._session(hs))

    def _session(self, hs: Initiator | Acceptor) -> DistSession:
        node = self.node
        lim = node.limits
        return DistSession(
            hs,
            tick_time=node.tick_time,
            setup_time=node.setup_time,
            max_packet=lim.max_packet,
            max_message=lim.max_message,
            max_sequences=lim.max_fragmented,
            max_depth=lim.max_term_depth,
            max_elements=lim.max_term_elements,
            max_equal_hashes=lim.max_equal_hashes,
            text=True,
        )

    def serve_accepted(self, sock: socket.socket) -> None:
        """Serve a connection the node accepted, in a new thread. Raises
        RuntimeError if the thread cannot start (the caller closes ``sock``)."""
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
            args=(sock, self._session(hs)),
            name="beamlet-dist-accepted",
            daemon=True,
        ).start()

    def _run(self, sock: socket.socket, session: DistSession) -> None:
        """The reader loop: handshake, then messages and ticks, until down."""
        # As Erlang's dist does: small control messages must not wait for Nagle.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with self.lock:
                if self.state == DOWN:  # superseded or closed meanwhile
                    sock.close()
                    return
                self.sock = sock
                self.session = session
            self._handle_all(session.start(time.monotonic()))
            while self.state != DOWN:
                now = time.monotonic()
                sock.settimeout(max(0.01, session.next_deadline(now)))
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    self._handle_all(session.poll(time.monotonic()))
                    continue
                except OSError as e:
                    self.fail(f"read failed: {e}")
                    break
                if not data:
                    self.fail("closed by the peer")
                    break
                self._handle_all(session.receive(data, time.monotonic()))
        except Exception as e:  # a bug here must cost this connection only, never the node
            self.node.log.log(
                logger,
                logging.ERROR,
                "internal",
                "distribution connection to %s failed: %s",
                self.peer,
                brief_exception(e, trace=True),
            )
            self.fail(f"internal error: {brief_exception(e)}")
        finally:
            self.node.handshake_over(self)
            try:
                sock.close()
            except OSError:
                pass

    def _handle_all(self, events: list[Any]) -> None:
        for event in events:
            if self.state == DOWN:
                return  # nothing after a message that ended the connection
            self._handle(event)

    def _handle(self, event: Any) -> None:
        if isinstance(event, Send):
            self._write(event.data)
        elif isinstance(event, Message):
            self.node.dispatch(self, event.control, event.payload)
        elif isinstance(event, Complete):
            self._complete(event)
        elif isinstance(event, BadMessage):
            # erts drops the connection at the first packet it cannot decode.
            self.node.log.log(
                logger,
                logging.WARNING,
                "bad_packet",
                "bad packet from %s, connection dropped: %s",
                self.peer,
                brief_exception(event.error, self.node.limits.log_chars),
            )
            self.fail("bad packet")
        elif isinstance(event, Failed):
            if event.reason == "bad_cookie":
                self.node.log.log(
                    logger,
                    logging.WARNING,
                    "bad_cookie",
                    "connection from %s refused: wrong cookie",
                    self.peer or "a node",
                )
            self.fail(f"{event.reason}: {getattr(event, 'detail', '')}")

    def _complete(self, done: Complete) -> None:
        self.peer = done.peer_name
        self.peer_hidden = done.peer_hidden
        self.node.handshake_over(self)
        if not self.node.adopt(self):
            self.fail("superseded")
            return
        self.writer_started = True
        threading.Thread(
            target=self._writer_loop, name=f"beamlet-dist-writer-{self.peer}", daemon=True
        ).start()
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
