"""Talking to EPMD over plain blocking sockets (with timeouts).

The protocol itself is in :mod:`beamlet.distribution.epmd`; this module only moves
its bytes.  The EPMD port is ``ERL_EPMD_PORT`` from the environment when set
(as for ``erl``), else 4369.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from beamlet.distribution import epmd
from beamlet.distribution.epmd import EPMDError, NodeInfo

__all__ = ["Registration", "default_port", "names", "port_please", "register"]


def default_port() -> int:
    """``ERL_EPMD_PORT`` if set, else 4369 (as ``erl`` and ``epmd`` do)."""
    value = os.environ.get("ERL_EPMD_PORT")
    return int(value) if value else epmd.DEFAULT_PORT


def _connect(host: str, port: int | None, timeout: float) -> socket.socket:
    return socket.create_connection((host, default_port() if port is None else port), timeout)


def _read_until_close(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class Registration:
    """A node's registration with EPMD: it lasts while the connection stays
    open.  :meth:`close` (or leaving the ``with`` block) unregisters."""

    def __init__(self, sock: socket.socket, info: NodeInfo, creation: int) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self.info = info
        self.creation = creation

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    def close(self) -> None:
        with self._lock:
            # shutdown first: close() alone does not wake a thread in wait_closed()
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()

    def wait_closed(self) -> None:
        """Block until the registration ends: EPMD closed the connection (it
        stopped, or died), or :meth:`close` was called."""
        try:
            while self._sock.recv(64):
                pass  # EPMD sends nothing more; epmd would close on anything sent
        except OSError:
            pass

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def register(
    name: str,
    port: int,
    *,
    hidden: bool = False,
    host: str = "127.0.0.1",
    epmd_port: int | None = None,
    timeout: float = 5.0,
) -> Registration:
    """Register node ``name`` (the part before ``@``) listening on ``port``.

    Returns the :class:`Registration` holding the connection and the
    creation EPMD assigned.  Raises :class:`EPMDError` if EPMD refuses (the
    name is taken) and ``OSError`` if EPMD cannot be reached.
    """
    info = NodeInfo(name, port, epmd.NODE_HIDDEN if hidden else epmd.NODE_NORMAL)
    sock = _connect(host, epmd_port, timeout)
    try:
        sock.sendall(epmd.alive2_req(info))
        buf = b""
        while (creation := epmd.parse_alive2_resp(buf)) is None:
            chunk = sock.recv(64)
            if not chunk:
                raise EPMDError("EPMD closed the connection before answering ALIVE2_REQ")
            buf += chunk
        sock.settimeout(None)
        return Registration(sock, info, creation)
    except BaseException:
        sock.close()
        raise


def port_please(
    name: str,
    host: str = "127.0.0.1",
    *,
    epmd_port: int | None = None,
    timeout: float = 5.0,
) -> NodeInfo | None:
    """Where node ``name`` (the part before ``@``) on ``host`` listens, or
    None if EPMD does not know it."""
    with _connect(host, epmd_port, timeout) as sock:
        sock.sendall(epmd.port_please2_req(name))
        data = _read_until_close(sock)
    got = epmd.parse_port2_resp(data)
    if got is None:
        raise EPMDError("truncated PORT2_RESP")
    return got[0]


def names(
    host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = 5.0
) -> list[tuple[str, int]]:
    """The ``(name, port)`` pairs registered with EPMD on ``host``."""
    with _connect(host, epmd_port, timeout) as sock:
        sock.sendall(epmd.names_req())
        data = _read_until_close(sock)
    return epmd.parse_names_resp(data)[1]
