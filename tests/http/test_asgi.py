"""beamlet.http.serve_asgi: a Starlette application (routes, bodies, errors,
lifespan) and raw ASGI applications (the scope, buffering, limits, a stop).

The clients are blocking http.client connections run on the blocking pool
(``beamlet.blocking``); every wait is bounded by a socket timeout or a
receive timeout, and ordering is by messages.
"""

from __future__ import annotations

import asyncio
import http.client as httpclient
import json
import socket
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tests.conftest import run

import beamlet
from beamlet import aio, http

starlette = pytest.importorskip("starlette")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import (  # noqa: E402
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route  # noqa: E402

T = 10.0  # bound on every wait: a failure fails instead of hanging

try:
    import httptools  # noqa: F401
except ImportError:
    HTTPTOOLS = False
else:
    HTTPTOOLS = True

PARSERS = [
    "h11",
    pytest.param(
        "httptools", marks=pytest.mark.skipif(not HTTPTOOLS, reason="httptools is not installed")
    ),
]


def make_app(events: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        events.append("startup")
        yield {"greeting": "hello"}  # the lifespan state: request.state
        events.append("shutdown")

    async def root(request: Request) -> JSONResponse:
        return JSONResponse({"greeting": request.state.greeting, "q": dict(request.query_params)})

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"item {request.path_params['name']}")

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    async def boom(request: Request) -> Response:
        raise ValueError("the endpoint does not like this")

    async def stream(request: Request) -> StreamingResponse:
        async def parts() -> Any:
            for i in range(3):
                yield f"part{i};"

        return StreamingResponse(parts(), media_type="text/plain")

    return Starlette(
        routes=[
            Route("/", root),
            Route("/items/{name}", item),
            Route("/echo", echo, methods=["POST"]),
            Route("/boom", boom),
            Route("/stream", stream),
        ],
        lifespan=lifespan,
    )


def request(
    c: httpclient.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, str | None, bytes]:
    c.request(method, path, body=body)
    r = c.getresponse()
    return r.status, r.getheader("content-type"), r.read()


@pytest.mark.parametrize("parser", PARSERS)
def test_a_starlette_app_routes_bodies_errors_and_lifespan(parser, caplog):
    events: list[str] = []

    async def main():
        srv = await http.serve_asgi(make_app(events), port=0, parser=parser)
        assert events == ["startup"]  # before serve_asgi returns
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        try:
            got = await beamlet.blocking(request, c, "GET", "/?a=1&b=x")
            assert got[0] == 200 and got[1] == "application/json"
            assert json.loads(got[2]) == {"greeting": "hello", "q": {"a": "1", "b": "x"}}
            got = await beamlet.blocking(request, c, "GET", "/items/blue%20cup")
            assert got == (200, "text/plain; charset=utf-8", b"item blue cup")
            payload = bytes(range(256)) * 100
            got = await beamlet.blocking(request, c, "POST", "/echo", payload)
            assert got == (200, "application/octet-stream", payload)
            got = await beamlet.blocking(request, c, "GET", "/boom")
            assert got[0] == 500
            # the same keep-alive connection goes on serving
            got = await beamlet.blocking(request, c, "GET", "/items/x")
            assert got[2] == b"item x"
            got = await beamlet.blocking(request, c, "GET", "/stream")  # buffered, then sent
            assert got[0] == 200 and got[2] == b"part0;part1;part2;"
            assert (await beamlet.blocking(request, c, "GET", "/nowhere"))[0] == 404
            assert (await beamlet.blocking(request, c, "PUT", "/echo", b""))[0] == 405
        finally:
            c.close()
        # and so does the server, on a new connection
        c2 = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        assert (await beamlet.blocking(request, c2, "GET", "/items/y"))[2] == b"item y"
        c2.close()
        assert events == ["startup"]
        await srv.stop()
        assert events == ["startup", "shutdown"]  # once stop returns
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=T).close()

    run(main)
    assert "the endpoint does not like this" in caplog.text  # reported, not swallowed


def test_a_failed_startup_makes_serve_asgi_raise():
    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        raise RuntimeError("no database")
        yield

    async def main():
        with pytest.raises(http.LifespanError, match="no database"):
            await http.serve_asgi(Starlette(lifespan=lifespan), port=0)

    run(main)


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app without lifespan support: it answers with its scope."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    msg = await receive()
    shown = {
        k: v.decode("latin-1") if isinstance(v, bytes) else v
        for k, v in scope.items()
        if k not in ("headers", "state")
    }
    shown["headers"] = [[n.decode(), v.decode()] for n, v in scope["headers"]]
    shown["body"] = msg["body"].decode()
    shown["more_body"] = msg["more_body"]
    body = json.dumps(shown).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body[:5], "more_body": True})
    await send({"type": "http.response.body", "body": body[5:]})
    assert (await receive())["type"] == "http.disconnect"  # the response is complete


@pytest.mark.parametrize("parser", PARSERS)
def test_the_scope(parser):
    async def main():
        srv = await http.serve_asgi(bare, port=0, parser=parser, root_path="/api")
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        c.request("POST", "/a%20b/c?x=1&y=%20", body=b"hi", headers={"X-Thing": "Yes"})
        r = await beamlet.blocking(c.getresponse)
        assert r.status == 200
        scope = json.loads(await beamlet.blocking(r.read))
        c.close()
        await srv.stop()
        headers = dict(scope.pop("headers"))
        assert headers["x-thing"] == "Yes" and headers["content-length"] == "2"
        client = scope.pop("client")
        assert client[0] == "127.0.0.1" and isinstance(client[1], int)
        assert scope == {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/a b/c",
            "raw_path": "/a%20b/c",
            "query_string": "x=1&y=%20",
            "root_path": "/api",
            "server": ["127.0.0.1", srv.port],
            "body": "hi",
            "more_body": False,
        }

    run(main)


def test_lifespan_on_requires_support_and_off_skips_it():
    async def main():
        with pytest.raises(http.LifespanError, match="unsupported scope"):
            await http.serve_asgi(bare, port=0, lifespan="on")
        events: list[str] = []
        srv = await http.serve_asgi(make_app(events), port=0, lifespan="off")
        await srv.stop()
        assert events == []

    run(main)


def test_a_body_over_max_body_size_gets_413():
    async def main():
        srv = await http.serve_asgi(bare, port=0, max_body_size=10)
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        got = await beamlet.blocking(request, c, "POST", "/", b"x" * 11)
        c.close()
        assert got[0] == 413
        await srv.stop()

    run(main)


def test_an_app_that_never_answers_is_cancelled_at_the_stop_deadline():
    async def main():
        me = beamlet.self()

        async def stuck(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            aio.send(me, "in the app")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                aio.send(me, "cancelled")
                raise

        srv = await http.serve_asgi(stuck, port=0)

        def client() -> None:
            c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
            c.request("GET", "/")
            try:
                c.getresponse()
            except (ConnectionError, httpclient.HTTPException):
                pass
            c.close()

        async def waiter() -> None:
            await beamlet.blocking(client)
            beamlet.send(me, "client done")

        beamlet.spawn(waiter)
        assert await beamlet.receive("in the app", timeout=T) == "in the app"
        await srv.stop(timeout=0.2)
        assert await beamlet.receive("cancelled", timeout=T) == "cancelled"
        # the connection was killed with its process: the client sees it close
        assert await beamlet.receive("client done", timeout=T) == "client done"

    run(main)
