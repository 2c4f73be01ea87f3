"""A small built-in EPMD, for hosts where none is running.

Serves the requests of erl_dist_protocol.md, "EPMD Protocol", that nodes
use -- ALIVE2_REQ (answered with ALIVE2_X_RESP), PORT_PLEASE2_REQ and
NAMES_REQ -- so real ``erl`` nodes can register with it and look each other
up.  A registration lasts as long as its connection, as with the real EPMD.
DUMP_REQ, KILL_REQ and STOP_REQ are refused (the connection is closed).

One thread runs a :mod:`selectors` loop; it binds 127.0.0.1 by default, so
only local nodes can use it.  Start it with :func:`ensure_epmd` (only if
nothing answers on the port) or :class:`EPMDServer` directly.
"""

from __future__ import annotations

import secrets
import selectors
import socket
import threading
from dataclasses import dataclass, field

from beamlet.dist import epmd
from beamlet.dist.epmd import EPMDError, NodeInfo

__all__ = ["EPMDServer", "ensure_epmd"]

_MAX_REQUEST_BUFFER = 70_000  # one request is at most 2 + 65535 bytes


@dataclass
class _Conn:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    registered: str | None = None  # node name this connection keeps alive
    close_after_write: bool = False


class EPMDServer:
    """A built-in EPMD on ``host:port`` (``port=0`` picks a free one; see
    :attr:`port` after :meth:`start`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = epmd.DEFAULT_PORT) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeInfo] = {}
        self._creations: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> EPMDServer:
        """Bind and serve in a daemon thread. Raises OSError if the port is taken."""
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lst.bind((self.host, self._requested_port))
            lst.listen(64)
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
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)

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

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, mask in self._sel.select():
                    if key.data == "wake":
                        continue
                    if key.data is None:
                        self._accept()
                        continue
                    conn: _Conn = key.data
                    if mask & selectors.EVENT_READ:
                        self._read(conn)
                    if mask & selectors.EVENT_WRITE and conn.sock.fileno() >= 0:
                        self._write(conn)
        finally:
            for key in list(self._sel.get_map().values()):
                if isinstance(key.data, _Conn):
                    self._close(key.data)
            self._sel.close()
            if self._listener is not None:
                self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        self._sel.register(sock, selectors.EVENT_READ, _Conn(sock))

    def _close(self, conn: _Conn) -> None:
        if conn.sock.fileno() >= 0:
            self._sel.unregister(conn.sock)
            conn.sock.close()
        if conn.registered is not None:
            with self._lock:
                self._nodes.pop(conn.registered, None)
            conn.registered = None

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if conn.registered is not None:
            return  # a registered node's connection carries nothing else
        conn.inbuf += data
        if len(conn.inbuf) > _MAX_REQUEST_BUFFER:
            self._close(conn)
            return
        try:
            got = epmd.parse_request(bytes(conn.inbuf))
        except EPMDError:
            self._close(conn)
            return
        if got is None:
            return
        request, _ = got
        conn.inbuf.clear()
        self._handle(conn, request)

    def _handle(self, conn: _Conn, req: epmd.Request) -> None:
        if req.code == epmd.ALIVE2_REQ and req.info is not None:
            info = req.info
            with self._lock:
                taken = info.name in self._nodes
                if not taken:
                    self._nodes[info.name] = info
                    creation = self._new_creation(info.name)
            if taken:
                self._reply(conn, epmd.alive2_resp(1, 0), close=True)
            else:
                conn.registered = info.name
                self._reply(conn, epmd.alive2_resp(0, creation), close=False)
        elif req.code == epmd.PORT_PLEASE2_REQ:
            with self._lock:
                found = self._nodes.get(req.name or "")
            self._reply(conn, epmd.port2_resp(found), close=True)
        elif req.code == epmd.NAMES_REQ:
            with self._lock:
                nodes = [(n, i.port) for n, i in self._nodes.items()]
            self._reply(conn, epmd.names_resp(self.port, nodes), close=True)
        else:
            self._close(conn)

    def _new_creation(self, name: str) -> int:
        # A non-zero 32-bit creation, different from the previous one for the
        # same name (so pids of an old incarnation are told apart).
        while True:
            c = secrets.randbits(32)
            if c and c != self._creations.get(name):
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


def ensure_epmd(
    host: str = "127.0.0.1", port: int = epmd.DEFAULT_PORT, timeout: float = 1.0
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
    try:
        return EPMDServer(host, port).start()
    except OSError:
        return None
