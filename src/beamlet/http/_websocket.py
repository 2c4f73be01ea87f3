"""A WebSocket owned by a process: wsproto or websockets (sans-I/O) over the connection's socket.

After ``await req.upgrade()`` the connection process is the socket's handler:
:meth:`WebSocket.receive` returns the peer's messages (``str`` for text,
``bytes`` for binary, :class:`Close` at the end) and, in the same order as
they come, every other message sent to the process (as a Phoenix channel
process gets both its socket's frames and the rest of the system's messages).
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

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


# ---------------------------------------------------------------- codecs
#
# A codec turns the peer's bytes into whole messages and writes our frames.
# ``feed(data)`` takes bytes (None: the stream ended); ``next()`` gives the
# next whole message -- ``str`` or ``bytes`` --, a :class:`Close`, or None
# (more bytes needed). A Close is the peer's close (answered as it is taken:
# the messages before it come first, and the handler may still answer them),
# the error that fails the connection (1002 a protocol error, 1007 text that
# is not UTF-8, 1009 a message over the limit: our close frame goes at once),
# or 1006, the stream ended without one. Frames we owe the peer (pongs, close
# answers) collect until ``take()``. After a Close the codec is done.


class _Codec:
    """What both codecs share: the frames owed to the peer."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def take(self) -> bytes:
        out = b"".join(self.out)
        self.out.clear()
        return out


class _Wsproto(_Codec):
    """wsproto: pure Python, the default. Its events are pulled one at a time,
    so a close that came behind some messages is seen (and answered) only
    once they have been taken."""

    __slots__ = ("_events", "_failed", "_parts", "_size", "_ws", "limit")

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._ws = Connection(ConnectionType.SERVER)
        self._events: Any = iter(())
        self._parts: list[Any] = []
        self._size = 0
        self._failed: Close | None = None
        self.limit = limit

    def _send(self, ev: Any) -> None:
        try:
            self.out.append(self._ws.send(ev))
        except LocalProtocolError:  # closed already: nothing more to say
            pass

    def feed(self, data: bytes | None) -> None:
        self._ws.receive_data(data)
        self._events = self._ws.events()

    def next(self) -> Any:
        if self._failed is not None:
            return None
        try:
            for ev in self._events:
                t = type(ev)
                if t is TextMessage or t is BytesMessage:
                    self._parts.append(ev.data)
                    self._size += len(ev.data)
                    if self._size > self.limit:
                        return self._fail(1009, "message too big")
                    if ev.message_finished:
                        parts = self._parts
                        self._parts = []
                        self._size = 0
                        return "".join(parts) if t is TextMessage else b"".join(parts)
                elif t is Ping:
                    self._send(ev.response())
                elif t is CloseConnection:
                    if ev.code != 1006:
                        self._send(ev.response())
                    self._failed = Close(int(ev.code), ev.reason or "")
                    return self._failed
        except RemoteProtocolError as e:
            return self._fail(1002, str(e))
        return None

    def _fail(self, code: int, reason: str) -> Close:
        self._send(CloseConnection(code=code, reason=reason))
        self._failed = Close(code, reason)
        return self._failed

    def text(self, data: str) -> bytes:
        return self._ws.send(TextMessage(data=data))

    def binary(self, data: bytes) -> bytes:
        return self._ws.send(BytesMessage(data=data))

    def close(self, code: int, reason: str) -> bytes:
        self._send(CloseConnection(code=code, reason=reason))
        return self.take()


class _Websockets(_Codec):
    """websockets' sans-I/O protocol (its C extension unmasks frames): about a
    third of wsproto's cost per message; ``ws="websockets"``. It parses all it
    is fed at once and answers a close as it parses it, so its close answer is
    held back until the handler takes the Close (the messages before it come
    first), and our data frames are written here (``Frame.serialize``), not
    through its state, which is closing by then."""

    __slots__ = ("_events", "_held", "_parts", "_proto", "_text")

    def __init__(self, limit: int) -> None:
        from websockets.protocol import Protocol, Side, State

        super().__init__()
        self._proto = Protocol(Side.SERVER, state=State.OPEN, max_size=limit)
        self._parts: list[bytes] = []
        self._text = False
        self._events: collections.deque[Any] = collections.deque()
        self._held: list[bytes] = []  # our answer to the peer's close, not yet due

    def feed(self, data: bytes | None) -> None:
        proto = self._proto
        if proto.close_rcvd is not None or (self._events and type(self._events[-1]) is Close):
            return  # done: nothing after a close counts
        sent_before = proto.close_sent
        if data is None:
            proto.receive_eof()
        else:
            proto.receive_data(data)
        events = self._events
        for frame in proto.events_received():  # (frames only: a server past its handshake)
            frame = cast(Any, frame)
            op = frame.opcode
            if op is _TEXT or op is _BINARY:
                self._text = op is _TEXT
                self._parts = []
            elif op is not _CONT:
                if op is _CLOSE:
                    rcvd = proto.close_rcvd
                    code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (1005, "")
                    events.append(Close(code, reason))
                    break
                continue  # ping (the protocol answers it), pong
            if not frame.fin:
                self._parts.append(frame.data)
                continue
            whole = b"".join([*self._parts, frame.data]) if self._parts else frame.data
            self._parts = []
            if self._text:
                try:
                    events.append(whole.decode())
                except UnicodeDecodeError:
                    proto.fail(1007, "invalid UTF-8")
                    break
            else:
                events.append(bytes(whole))
        sent = proto.close_sent
        failed = sent is not None and sent_before is None and proto.close_rcvd is None
        for chunk in proto.data_to_send():
            if chunk:  # (b"": the protocol's end of stream; the handler's return ends it)
                if chunk[0] == 0x88 and not failed:
                    self._held.append(chunk)  # the close answer: due when taken
                else:
                    self.out.append(chunk)
        if failed:
            assert sent is not None
            events.append(Close(sent.code, sent.reason))
        elif data is None and not (events and type(events[-1]) is Close):
            events.append(Close(1006, ""))

    def next(self) -> Any:
        events = self._events
        if not events:
            return None
        ev = events.popleft()
        if type(ev) is Close:
            self.out += self._held
            self._held.clear()
            events.clear()
        return ev

    def _check_open(self) -> None:
        if self._proto.close_sent is not None and not self._held:
            raise ConnectionClosed("the WebSocket is closed")

    def text(self, data: str) -> bytes:
        self._check_open()
        return _ws_frame(_TEXT, data.encode())

    def binary(self, data: bytes) -> bytes:
        self._check_open()
        return _ws_frame(_BINARY, data)

    def close(self, code: int, reason: str) -> bytes:
        proto = self._proto
        if self._held:  # the peer closed: our answer is the close
            self.out += self._held
            self._held.clear()
        elif proto.close_sent is None:
            proto.send_close(code, reason)
            self.out += [c for c in proto.data_to_send() if c]
        return self.take()


def _ws_frame(opcode: Any, data: bytes) -> bytes:
    frame: bytes = _Frame(opcode, data).serialize(mask=False, extensions=())
    return frame


try:
    from websockets.frames import Frame as _Frame
    from websockets.frames import Opcode as _Opcode
except ImportError:  # the optional codec (the websockets extra)
    _TEXT = _BINARY = _CONT = _CLOSE = None
else:
    _TEXT, _BINARY, _CONT, _CLOSE = _Opcode.TEXT, _Opcode.BINARY, _Opcode.CONT, _Opcode.CLOSE

CODECS: dict[str, Any] = {"wsproto": _Wsproto, "websockets": _Websockets}


# ---------------------------------------------------------------- the WebSocket


class WebSocket:
    """The server side of a WebSocket; made by ``await req.upgrade()``.
    Use it from the process that upgraded (it owns the socket)."""

    __slots__ = ("_close_sent", "_closed", "_codec", "_conn", "_leftover", "subprotocol")

    def __init__(self, conn: _Conn, leftover: bytes, subprotocol: str | None) -> None:
        self._conn = conn
        self._codec: _Wsproto | _Websockets = CODECS[conn.cfg.ws](conn.cfg.max_body_size)
        self._closed = False  # the peer's close came, or the connection ended
        self._close_sent = False
        #: The subprotocol agreed on in the handshake (or None).
        self.subprotocol = subprotocol
        self._leftover = leftover  # bytes that came with the handshake: fed first

    @property
    def pid(self) -> Pid:
        """The process that owns this WebSocket: send it messages, they come
        out of :meth:`receive`."""
        return beamlet.self()

    @property
    def closed(self) -> bool:
        return self._closed or self._close_sent

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
        codec = self._codec
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ev = codec.next()
            if codec.out:  # pongs, close answers: in order, before what follows
                out = codec.take()
                if not self._closed:
                    await self._safe_write(out)
            if ev is not None:
                if type(ev) is Close:
                    self._close_sent = self._closed = True
                return ev
            if self._closed:
                raise ConnectionClosed("the WebSocket is closed")
            if self._leftover:
                code, value = 0, self._leftover
                self._leftover = b""
            else:
                code, value = await conn.next_message(deadline)
            if code == 0:  # data from the socket (b"": it closed)
                codec.feed(value or None)
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
        try:
            if isinstance(message, str):
                data = self._codec.text(message)
            elif isinstance(message, bytes | bytearray | memoryview):
                data = self._codec.binary(bytes(message))
            else:
                raise TypeError(f"a WebSocket sends str or bytes, not {type(message).__name__}")
        except LocalProtocolError:  # wsproto: the connection failed, our close is sent
            raise ConnectionClosed("the WebSocket is closed") from None
        try:
            await self._write(data)
        except OSError as e:
            self._closed = True
            raise ConnectionClosed(f"the connection failed: {e}") from e

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once); the connection ends when the handler returns."""
        if self._close_sent or self._closed:
            return
        self._close_sent = True
        try:
            await self._write(self._codec.close(code, reason))
        except Exception:  # the connection is gone: closed all the same
            self._closed = True
