"""A small built-in EPMD, for hosts where none is running.

Serves the requests of erl_dist_protocol.md, "EPMD Protocol", that nodes
use -- ALIVE2_REQ (answered with ALIVE2_X_RESP), PORT_PLEASE2_REQ and
NAMES_REQ -- so real ``erl`` nodes can register with it and look each other
up.  A registration lasts as long as its connection, as with the real EPMD.
DUMP_REQ, KILL_REQ and STOP_REQ are refused (the connection is closed).

One thread runs a :mod:`selectors` loop; it binds 127.0.0.1 by default, so
only local nodes can use it.  Start it with :func:`ensure_epmd` (only if
nothing answers on the port) or :class:`EPMDServer` directly.

Hostile clients (docs/distribution.md, "Security") cost only their own
connection: a malformed request, a name epmd would refuse (empty, over 255
characters, with ``@`` or NUL), even a bug while answering, closes that
connection and nothing else; the loop itself is supervised (an unexpected
error is logged and the loop goes on with every registration kept).  What a
client can make it hold is bounded: ``max_connections`` connections with a
request in progress (one more is closed at accept), ``max_registrations``
registered nodes, ``request_timeout`` seconds for a connection to send its
request and read the answer (a registration's connection has no timeout: it
*is* the registration), at most :data:`~beamlet.distribution.epmd.MAX_REQUEST` bytes
per request.  Running out of file descriptors (EMFILE) pauses accepting with
a back-off instead of spinning.  Only a client on a loopback address may
register (as with epmd).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import secrets
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from beamlet.distribution import epmd
from beamlet.distribution.epmd import EPMDError, NodeInfo
from beamlet.distribution.limits import Limits, LogLimiter, brief_exception

__all__ = ["EPMDServer", "ensure_epmd"]

logger = logging.getLogger("beamlet.distribution.epmd")

_DEFAULTS = Limits()
#: Errors of accept() that mean "out of a resource for now": back off, retry.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    deadline: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    registered: str | None = None  # node name this connection keeps alive
    close_after_write: bool = False


class EPMDServer:
    """A built-in EPMD on ``host:port`` (``port=0`` picks a free one; see
    :attr:`port` after :meth:`start`). The bounds default to :class:`Limits`'s."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = epmd.DEFAULT_PORT,
        *,
        max_connections: int = _DEFAULTS.epmd_max_connections,
        max_registrations: int = _DEFAULTS.epmd_max_registrations,
        request_timeout: float = _DEFAULTS.epmd_request_timeout,
        log_limiter: LogLimiter | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
        self.max_connections = max_connections
        self.max_registrations = max_registrations
        self.request_timeout = request_timeout
        self._log = log_limiter or LogLimiter(_DEFAULTS.log_burst, _DEFAULTS.log_period)
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeInfo] = {}
        self._creations: dict[str, int] = {}
        self._pending: set[_Conn] = set()  # connections with a request in progress
        self._registrants: set[_Conn] = set()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._accepting_again = 0.0  # after EMFILE: when to listen again
        self._backoff = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        #: Unexpected errors the loop survived (a statistic for tests and probes).
        self.loop_errors = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> EPMDServer:
        """Bind and serve in a daemon thread. Raises OSError if the port is taken."""
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lst.bind((self.host, self._requested_port))
            lst.listen(128)
        except BaseException:
            lst.close()
            raise
        lst.setblocking(False)
        self._listener = lst
        self.port = lst.getsockname()[1]
        self._sel.register(lst, selectors.EVENT_READ, None)
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="beamlet-epmd", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (unregistering every node)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    @property
    def alive(self) -> bool:
        """True while the server thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> EPMDServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def registered(self) -> dict[str, NodeInfo]:
        """A snapshot of the registered nodes by name."""
        with self._lock:
            return dict(self._nodes)

    def connections(self) -> tuple[int, int]:
        """``(requests in progress, registrations)``: the connections held now."""
        with self._lock:
            return len(self._pending), len(self._registrants)

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        """The supervised loop: an unexpected error is logged and serving goes
        on, with every connection and registration as it was."""
        try:
            while not self._stopping.is_set():
                try:
                    self._serve()
                except Exception as e:
                    self.loop_errors += 1
                    self._log.log(
                        logger,
                        logging.ERROR,
                        "loop",
                        "built-in EPMD: unexpected error, serving on: %s",
                        brief_exception(e, trace=True),
                    )
                    self._stopping.wait(0.05)
        finally:
            for key in list(self._sel.get_map().values()):
                if isinstance(key.data, _Conn):
                    self._close(key.data)
            self._sel.close()
            if self._listener is not None:
                self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            timeout = self._next_timeout(now)
            for key, mask in self._sel.select(timeout):
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(64)
                    continue
                if key.data is None:
                    self._accept()
                    continue
                conn: _Conn = key.data
                try:
                    if mask & selectors.EVENT_READ:
                        self._read(conn)
                    if mask & selectors.EVENT_WRITE and conn.sock.fileno() >= 0:
                        self._write(conn)
                except Exception as e:  # a bug answering costs this connection only
                    self._log.log(
                        logger,
                        logging.ERROR,
                        "conn",
                        "built-in EPMD: error on one connection (closed): %s",
                        brief_exception(e, trace=True),
                    )
                    self._close(conn)
            self._expire(time.monotonic())

    def _next_timeout(self, now: float) -> float | None:
        deadlines = [c.deadline for c in self._pending]
        if self._accepting_again:
            deadlines.append(self._accepting_again)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._pending if c.deadline <= now]:
            self._close(conn)  # an incomplete request, or an answer nobody reads
        if self._accepting_again and now >= self._accepting_again and self._listener is not None:
            self._accepting_again = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, None)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except OSError as e:
            if e.errno in _EXHAUSTED:
                # The listener stays readable: stop watching it for a while
                # instead of spinning, and say so.
                self._backoff = min(1.0, max(0.05, self._backoff * 2))
                self._sel.unregister(self._listener)
                self._accepting_again = time.monotonic() + self._backoff
                self._log.log(
                    logger,
                    logging.WARNING,
                    "accept",
                    "built-in EPMD: cannot accept (%s); retrying in %.2f s",
                    e.strerror,
                    self._backoff,
                )
            return  # ECONNABORTED and friends: that client gave up
        self._backoff = 0.0
        if len(self._pending) >= self.max_connections:
            sock.close()
            self._log.log(
                logger,
                logging.WARNING,
                "busy",
                "built-in EPMD: %d requests in progress; refused a connection",
                len(self._pending),
            )
            return
        sock.setblocking(False)
        conn = _Conn(sock, time.monotonic() + self.request_timeout)
        with self._lock:
            self._pending.add(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Conn) -> None:
        if conn.sock.fileno() >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
            conn.sock.close()
        with self._lock:
            self._pending.discard(conn)
            self._registrants.discard(conn)
            if conn.registered is not None:
                self._nodes.pop(conn.registered, None)
                conn.registered = None

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or conn.registered is not None:
            # a registered node's connection carries nothing else (epmd closes it too)
            self._close(conn)
            return
        if conn.close_after_write:
            return  # the answer is on its way; ignore anything more
        conn.inbuf += data
        if len(conn.inbuf) >= 2 and int.from_bytes(conn.inbuf[:2], "big") > epmd.MAX_REQUEST:
            self._close(conn)
            return
        try:
            got = epmd.parse_request(bytes(conn.inbuf))
        except EPMDError:
            self._close(conn)
            return
        if got is None:
            return
        request, used = got
        if used != len(conn.inbuf):  # one request per connection, as epmd
            self._close(conn)
            return
        conn.inbuf.clear()
        self._handle(conn, request)

    def _handle(self, conn: _Conn, req: epmd.Request) -> None:
        if req.code == epmd.ALIVE2_REQ and req.info is not None:
            self._register(conn, req.info)
        elif req.code == epmd.PORT_PLEASE2_REQ:
            name = req.name or ""
            with self._lock:
                found = self._nodes.get(name) if epmd.check_name(name) is None else None
            self._reply(conn, epmd.port2_resp(found), close=True)
        elif req.code == epmd.NAMES_REQ:
            with self._lock:
                nodes = [(n, i.port) for n, i in self._nodes.items()]
            self._reply(conn, epmd.names_resp(self.port, nodes), close=True)
        else:
            self._close(conn)

    def _register(self, conn: _Conn, info: NodeInfo) -> None:
        why = epmd.check_name(info.name)
        if why is None and len(info.extra) > epmd.MAX_EXTRA:
            why = "extra data too long"
        if why is None and not _is_local(conn.sock):
            why = "registration from a non-local address"
        with self._lock:
            if why is None and info.name in self._nodes:
                why = "name in use"
            if why is None and len(self._registrants) >= self.max_registrations:
                why = f"{self.max_registrations} nodes registered already"
            if why is None:
                self._nodes[info.name] = info
                creation = self._new_creation(info.name)
                conn.registered = info.name
                self._pending.discard(conn)
                self._registrants.add(conn)
        if why is not None:
            self._log.log(logger, logging.INFO, "refused", "built-in EPMD: refused ALIVE2: %s", why)
            self._reply(conn, epmd.alive2_resp(1, 0), close=True)
        else:
            self._reply(conn, epmd.alive2_resp(0, creation), close=False)

    def _new_creation(self, name: str) -> int:
        # A non-zero 32-bit creation, different from the previous one for the
        # same name (so pids of an old incarnation are told apart).
        while True:
            c = secrets.randbits(32)
            if c and c != self._creations.get(name):
                if len(self._creations) >= 4 * self.max_registrations:
                    self._creations.clear()  # bounded, like epmd's MAX_UNREG_COUNT
                self._creations[name] = c
                return c

    def _reply(self, conn: _Conn, data: bytes, *, close: bool) -> None:
        conn.outbuf += data
        conn.close_after_write = close
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        del conn.outbuf[:sent]
        if conn.outbuf:
            self._sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            return
        if conn.close_after_write:
            self._close(conn)
        else:
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)


def _is_local(sock: socket.socket) -> bool:
    """A peer on a loopback address, or on this host's own address (epmd's rule)."""
    try:
        peer = sock.getpeername()[0]
        own = sock.getsockname()[0]
        return ipaddress.ip_address(peer).is_loopback or peer == own
    except (OSError, ValueError):
        return False


def ensure_epmd(
    host: str = "127.0.0.1",
    port: int = epmd.DEFAULT_PORT,
    timeout: float = 1.0,
    *,
    limits: Limits | None = None,
    log_limiter: LogLimiter | None = None,
) -> EPMDServer | None:
    """Start a built-in EPMD on ``host:port`` unless one already answers there.

    Returns the server started (stop it when the node stops), or None if an
    EPMD was already running (or another process won the race to bind).
    """
    try:
        with socket.create_connection((host, port), timeout):
            return None
    except OSError:
        pass
    lim = limits or _DEFAULTS
    try:
        return EPMDServer(
            host,
            port,
            max_connections=lim.epmd_max_connections,
            max_registrations=lim.epmd_max_registrations,
            request_timeout=lim.epmd_request_timeout,
            log_limiter=log_limiter,
        ).start()
    except OSError:
        return None
