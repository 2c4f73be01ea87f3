"""ASGI 3 applications (Starlette, FastAPI) served by beamlet.http: a compatibility layer.

Theory of operation
-------------------
:func:`serve_asgi` is :func:`beamlet.http.serve` with a beamlet handler that
hosts the ASGI application. Each connection is still a process that parses its
requests and writes its responses. Per request it builds the ASGI ``scope``,
reads the whole body (bounded by ``max_body_size``: 413 past it, as
``serve``) and starts the application as a task on the node's asyncio loop
(``beamlet.aio``), with an :class:`_Exchange` as its ``receive``/``send``. What
the application sends comes back to the process as messages ``(tag, kind, a,
b)`` (``tag`` a fresh ref, so a selective receive takes only this exchange's);
the process answers -- "written", "the client is gone" -- by calling the
exchange's methods on the loop with ``call_soon_threadsafe``. The process waits
holding no scheduler.

http: ``http.response.start`` is held until the first body message, which goes
with it; a response in one body message is an ordinary ``Response`` (with its
Content-Length); otherwise the process writes the chunks as they come (a
:class:`_Stream` body, chunked), acknowledging each once written, and the
application's ``send`` waits for that acknowledgement: one chunk in flight. A
watcher process (:func:`_guard`) monitors the connection process while a
response streams: if it ends first, the application's next ``send`` raises
:class:`ClientDisconnected` and its ``receive`` returns ``http.disconnect`` (the
task is cancelled if the process was killed). A process killed while the
application has not answered (a stop's deadline) cancels the task in its
``finally``.

websocket: the process waits for ``websocket.accept`` (then ``req.upgrade``)
or a close (403); from then on it receives from the WebSocket -- frames, and
the exchange's messages, in one mailbox -- forwards frames to the
application's queue (at most ``WS_WINDOW`` not yet taken: past that it takes
only the application's messages, and TCP holds the peer back), writes what the
application sends and acknowledges it, and ends with the session.

The lifespan protocol runs on the loop as one task for the server's life:
``serve_asgi`` waits for ``lifespan.startup.complete`` before it listens (a
``startup.failed``, or a crash, raises) and ``AsgiServer.stop`` sends
``lifespan.shutdown`` once the connections are gone. ``lifespan="auto"`` (as
uvicorn's) takes an application that raises before it says anything to the
lifespan scope as one without lifespan support; one that returns without a
word has none either.

Limits: the application's code runs on the asyncio loop, one thread, outside
beamlet's preemption: a runaway there stalls the loop, so every request of
every ASGI server of the node (and every other ``aio.run``). A request body is
read whole before the application runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import beamlet
from beamlet import ANY, Down, aio
from beamlet._kernel.copying import register_immutable
from beamlet.http._server import Request, Response, Server, serve
from beamlet.http._websocket import Close
from beamlet.net import _socket as _net
from beamlet.terms import Pid

logger = logging.getLogger("beamlet.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: Loosely typed, so that an app declared with ``scope: dict[str, Any]`` fits.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}


class LifespanError(RuntimeError):
    """The ASGI application's lifespan startup failed (``serve_asgi`` raises it)."""


# ---------------------------------------------------------------- the loop's side


class ClientDisconnected(OSError):
    """Raised by an ASGI ``send`` once the client is gone (ASGI spec 2.4: "a
    server-specific subclass of OSError")."""


def _post(pid: Pid, msg: Any) -> None:
    """From the loop: a message to the connection process."""
    try:
        aio.send(pid, msg)
    except RuntimeError:
        pass  # the runtime is gone: nobody to tell


class _Exchange:
    """One scope's ``receive`` and ``send``, on the loop's thread; its
    connection process is told what the application says with messages
    ``(tag, kind, a, b)`` and answers by calling methods here through
    ``call_soon_threadsafe``."""

    __slots__ = (
        "acked",
        "body",
        "closed",
        "complete",
        "gone",
        "headers",
        "inbox",
        "pid",
        "request_sent",
        "scope_type",
        "started",
        "status",
        "tag",
        "task",
    )

    def __init__(self, pid: Pid, tag: Any, scope_type: str, body: bytes = b"") -> None:
        self.pid = pid
        self.tag = tag
        self.scope_type = scope_type
        self.body = body
        self.request_sent = False
        self.status: int | None = None  # http.response.start seen
        self.headers: Any = None
        self.started = False  # the process has the response's head
        self.complete = False  # the response (http) / the session (websocket) is over
        self.closed = False  # websocket: a close was sent
        self.gone = False  # the client, or the connection process, is gone
        self.acked: asyncio.Future[None] | None = None  # the process wrote what we sent
        self.inbox: asyncio.Queue[Message] | None = None  # websocket: the peer's messages
        self.task: asyncio.Task[None] | None = None

    # -- called through call_soon_threadsafe by the process

    def start(self, app: ASGIApp, scope: Scope) -> None:
        if self.gone:
            return
        self.task = asyncio.get_running_loop().create_task(self._run(app, scope))

    def ack(self, error: bool) -> None:
        """The process wrote what the application sent last (or failed to)."""
        fut, self.acked = self.acked, None
        if fut is not None and not fut.done():
            if error:
                fut.set_exception(ClientDisconnected("the client is gone"))
            else:
                fut.set_result(None)

    def push(self, message: Message) -> None:
        """websocket: a message from the peer for ``receive``."""
        if self.inbox is not None:
            self.inbox.put_nowait(message)

    def leave(self, cancel: bool) -> None:
        """The client or the connection process is gone: ``send`` raises,
        ``receive`` says disconnect; ``cancel``: the application's task too."""
        if not self.gone:
            self.gone = True
            self.ack(True)
            if self.inbox is not None:
                self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
        if cancel and self.task is not None and not self.task.done():
            self.task.cancel()

    # -- the application's side

    async def _run(self, app: ASGIApp, scope: Scope) -> None:
        error: BaseException | None = None
        try:
            await app(scope, self.receive, self.send)
        except BaseException as e:
            error = e
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self._finished(scope, error)

    def _finished(self, scope: Scope, error: BaseException | None) -> None:
        if self.scope_type == "websocket":
            _post(self.pid, (self.tag, "done", error is not None, None))
            if error is not None and not isinstance(error, asyncio.CancelledError):
                if not (self.gone and isinstance(error, ClientDisconnected)):
                    _log_app_error(scope, error)
            return
        if self.complete:
            if error is not None and not isinstance(error, asyncio.CancelledError | OSError):
                # The response is complete: the client has it; the crash is reported.
                _log_app_error(scope, error, after_response=True)
            return
        if error is None:
            what = "starting" if self.status is None else "completing"
            error = RuntimeError(f"ASGI: the application returned without {what} a response")
        self.complete = True
        if not isinstance(error, asyncio.CancelledError):
            _log_app_error(scope, error)  # here, with the application's own traceback
        # The process answers 500 (or cuts a started response off); only
        # plain data crosses: an exception may not survive a copy.
        _post(self.pid, (self.tag, "failed", repr(error), self.started))

    async def receive(self) -> Message:
        if self.scope_type == "websocket":
            if not self.request_sent:
                self.request_sent = True
                return {"type": "websocket.connect"}
            assert self.inbox is not None
            msg = await self.inbox.get()
            if msg["type"] == "websocket.receive":
                _post(self.pid, (self.tag, "took", None, None))
            return msg
        if not self.request_sent:
            self.request_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        # The client is there until the response is complete, or it goes.
        while not (self.complete or self.gone):
            fut = self.acked
            if fut is None:
                fut = self.acked = asyncio.get_running_loop().create_future()
            try:
                await asyncio.shield(fut)
            except ClientDisconnected:
                break
        return {"type": "http.disconnect"}

    async def _wait_written(self) -> None:
        fut = self.acked
        if fut is None:
            fut = self.acked = asyncio.get_running_loop().create_future()
        await fut

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.scope_type == "websocket":
            await self._ws_send(kind, message)
            return
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("ASGI: http.response.start sent twice")
            self.status = int(message["status"])
            self.headers = message.get("headers", ())
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError("ASGI: http.response.body sent before http.response.start")
            if self.complete:
                raise RuntimeError("ASGI: http.response.body sent after the response completed")
            if self.gone:
                raise ClientDisconnected("the client is gone")
            chunk = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if not self.started:
                self.started = True
                _post(self.pid, (self.tag, "response", (self.status, self.headers, chunk), more))
            elif chunk or not more:
                _post(self.pid, (self.tag, "body", chunk, more))
            else:
                return  # an empty chunk with more to come: nothing to write
            if not more:
                self.complete = True
                self.ack(False)  # wakes a receive() waiting for the end
                return
            await self._wait_written()  # flow control: one chunk in flight
        else:
            raise RuntimeError(f"ASGI: unexpected message {kind!r} on an http scope")

    async def _ws_send(self, kind: str, message: Message) -> None:
        if kind == "websocket.accept":
            if self.started or self.closed:
                raise RuntimeError("ASGI: websocket.accept sent twice or after a close")
            if self.gone:
                raise ClientDisconnected("the client is gone")
            self.started = True
            _post(self.pid, (self.tag, "accept", message.get("subprotocol"), None))
        elif kind == "websocket.send":
            if not self.started:
                raise RuntimeError("ASGI: websocket.send before websocket.accept")
            if self.closed or self.gone:
                raise ClientDisconnected("the WebSocket is closed")
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
            if not isinstance(data, str | bytes | bytearray):
                raise TypeError("ASGI: websocket.send needs 'bytes' or 'text'")
            _post(self.pid, (self.tag, "send", data, None))
            await self._wait_written()
        elif kind == "websocket.close":
            if self.closed or self.gone:
                return
            self.closed = True
            code = int(message.get("code", 1000))
            _post(self.pid, (self.tag, "close", code, str(message.get("reason") or "")))
        else:
            raise RuntimeError(f"ASGI: unexpected message {kind!r} on a websocket scope")


def _log_app_error(scope: Scope, error: BaseException, after_response: bool = False) -> None:
    when = " after completing its response to" if after_response else " on"
    logger.error(
        "beamlet.http: the ASGI application raised%s %s %s",
        when,
        scope.get("method", "WEBSOCKET"),
        scope["path"],
        exc_info=error,
    )


async def _guard(conn: Pid, ev: asyncio.AbstractEventLoop, ex: _Exchange) -> None:
    """A streamed response's watcher: when its connection process ends
    before the response does, the application learns the client is gone (and
    its task is cancelled if the process was killed)."""
    ref = beamlet.monitor(conn)
    msg = await beamlet.receive(ANY)
    if type(msg) is Down and msg.ref == ref:
        _call(ev, ex.leave, msg.reason != "normal")


def _call(ev: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        ev.call_soon_threadsafe(fn, *args, context=aio._clean())
    except RuntimeError:
        pass  # the loop is closed: its tasks went with it


@register_immutable
class _Stream:
    """A streamed response's body, in the connection process: the chunks the
    application sends, each acknowledged once written (one in flight)."""

    __slots__ = ("done", "ev", "ex", "first", "guard", "tag")

    def __init__(
        self, ev: asyncio.AbstractEventLoop, ex: _Exchange, tag: Any, first: bytes, guard: Pid
    ) -> None:
        self.ev = ev
        self.ex = ex
        self.tag = tag
        self.first: bytes | None = first
        self.done = False
        self.guard = guard

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> bytes:
        if self.first is not None:
            chunk, self.first = self.first, None
            return chunk
        if self.done:
            raise StopAsyncIteration
        _call(self.ev, self.ex.ack, False)  # the previous chunk is written
        _, kind, a, b = await beamlet.receive((self.tag, ANY, ANY, ANY))
        if kind == "body":
            if not b:
                self.done = True
                beamlet.send(self.guard, "done")
            return a  # type: ignore[no-any-return]
        # "failed" in the middle: the response is broken off (the peer sees
        # the connection close, as uvicorn's)
        beamlet.send(self.guard, "done")
        raise _Broken(a)


class _Broken(ConnectionError):
    """The application failed in the middle of a streamed response (already
    reported on the loop): the connection is cut, as a failed write's would be."""


# ---------------------------------------------------------------- the handler, in the process


@register_immutable  # shared by the connections' processes, never copied
class _AsgiHandler:
    """The beamlet handler that hosts the ASGI application."""

    __slots__ = ("app", "root_path", "state")

    def __init__(self, app: ASGIApp, root_path: str, state: dict[str, Any]) -> None:
        self.app = app
        self.root_path = root_path
        self.state = state

    def __repr__(self) -> str:
        return f"serve_asgi({getattr(self.app, '__qualname__', type(self.app).__qualname__)})"

    def __deepcopy__(self, memo: Any) -> _AsgiHandler:
        return self

    def _scope(self, req: Request, kind: str) -> dict[str, Any]:
        raw_path, _, query = req.target.partition("?")
        try:
            server: tuple[str, int] | None = _net.sockname(req._conn.sock)
        except OSError:
            server = None
        scope: dict[str, Any] = {
            "type": kind,
            "asgi": _ASGI,
            "http_version": req.http_version,
            "scheme": "http" if kind == "http" else "ws",
            "path": req.path,
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": self.root_path,
            "headers": req.raw_headers,
            "client": req.client,
            "server": server,
            "state": self.state.copy(),
        }
        if kind == "http":
            scope["method"] = req.method
        else:
            offered = req.headers.get("sec-websocket-protocol", "")
            scope["subprotocols"] = [p.strip() for p in offered.split(",") if p.strip()]
        return scope

    async def __call__(self, req: Request) -> Response:
        hs = req.headers
        if "websocket" in hs.get("upgrade", "").lower() and req.method == "GET":
            return await self._websocket(req)
        body = await req.body()
        tag = beamlet.make_ref()
        ev = aio.loop()
        ex = _Exchange(beamlet.self(), tag, "http", body)
        ev.call_soon_threadsafe(ex.start, self.app, self._scope(req, "http"), context=aio._clean())
        answered = False
        try:
            _, kind, a, more = await beamlet.receive((tag, ANY, ANY, ANY))
            if kind == "failed":
                answered = True
                return _FAILED
            status, headers, chunk = a
            if not more:
                answered = True
                return Response(status, chunk, headers)
            if req.method == "HEAD":  # nothing is written: take it all, for the length
                parts = [chunk]
                while more:
                    _call(ev, ex.ack, False)
                    _, kind, chunk, more = await beamlet.receive((tag, ANY, ANY, ANY))
                    if kind == "failed":
                        answered = True
                        return _FAILED
                    parts.append(chunk)
                answered = True
                return Response(status, b"".join(parts), headers)
            # Streamed: the process writes each chunk as it comes; a watcher
            # tells the application if the connection ends first.
            guard = beamlet.spawn(_guard, beamlet.self(), ev, ex)
            answered = True
            return Response(status, _Stream(ev, ex, tag, chunk, guard), headers)
        finally:
            if not answered:  # killed, or timed out, while the application ran
                _call(ev, ex.leave, True)

    async def _websocket(self, req: Request) -> Response:
        tag = beamlet.make_ref()
        ev = aio.loop()
        ex = _Exchange(beamlet.self(), tag, "websocket")
        ex.inbox = asyncio.Queue()  # (only touched on the loop from now on)
        ev.call_soon_threadsafe(
            ex.start, self.app, self._scope(req, "websocket"), context=aio._clean()
        )
        pattern = (tag, ANY, ANY, ANY)
        try:
            # The handshake: the application accepts; a close before that, or
            # returning without a word, refuses it (403). (Nothing else can
            # come before an accept: the exchange refuses a send.)
            _, kind, a, _b = await beamlet.receive(pattern)
            if kind != "accept":
                return Response(403, b"")
            ws = await req.upgrade(a)
            waiting = 0  # peer messages handed over, not yet taken by the app
            while True:
                if waiting >= WS_WINDOW:
                    msg = await beamlet.receive(pattern)  # the app's turn first
                else:
                    msg = await ws.receive()
                t = type(msg)
                if t is str:
                    waiting += 1
                    _call(ev, ex.push, {"type": "websocket.receive", "text": msg})
                elif t is bytes:
                    waiting += 1
                    _call(ev, ex.push, {"type": "websocket.receive", "bytes": msg})
                elif t is Close:
                    _call(ev, ex.push, {"type": "websocket.disconnect", "code": msg.code})
                    return Response(200)
                elif t is tuple and len(msg) == 4 and msg[0] == tag:
                    kind, a, b = msg[1], msg[2], msg[3]
                    if kind == "took":
                        waiting -= 1
                    elif kind == "send":
                        try:
                            await ws.send(a)
                        except ConnectionError:
                            _call(ev, ex.ack, True)
                            return Response(200)
                        _call(ev, ex.ack, False)
                    elif kind == "close":
                        await ws.close(a, b)
                        return Response(200)
                    elif kind == "done":
                        await ws.close(1011 if a else 1000)
                        return Response(200)
                # anything else sent to the connection process is dropped
        finally:
            _call(ev, ex.leave, False)


#: The answer to a request whose application failed before it answered (the
#: failure is reported on the loop, with the application's traceback).
_FAILED = Response(500, b"Internal Server Error\n")

#: WebSocket messages from the peer handed to an ASGI application that has
#: not taken them yet: past it, the connection stops reading the socket.
WS_WINDOW = 16


# ---------------------------------------------------------------- lifespan, on the loop


class _Lifespan:
    """The lifespan scope's task and its two exchanges (on the loop's thread)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], mode: str) -> None:
        self.app = app
        self.state = state
        self.mode = mode
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        ev = asyncio.get_running_loop()
        self.started: asyncio.Future[bool] = ev.create_future()  # True: supported
        self.stopped: asyncio.Future[None] = ev.create_future()
        self.said_anything = False
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> Message:
        return await self.inbox.get()

    async def send(self, message: Message) -> None:
        self.said_anything = True
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            _settle(self.started, True)
        elif kind == "lifespan.startup.failed":
            _settle(self.started, LifespanError(message.get("message", "") or "startup failed"))
        elif kind == "lifespan.shutdown.complete":
            _settle(self.stopped, None)
        elif kind == "lifespan.shutdown.failed":
            _settle(self.stopped, LifespanError(message.get("message", "") or "shutdown failed"))
        else:
            raise RuntimeError(f"ASGI: unexpected message {kind!r} on a lifespan scope")

    async def main(self) -> None:
        scope = {"type": "lifespan", "asgi": _LIFESPAN_ASGI, "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as e:
            if not self.started.done():
                if self.mode == "auto" and not self.said_anything:
                    logger.debug("beamlet.http: ASGI lifespan unsupported by the app (%r)", e)
                    _settle(self.started, False)
                else:
                    _settle(self.started, LifespanError(f"lifespan startup crashed: {e!r}"))
                    self.started.exception()  # retrieved below by startup
            elif not self.stopped.done():
                _settle(self.stopped, LifespanError(f"lifespan crashed: {e!r}"))
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            if not self.started.done():  # it returned without a word: no lifespan
                _settle(self.started, False)
            if not self.stopped.done():
                _settle(self.stopped, None)


def _settle(fut: asyncio.Future[Any], outcome: Any) -> None:
    if fut.done():
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)


async def _startup(app: ASGIApp, state: dict[str, Any], mode: str) -> _Lifespan | None:
    """Start the lifespan task, wait for its startup; None: not supported."""
    ls = _Lifespan(app, state, mode)
    ls.task = asyncio.get_running_loop().create_task(ls.main())
    ls.inbox.put_nowait({"type": "lifespan.startup"})
    try:
        supported = await ls.started
    except BaseException:
        ls.task.cancel()
        raise
    return ls if supported else None


async def _shutdown(ls: _Lifespan) -> None:
    ls.inbox.put_nowait({"type": "lifespan.shutdown"})
    try:
        await ls.stopped
    finally:
        if ls.task is not None and not ls.task.done():
            ls.task.cancel()


# ---------------------------------------------------------------- the server


@register_immutable
class AsgiServer(Server):
    """A running ASGI server (from :func:`serve_asgi`): a :class:`Server`
    whose ``stop`` also runs the application's lifespan shutdown."""

    __slots__ = ("_lifespan",)

    def __init__(self, server: Server, lifespan: _Lifespan | None) -> None:
        super().__init__(server.name, server.pid, server.port)
        self._lifespan = lifespan

    async def stop(self, timeout: float = 10.0) -> None:
        """:meth:`Server.stop`, then the lifespan shutdown (given ``timeout``
        seconds too; a failure is logged)."""
        await super().stop(timeout)
        ls, self._lifespan = self._lifespan, None
        if ls is None:
            return
        try:
            await aio.run(_shutdown, ls, timeout=timeout)
        except Exception as e:
            logger.error("beamlet.http %r: ASGI lifespan shutdown failed: %r", self.name, e)


async def serve_asgi(
    app: ASGIApp,
    port: int = 8080,
    host: str = "127.0.0.1",
    *,
    lifespan: str = "auto",
    root_path: str = "",
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
) -> AsgiServer:
    """Serve the ASGI 3 application ``app`` (Starlette, FastAPI, ...) on
    ``host:port``: :func:`serve`, with each request handed to ``app`` on the
    node's asyncio loop (``beamlet.aio``). Runs the lifespan startup first
    (``lifespan``: ``"auto"``, ``"on"``, ``"off"``; a failed startup raises
    :class:`LifespanError`); ``await server.stop()`` runs its shutdown.
    Responses stream as the application sends them; WebSocket scopes are
    served. The other options are :func:`serve`'s."""
    if lifespan not in ("auto", "on", "off"):
        raise ValueError(f"lifespan must be 'auto', 'on' or 'off', got {lifespan!r}")
    if not callable(app):
        raise TypeError(f"app must be an ASGI 3 application, got {app!r}")
    state: dict[str, Any] = {}
    ls = None
    if lifespan != "off":
        ls = await aio.run(_startup, app, state, lifespan)
    try:
        server = await serve(
            _AsgiHandler(app, root_path, state),
            port,
            host,
            parser=parser,
            ws=ws,
            max_connections=max_connections,
            num_acceptors=num_acceptors,
            max_header_size=max_header_size,
            max_body_size=max_body_size,
            idle_timeout=idle_timeout,
            spawn_per_request=spawn_per_request,
            name=name,
            backlog=backlog,
        )
    except BaseException:
        if ls is not None:
            await aio.run(_shutdown, ls)
        raise
    return AsgiServer(server, ls)
