"""ASGI 3 applications (Starlette, FastAPI) served by beamlet.http: a compatibility layer.

Theory of operation
-------------------
:func:`serve_asgi` is :func:`beamlet.http.serve` with a beamlet handler that
hosts the ASGI application. Each connection is still a process that parses its
requests and writes its responses; per request it builds the ASGI ``scope``,
reads the whole body (bounded by ``max_body_size``: 413 past it, as
``serve``), and hands both to the application on the node's asyncio loop with
``await aio.run(_call_app, app, scope, body)``: the process waits holding no
scheduler. On the loop, ``receive()`` returns the one ``http.request`` event
with the body, and later ``http.disconnect`` once the response is complete
(before that it waits, as a client that is still there); ``send()`` collects
``http.response.start`` and the ``http.response.body`` chunks. The buffered
response goes back to the process, which writes it as an ``http.Response``.

The lifespan protocol runs on the loop as one task for the server's life:
``serve_asgi`` waits for ``lifespan.startup.complete`` before it listens (a
``startup.failed``, or a crash, raises) and ``AsgiServer.stop`` sends
``lifespan.shutdown`` once the connections are gone. ``lifespan="auto"`` (as
uvicorn's) takes an application that raises before it says anything to the
lifespan scope as one without lifespan support; one that returns without a
word has none either.

Limits: the application's code runs on the asyncio loop, one thread, outside
beamlet's preemption: a runaway there stalls the loop, so every request of
every ASGI server of the node (and every other ``aio.run``). A response is
buffered whole before it is written (a streaming response or server-sent
events arrive at once, at the end); a request body is read whole before the
application runs. WebSocket scopes are not served (a handshake gets the
application's answer to an ``http`` scope).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from beamlet import aio
from beamlet._kernel.copying import register_immutable
from beamlet.http._server import Request, Response, Server, serve
from beamlet.net import _socket as _net

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


# ---------------------------------------------------------------- a request, on the loop


class _Exchange:
    """One request's ``receive`` and ``send`` (on the loop's thread)."""

    __slots__ = ("body", "chunks", "complete", "done", "headers", "request_sent", "status")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.request_sent = False
        self.status: int | None = None
        self.headers: Any = None
        self.chunks: list[bytes] = []
        self.complete = False
        self.done: asyncio.Event | None = None

    async def receive(self) -> Message:
        if not self.request_sent:
            self.request_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if not self.complete:
            # The client is there until the response is complete (buffered:
            # it cannot be seen leaving before that).
            if self.done is None:
                self.done = asyncio.Event()
            await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
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
            chunk = message.get("body", b"")
            if chunk:
                self.chunks.append(chunk)
            if not message.get("more_body", False):
                self.complete = True
                if self.done is not None:
                    self.done.set()
        else:
            raise RuntimeError(f"ASGI: unexpected message {kind!r} on an http scope")


async def _call_app(app: ASGIApp, scope: Scope, body: bytes) -> tuple[int, Any, bytes]:
    """Run the application on one request (on the loop); its buffered response."""
    ex = _Exchange(body)
    try:
        await app(scope, ex.receive, ex.send)
    except Exception:
        if not ex.complete:
            raise
        # The response is complete: the client gets it; the crash is reported.
        logger.exception(
            "beamlet.http: the ASGI application raised after completing its response to %s %s",
            scope["method"],
            scope["path"],
        )
    if ex.status is None:
        raise RuntimeError("ASGI: the application returned without starting a response")
    if not ex.complete:
        raise RuntimeError("ASGI: the application returned without completing its response")
    chunks = ex.chunks
    return ex.status, ex.headers, chunks[0] if len(chunks) == 1 else b"".join(chunks)


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

    async def __call__(self, req: Request) -> Response:
        body = await req.body()
        target = req.target
        raw_path, _, query = target.partition("?")
        sock = req._conn.sock
        try:
            server: tuple[str, int] | None = _net.sockname(sock)
        except OSError:
            server = None
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": req.http_version,
            "method": req.method,
            "scheme": "http",
            "path": req.path,
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": self.root_path,
            "headers": req.raw_headers,
            "client": req.client,
            "server": server,
            "state": self.state.copy(),
        }
        status, headers, content = await aio.run(_call_app, self.app, scope, body)
        return Response(status, content, headers)


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
    Responses are buffered whole; WebSocket scopes are not served. The other
    options are :func:`serve`'s."""
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
