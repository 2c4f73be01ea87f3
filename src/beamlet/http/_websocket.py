"""A WebSocket owned by a process: wsproto (sans-I/O) over the connection's socket.

After ``await req.upgrade()`` the connection process is the socket's handler:
:meth:`WebSocket.receive` returns the peer's messages (``str`` for text,
``bytes`` for binary, :class:`Close` at the end) and, in the same order as
they come, every other message sent to the process (as a Phoenix channel
process gets both its socket's frames and the rest of the system's messages).
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import RemoteProtocolError

import beamlet
from beamlet._kernel.copying import register_immutable
from beamlet.net import _socket as _net
from beamlet.terms import Pid

if TYPE_CHECKING:
    from beamlet.http._server import _Conn


@register_immutable
class Close(NamedTuple):
    """The WebSocket closed: the peer's close frame (its code and reason),
    1006 if the connection ended without one, 1001 when the server shuts down."""

    code: int
    reason: str = ""


class ConnectionClosed(ConnectionError):
    """The WebSocket is closed: nothing more to receive or send."""


class WebSocket:
    """The server side of a WebSocket; made by ``await req.upgrade()``.
    Use it from the process that upgraded (it owns the socket)."""

    __slots__ = (
        "_close_sent",
        "_closed",
        "_conn",
        "_events",
        "_parts",
        "_size",
        "_ws",
        "subprotocol",
    )

    def __init__(self, conn: _Conn, leftover: bytes, subprotocol: str | None) -> None:
        self._conn = conn
        self._ws = Connection(ConnectionType.SERVER)
        self._events: collections.deque[Any] = collections.deque()
        self._parts: list[Any] = []
        self._size = 0
        self._closed = False  # the peer's close came, or the connection ended
        self._close_sent = False
        #: The subprotocol agreed on in the handshake (or None).
        self.subprotocol = subprotocol
        if leftover:
            self._feed(leftover)

    @property
    def pid(self) -> Pid:
        """The process that owns this WebSocket: send it messages, they come
        out of :meth:`receive`."""
        return beamlet.self()

    @property
    def closed(self) -> bool:
        return self._closed or self._close_sent

    def _feed(self, data: bytes | None) -> None:
        try:
            self._ws.receive_data(data)
            self._events.extend(self._ws.events())
        except RemoteProtocolError as e:
            self._events.append(CloseConnection(code=1002, reason=str(e)))

    async def _write(self, data: bytes) -> None:
        if data:
            await _net.send(self._conn.sock, data)

    async def receive(self, timeout: float | None = None) -> Any:
        """The next message: ``str`` (a text message), ``bytes`` (binary), a
        :class:`Close` (then the WebSocket is closed: its close frame was
        answered), or any other message the process was sent. Pings are
        answered here. Raises ``TimeoutError`` after ``timeout`` seconds,
        :class:`ConnectionClosed` once closed."""
        conn = self._conn
        deadline = None if timeout is None else time.monotonic() + timeout
        limit = conn.cfg.max_body_size
        while True:
            events = self._events
            while events:
                ev = events.popleft()
                t = type(ev)
                if t is TextMessage or t is BytesMessage:
                    self._parts.append(ev.data)
                    self._size += len(ev.data)
                    if self._size > limit:
                        await self.close(1009, "message too big")
                        self._closed = True
                        return Close(1009, "message too big")
                    if ev.message_finished:
                        parts = self._parts
                        self._parts = []
                        self._size = 0
                        return "".join(parts) if t is TextMessage else b"".join(parts)
                elif t is Ping:
                    if not self._close_sent:
                        await self._safe_write(self._ws.send(ev.response()))
                elif t is CloseConnection:
                    if not self._close_sent and ev.code != 1006:
                        self._close_sent = True
                        await self._safe_write(self._ws.send(ev.response()))
                    self._close_sent = True
                    self._closed = True
                    return Close(int(ev.code), ev.reason or "")
            if conn.saved:
                return conn.saved.popleft()
            if self._closed:
                raise ConnectionClosed("the WebSocket is closed")
            code, value = await conn.next_message(deadline)
            if code == 0:  # data from the socket (b"": it closed)
                self._feed(value or None)
            elif code == 1:  # the server drains: going away
                conn.draining = True
                await self.close(1001, "server shutting down")
                self._closed = True
                return Close(1001, "server shutting down")
            else:
                return value

    async def _safe_write(self, data: bytes) -> None:
        try:
            await self._write(data)
        except OSError:
            self._closed = True

    async def send(self, message: str | bytes | bytearray | memoryview | Close) -> None:
        """Send a text (``str``) or binary (``bytes``) message; a
        :class:`Close` closes (as :meth:`close`). Raises
        :class:`ConnectionClosed` once a close was sent or received."""
        if isinstance(message, Close):
            await self.close(message.code, message.reason)
            return
        if self._close_sent or self._closed:
            raise ConnectionClosed("the WebSocket is closed")
        ev: Message[Any]
        if isinstance(message, str):
            ev = TextMessage(data=message)
        elif isinstance(message, bytes | bytearray | memoryview):
            ev = BytesMessage(data=bytes(message))
        else:
            raise TypeError(f"a WebSocket sends str or bytes, not {type(message).__name__}")
        try:
            await self._write(self._ws.send(ev))
        except OSError as e:
            self._closed = True
            raise ConnectionClosed(f"the connection failed: {e}") from e

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once); the connection ends when the handler returns."""
        if self._close_sent or self._closed:
            return
        self._close_sent = True
        try:
            await self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
        except Exception:  # the connection is gone: closed all the same
            self._closed = True
