"""HTTP/1.1 serving: a connection is a process (Bandit on Thousand Island).

Theory of operation
-------------------
:func:`serve` starts a ``beamlet.net`` listener (a supervision tree: acceptors,
the listening socket, the connections' supervisor; see net/listener.py) whose
handler runs one loop per connection in its own process, in
``handle_connection``. That process reads the socket in ``active="once"``
mode: each read is a ``Tcp`` message, so one ``receive`` waits for the peer's
bytes, for the idle deadline, and for the rest of the system's messages (the
drain order of a graceful stop; after a WebSocket upgrade, whatever other
processes send). Bytes go to a sans-I/O parser (h11, or httptools' llhttp);
each request becomes a :class:`Request`, the application runs in this same
process (or, with ``spawn_per_request``, in a process of its own to which the
socket is handed for the request), and its :class:`Response` is written with
``net.send``. Keep-alive and pipelining fall out of the loop: the parser keeps
what it was fed beyond a request for the next one.

Limits, with the answer each gets: a head over ``max_header_size`` bytes
(431), a body over ``max_body_size`` (413, at once when Content-Length says
so), a head not complete ``idle_timeout`` seconds after the wait for it began
(408: a slowloris client trickling a byte at a time is cut then), malformed
input (400); each then closes the connection. A handler that raises gets a
500 and a crash report in the ``beamlet.http`` log; a handler that never
returns holds its own process only (the schedulers preempt it), and a stop
kills it at its deadline.

Graceful stop (:meth:`Server.stop`): the acceptors and the listening socket
are stopped (new connections are refused), every connection is sent a drain
order: an idle one closes at once, one in a request finishes it (answering
with ``connection: close``), a WebSocket is closed with 1001; those still
running at the deadline are killed. Then the listener's tree is stopped.
"""

from __future__ import annotations

import importlib
import itertools
import json as _json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

from wsproto.utilities import generate_accept_token

import beamlet
from beamlet import ANY, Atom, Down, Pid
from beamlet._kernel.copying import register_immutable
from beamlet.http._parsers import END, EOF, Head, ParseError, Parser, make_parser, reason
from beamlet.http._websocket import WebSocket
from beamlet.net import _socket as _net
from beamlet.net import listener as _listener
from beamlet.net._socket import Socket, Tcp, TcpClosed, TcpError, TcpPassive

logger = logging.getLogger("beamlet.http")

_DRAIN = Atom("$http_drain")
_GO = Atom("$http_go")
_monotonic = time.monotonic

# next_message codes
_DATA, _DRAINING, _OTHER = 0, 1, 2


class BodyTooLarge(Exception):
    """The request's body is over ``max_body_size`` (answered with 413 if
    the handler lets it through)."""


class UpgradeError(Exception):
    """``req.upgrade()`` on a request that is not a WebSocket handshake."""


class _Drained(Exception):
    pass


# ---------------------------------------------------------------- responses


Body = bytes | bytearray | memoryview | str | AsyncIterable[Any] | Iterable[Any]
Headers = Mapping[str, str] | Iterable[tuple[str, str]] | None


class Response:
    """What a handler returns: ``Response(status, body, headers)``. ``body``
    is bytes (or str, sent as UTF-8), or an (async) iterable of bytes/str
    chunks, sent as they come (chunked transfer encoding on HTTP/1.1).
    Content-Length is added for a bytes body unless given."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int = 200, body: Body = b"", headers: Headers = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: Headers = None) -> Response:
        """A JSON body (``application/json``)."""
        hs = [("content-type", "application/json"), *_header_items(headers)]
        return cls(status, _json.dumps(value, separators=(",", ":")).encode(), hs)

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Headers = None) -> Response:
        """A text body (``text/plain; charset=utf-8``)."""
        hs = [("content-type", "text/plain; charset=utf-8"), *_header_items(headers)]
        return cls(status, text.encode(), hs)

    @classmethod
    def html(cls, text: str, status: int = 200, headers: Headers = None) -> Response:
        """An HTML page (``text/html; charset=utf-8``)."""
        hs = [("content-type", "text/html; charset=utf-8"), *_header_items(headers)]
        return cls(status, text.encode(), hs)

    def __repr__(self) -> str:
        return f"Response({self.status})"


def _header_items(headers: Headers) -> Iterable[tuple[str, str]]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return cast("Iterable[tuple[str, str]]", headers.items())
    return headers


def _encode_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in _header_items(headers):
        n = name.encode("latin-1") if isinstance(name, str) else bytes(name)
        v = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        out.append((n, v))
    return out


def _chunk_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode()
    return bytes(chunk)


# ---------------------------------------------------------------- requests

_BODY, _DONE = 0, 1

#: A WebSocket's socket is ``active=N`` with this N: at most this many reads
#: (of up to 64 KiB) wait in its process's mailbox before it stops reading and
#: TCP pushes back on the peer.
WS_ACTIVE = 16


@register_immutable  # handed to a request's process as it is (spawn_per_request)
class Request:
    """An HTTP request, as the handler sees it. The body is not read until
    asked for: ``await req.body()``, ``async for chunk in req.stream()``,
    ``await req.json()``."""

    __slots__ = (
        "_body",
        "_conn",
        "_continue_sent",
        "_head",
        "_headers",
        "_received",
        "_started",
        "_state",
        "_ws",
    )

    def __init__(self, conn: _Conn, head: Head) -> None:
        self._conn = conn
        self._head = head
        self._headers: dict[str, str] | None = None
        self._state = _BODY
        self._received = 0
        self._body: bytes | None = None
        self._started = False  # the response (or its head) is sent
        self._continue_sent = False
        self._ws: WebSocket | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target}>"

    @property
    def method(self) -> str:
        return self._head.method

    @property
    def target(self) -> str:
        """The request target as sent: path and query string."""
        return self._head.target

    @property
    def path(self) -> str:
        """The path, percent-decoded, without the query string."""
        path = self._head.target.partition("?")[0]
        return unquote(path) if "%" in path else path

    @property
    def query_string(self) -> str:
        return self._head.target.partition("?")[2]

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (the last of a repeated one)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    @property
    def http_version(self) -> str:
        return self._head.version

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as received, names in lower case."""
        return self._head.headers

    @property
    def headers(self) -> dict[str, str]:
        """The headers by lower-case name (repeated ones joined with ", ")."""
        hs = self._headers
        if hs is None:
            hs = {}
            for n, v in self._head.headers:
                name = n.decode("latin-1")
                value = v.decode("latin-1")
                hs[name] = f"{hs[name]}, {value}" if name in hs else value
            self._headers = hs
        return hs

    @property
    def client(self) -> tuple[str, int] | None:
        """The peer's (host, port)."""
        try:
            return _net.peername(self._conn.sock)
        except OSError:
            return None

    @property
    def keep_alive(self) -> bool:
        return self._head.keep_alive

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk, as it comes off the socket. Raises
        :class:`BodyTooLarge` past ``max_body_size``."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        conn = self._conn
        cfg = conn.cfg
        if self._state == _DONE:
            return
        if not self._continue_sent and not self._started:
            self._continue_sent = True
            if self.headers.get("expect", "").lower() == "100-continue":
                await _net.send(conn.sock, conn.parser.informational(100, []))
        limit = cfg.max_body_size
        while True:
            ev = await conn.event(_monotonic() + cfg.idle_timeout)
            if ev is END:
                self._state = _DONE
                return
            if type(ev) is bytes:
                self._received += len(ev)
                if self._received > limit:
                    raise BodyTooLarge(f"the request body is over {limit} bytes")
                yield ev
            elif ev is EOF:
                raise ParseError(400, "the peer closed in the middle of the body")

    async def body(self) -> bytes:
        """The whole body (read once, kept)."""
        if self._body is None:
            self._body = b"".join([chunk async for chunk in self.stream()])
        return self._body

    async def json(self) -> Any:
        """The body, parsed as JSON."""
        return _json.loads(await self.body())

    async def upgrade(self, subprotocol: str | None = None) -> WebSocket:
        """Answer a WebSocket handshake with 101: from now on this process owns
        the WebSocket (the connection ends when the handler returns). Raises
        :class:`UpgradeError` if the request is not a WebSocket handshake."""
        if self._started or self._ws is not None:
            raise UpgradeError("the response has started already")
        hs = self.headers
        key = hs.get("sec-websocket-key")
        if (
            key is None
            or "websocket" not in hs.get("upgrade", "").lower()
            or "upgrade" not in hs.get("connection", "").lower()
            or self.method != "GET"
        ):
            raise UpgradeError(f"not a WebSocket handshake: {self.method} {self.target}")
        await self.body()
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(key.encode())),
        ]
        if subprotocol is not None:
            headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        conn = self._conn
        out, leftover = conn.parser.switch(headers)
        self._started = True
        await _net.send(conn.sock, out)
        conn.active = WS_ACTIVE
        ws = self._ws = WebSocket(conn, leftover, subprotocol)
        return ws


# ---------------------------------------------------------------- the connection


Handler = Callable[[Request], Awaitable[Any]]


@register_immutable
class _Config:
    """A server's settings, shared by its connections (never copied)."""

    __slots__ = (
        "app",
        "idle_timeout",
        "max_body_size",
        "max_header_size",
        "name",
        "parser",
        "spawn_per_request",
        "ws",
    )

    def __init__(
        self,
        app: Handler,
        parser: str,
        max_header_size: int,
        max_body_size: int,
        idle_timeout: float,
        spawn_per_request: bool,
        name: str,
        ws: str = "wsproto",
    ) -> None:
        self.app = app
        self.parser = parser
        self.ws = ws
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.idle_timeout = idle_timeout
        self.spawn_per_request = spawn_per_request
        self.name = name

    def __deepcopy__(self, memo: Any) -> _Config:
        return self


@register_immutable  # shared with a request's process (spawn_per_request)
class _Conn:
    """One connection's state; used by one process at a time."""

    __slots__ = (
        "active",
        "armed",
        "cfg",
        "closed_in",
        "draining",
        "got_bytes",
        "idle",
        "keep",
        "ours",
        "parser",
        "sock",
    )

    def __init__(self, sock: Socket, cfg: _Config) -> None:
        self.sock = sock
        self.cfg = cfg
        self.parser: Parser = make_parser(cfg.parser, cfg.max_header_size)
        self.armed = False  # the socket is active and its Tcp messages not yet all taken
        #: What "active" is set to: "once" for HTTP (the socket may be handed
        #: to a request's process, with nothing in flight), WS_ACTIVE after an
        #: upgrade (fewer re-arms, and still flow control: TcpPassive re-arms).
        self.active: str | int = "once"
        self.closed_in = False  # the peer closed (or the socket failed)
        self.draining = False  # the server stops: finish the request in hand, then close
        self.idle = True  # between requests
        self.got_bytes = False  # bytes of the next request came
        self.keep = False
        self.ours = self._ours  # the HTTP loop's receive pattern (bound once)

    def __deepcopy__(self, memo: Any) -> _Conn:
        return self

    def _ours(self, msg: Any) -> bool:
        """The messages of the HTTP loop: its socket's, and a stop's drain."""
        t = type(msg)
        if t is Tcp or t is TcpPassive or t is TcpClosed or t is TcpError:
            return msg.socket is self.sock
        return t is Atom and msg == _DRAIN

    async def next_message(self, deadline: float | None, every: bool = True) -> tuple[int, Any]:
        """The next thing for this connection: (_DATA, bytes) from the socket
        (b"" once it is closed), (_DRAINING, None), or (_OTHER, message).
        ``every=False`` (HTTP): only the socket's messages and a drain; the
        others stay in the mailbox, in order, for the handler's own receive
        (or, after an upgrade, the WebSocket's). Raises TimeoutError at
        ``deadline``."""
        patterns = () if every else (self.ours,)
        sock = self.sock
        while True:
            if self.closed_in:
                return _DATA, b""
            if not self.armed:
                try:
                    _net.setopts(sock, active=self.active)
                except OSError:  # closed under us
                    self.closed_in = True
                    return _DATA, b""
                self.armed = True
            if deadline is None:
                msg = await beamlet.receive(*patterns)
            else:
                left = deadline - _monotonic()
                if left <= 0:
                    raise TimeoutError("idle timeout")
                msg = await beamlet.receive(*patterns, timeout=left)
            t = type(msg)
            if t is Tcp:
                if msg.socket is sock:
                    if self.active == "once":
                        self.armed = False
                    return _DATA, msg.data
            elif t is TcpPassive:
                if msg.socket is sock:
                    self.armed = False
                    continue
            elif t is TcpClosed or t is TcpError:
                if msg.socket is sock:
                    self.armed = False
                    self.closed_in = True
                    return _DATA, b""
            elif msg == _DRAIN:
                return _DRAINING, None
            return _OTHER, msg

    async def event(self, deadline: float) -> Any:
        """The parser's next event, reading as needed (HTTP mode)."""
        parser = self.parser
        while True:
            ev = parser.next_event()
            if ev is not None:
                return ev
            while True:
                code, value = await self.next_message(deadline, every=False)
                if code == _DATA:
                    break
                self.draining = True  # (_DRAINING: nothing else comes here)
                if self.idle and not self.got_bytes:
                    raise _Drained()
            if value:
                self.got_bytes = True
                parser.feed(value)
            else:
                parser.feed_eof()

    async def _error(self, status: int, message: str = "") -> None:
        """A bare error response; the connection closes after it."""
        body = (message or reason(status).decode()).encode() + b"\n"
        data = (
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (
                status,
                reason(status),
                len(body),
                body,
            )
        )
        try:
            await _net.send(self.sock, data)
        except OSError:
            pass

    async def run(self) -> None:
        """Serve requests until the connection is to close."""
        cfg = self.cfg
        while not self.draining:
            self.idle = True
            self.got_bytes = False
            try:
                ev = await self.event(_monotonic() + cfg.idle_timeout)
            except TimeoutError:
                if self.got_bytes:
                    await self._error(408, "request timeout")
                return
            except ParseError as e:
                await self._error(e.status, str(e))
                return
            except _Drained:
                return
            if type(ev) is not Head:
                return  # EOF
            self.idle = False
            head: Head = ev
            size = len(head.target) + sum([len(n) + len(v) + 4 for n, v in head.headers])
            if size > cfg.max_header_size:  # (the parsers bound an incomplete head only)
                await self._error(431, "request header fields too large")
                return
            if head.content_length is not None and head.content_length > cfg.max_body_size:
                await self._error(413, f"the body is over {cfg.max_body_size} bytes")
                return
            req = Request(self, head)
            if not head.chunked and not head.content_length:
                # No body (RFC 9112 6.3): its end is parsed already, and the
                # handler's answer need not drain it.
                ev = self.parser.next_event()
                if ev is END:
                    req._state = _DONE
                elif ev is not None:
                    await self._error(400, "a body where none was declared")
                    return
            if cfg.spawn_per_request:
                keep = await self._spawn(req)
            else:
                keep = await self.handle(req)
            if not keep:
                return

    async def _spawn(self, req: Request) -> bool:
        """Run the request in a process of its own, which holds the socket
        meanwhile (Cowboy's isolation of each request)."""
        me = beamlet.self()
        pid, ref = beamlet.spawn_monitor(_request_process, self, req, me)
        self.keep = False
        _net.controlling_process(self.sock, pid)
        beamlet.send(pid, _GO)
        down = await beamlet.receive(Down(ref, ANY, ANY))
        return down.reason == "normal" and self.keep and not self.sock.closed

    async def handle(self, req: Request) -> bool:
        """Run the application on ``req`` and answer; True: keep the connection."""
        try:
            resp = await self.cfg.app(req)
            if req._ws is not None:
                await req._ws.close()
                return False
            if not isinstance(resp, Response):
                raise TypeError(f"the handler returned {resp!r}, not an http.Response")
            return await self._respond(req, resp)
        except BodyTooLarge as e:
            if not req._started:
                await self._error(413, str(e))
            return False
        except ParseError as e:
            if not req._started:
                await self._error(e.status, str(e))
            return False
        except (ConnectionError, _Drained):
            return False
        except OSError as e:
            if e.errno is not None:  # the socket failed: nobody to answer
                return False
            self._report(req, e)
        except Exception as e:
            self._report(req, e)
        if req._ws is not None:
            await req._ws.close(1011, "internal error")
            return False
        if req._started:
            return False  # a response broken off: the peer sees the connection close
        try:
            return await self._respond(req, Response(500, b"Internal Server Error\n"))
        except Exception:
            return False

    def _report(self, req: Request, e: BaseException) -> None:
        logger.error(
            "beamlet.http %r: handler %s crashed in %r on %s %s: %r",
            self.cfg.name,
            getattr(self.cfg.app, "__qualname__", self.cfg.app),
            beamlet.self(),
            req.method,
            req.target,
            e,
            exc_info=e,
        )

    async def _respond(self, req: Request, resp: Response) -> bool:
        head = req._head
        parser = self.parser
        sock = self.sock
        keep = head.keep_alive and not self.draining and not head.upgrade
        headers = _encode_headers(resp.headers)
        body = resp.body
        if isinstance(body, str):
            body = body.encode()
        if isinstance(body, bytes | bytearray | memoryview):
            data = parser.response(head, resp.status, headers, bytes(body), keep)
            req._started = True
            await _net.send(sock, data)
        else:
            start = parser.response(head, resp.status, headers, None, keep)
            req._started = True
            await _net.send(sock, start)
            if head.method != "HEAD":
                if isinstance(body, AsyncIterable):
                    async for chunk in body:
                        await _net.send(sock, parser.chunk(_chunk_bytes(chunk)))
                else:
                    for chunk in body:
                        await _net.send(sock, parser.chunk(_chunk_bytes(chunk)))
            await _net.send(sock, parser.end())
        if not keep:
            return False
        if req._state != _DONE:
            try:
                async for _ in req.stream():  # what the handler left unread
                    pass
            except (BodyTooLarge, ParseError, TimeoutError):
                return False
        return parser.next_cycle()


async def _request_process(conn: _Conn, req: Request, parent: Pid) -> None:
    await beamlet.receive(_GO)
    keep = await conn.handle(req)
    sock = conn.sock
    if keep and not sock.closed:
        conn.keep = True
        _net.controlling_process(sock, parent)


class _HttpHandler(_listener.Handler):
    """The listener's handler: the whole connection runs in handle_connection."""

    def __init__(self, cfg: _Config) -> None:
        self.cfg = cfg

    async def handle_connection(self, sock: Socket) -> Any:
        conn = _Conn(sock, self.cfg)
        try:
            await conn.run()
        except (ConnectionError, TimeoutError):
            pass
        except OSError as e:
            if e.errno is None:
                raise
        return _listener.CLOSE


# ---------------------------------------------------------------- the server


@register_immutable
class Server:
    """A running server (from :func:`serve`): ``port``, ``name`` (its
    listener's registered name), ``pid`` (the listener's supervisor, linked
    to the process that called ``serve``)."""

    __slots__ = ("name", "pid", "port")

    def __init__(self, name: str, pid: Pid, port: int) -> None:
        self.name = name
        self.pid = pid
        self.port = port

    def __repr__(self) -> str:
        return f"<http.Server {self.name!r} port={self.port} {self.pid!r}>"

    def __deepcopy__(self, memo: Any) -> Server:
        return self

    async def connections(self) -> list[Pid]:
        """The pids of the connections' processes."""
        info = await _listener.listener_info(self.name)
        pids: list[Pid] = info.get("connection_pids", [])
        return pids

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully: refuse new connections at once, let the requests
        in progress finish for up to ``timeout`` seconds (then kill what is
        left), close idle connections and WebSockets (1001); returns once
        everything is gone."""
        from beamlet.otp.errors import CallError
        from beamlet.otp.supervisor import terminate_child

        try:
            await terminate_child(self.pid, "acceptors")
            await terminate_child(self.pid, "listen_socket")
            pids = await self.connections()
        except (KeyError, CallError):
            return
        refs = [(beamlet.monitor(pid), pid) for pid in pids]
        for pid in pids:
            beamlet.send(pid, _DRAIN)
        deadline = _monotonic() + timeout
        left = []
        for ref, pid in refs:
            try:
                await beamlet.receive(
                    Down(ref, ANY, ANY), timeout=max(0.0, deadline - _monotonic())
                )
            except TimeoutError:
                left.append((ref, pid))
        for _ref, pid in left:
            logger.warning(
                "beamlet.http %r: connection %r still busy at the stop's deadline: killed",
                self.name,
                pid,
            )
            beamlet.exit(pid, "kill")
        for ref, _ in left:
            await beamlet.receive(Down(ref, ANY, ANY))
        try:
            await _listener.stop_listener(self.name)
        except KeyError:
            pass


_names = itertools.count(1)


def _option(label: str, value: str, default: str, extra: str, module: str) -> None:
    """``label`` is ``default`` or ``extra``, whose module (an extra) must import."""
    if value not in (default, extra):
        raise ValueError(f"{label} must be {default!r} or {extra!r}, got {value!r}")
    if value == extra:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ImportError(
                f"{label}={extra!r} needs {extra}: pip install 'beamlet[{extra}]'"
            ) from None


async def serve(
    app: Handler,
    port: int = 8080,
    host: str = "127.0.0.1",
    *,
    parser: str = "h11",
    ws: str = "wsproto",
    max_connections: int | None = 16384,
    num_acceptors: int = 10,
    max_header_size: int = 16 * 1024,
    max_body_size: int = 8 * 1024 * 1024,
    idle_timeout: float = 60.0,
    spawn_per_request: bool = False,
    name: str | None = None,
    backlog: int = 1024,
) -> Server:
    """Serve ``app`` (``async def app(req) -> Response``) on ``host:port``;
    returns once listening. The server is a supervision tree linked to the
    caller (a ``beamlet.net`` listener registered as ``name``); each
    connection is a process that serves its keep-alive requests in turn.

    ``parser``: ``"h11"`` (pure Python) or ``"httptools"`` (llhttp; the
    ``httptools`` extra). ``ws``: the WebSocket codec, ``"wsproto"`` (pure
    Python) or ``"websockets"`` (the ``websockets`` extra; a C extension
    unmasks frames: a third of wsproto's cost). ``max_header_size``: bytes of a request's head
    (431 past it); ``max_body_size``: bytes of a body (413);
    ``idle_timeout``: seconds for a request's head to arrive, and between
    two reads of its body (408, or a silent close between requests).
    ``spawn_per_request``: run each request in a process of its own.
    ``port=0`` picks a free port (``server.port``)."""
    _option("parser", parser, "h11", "httptools", "httptools")
    _option("ws", ws, "wsproto", "websockets", "websockets.protocol")
    if not callable(app):
        raise TypeError(f"app must be an async function of a Request, got {app!r}")
    for label, value in (("max_header_size", max_header_size), ("max_body_size", max_body_size)):
        if type(value) is not int or value < 1:
            raise ValueError(f"{label} must be an int >= 1, got {value!r}")
    if not (isinstance(idle_timeout, int | float) and idle_timeout > 0):
        raise ValueError(f"idle_timeout must be seconds > 0, got {idle_timeout!r}")
    if name is None:
        name = f"beamlet.http.{next(_names)}"
    cfg = _Config(
        app,
        parser,
        max_header_size,
        max_body_size,
        float(idle_timeout),
        spawn_per_request,
        name,
        ws,
    )
    pid = await _listener.start_listener(
        name,
        port,
        _HttpHandler,
        (cfg,),
        num_acceptors=num_acceptors,
        max_connections=max_connections,
        host=host,
        backlog=backlog,
    )
    return Server(name, pid, await _listener.listener_port(name))


async def stop(server: Server, timeout: float = 10.0) -> None:
    """``server.stop(timeout)``."""
    await server.stop(timeout)
