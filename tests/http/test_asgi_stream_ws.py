"""beamlet.http.serve_asgi: streamed responses (each chunk written as the
application sends it, flow-controlled, the client's departure seen by the
application) and WebSocket scopes (Starlette's WebSocket routes, raw ASGI
apps: accept, subprotocols, close before accept = 403, disconnects both ways).

Ordering is by messages (``aio.send`` from the loop to the test process) and by
asyncio events the test sets on the loop; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import http.client as httpclient
import socket
from typing import Any

import pytest
from tests.conftest import run
from tests.http.test_http import WsClient

import beamlet
from beamlet import aio, http

starlette = pytest.importorskip("starlette")

from starlette.applications import Starlette  # noqa: E402
from starlette.responses import StreamingResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket, WebSocketDisconnect  # noqa: E402

T = 10.0


def on_loop(fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` on the node's asyncio loop (from the test process)."""
    aio.loop().call_soon_threadsafe(fn, *args)


# ---------------------------------------------------------------- streamed responses


def test_a_streamed_response_reaches_the_client_chunk_by_chunk():
    """The first chunk is read by the client while the application still
    waits to send the second: nothing is buffered to the end."""

    async def main():
        me = beamlet.self()
        gates: list[asyncio.Event] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            assert (await receive())["type"] == "http.request"
            if scope["path"] == "/head":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                for part in (b"12", b"345", b""):
                    await send(
                        {"type": "http.response.body", "body": part, "more_body": bool(part)}
                    )
                return
            gate = asyncio.Event()
            gates.append(gate)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first;", "more_body": True})
            aio.send(me, "first sent")
            await gate.wait()
            await send({"type": "http.response.body", "body": b"second;", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            aio.send(me, ("after", (await receive())["type"]))

        srv = await http.serve_asgi(app, port=0, lifespan="off")
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        c.request("GET", "/")
        r = await beamlet.blocking(c.getresponse)
        assert r.status == 200 and r.getheader("transfer-encoding") == "chunked"
        assert await beamlet.receive("first sent", timeout=T) == "first sent"
        assert await beamlet.blocking(r.read1, 100) == b"first;"  # before the second exists
        on_loop(gates[0].set)
        assert await beamlet.blocking(r.read) == b"second;"
        assert await beamlet.receive(("after", beamlet.ANY), timeout=T) == (
            "after",
            "http.disconnect",
        )
        # the keep-alive connection serves the next request
        c.request("HEAD", "/head")  # streamed, not written: its length is told
        r = await beamlet.blocking(c.getresponse)
        assert (r.status, r.getheader("content-length"), await beamlet.blocking(r.read)) == (
            200,
            "5",
            b"",
        )
        c.close()
        await srv.stop()

    run(main)


def test_a_client_that_leaves_mid_stream_makes_the_applications_send_raise():
    async def main():
        me = beamlet.self()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await receive()  # the request
            await send({"type": "http.response.start", "status": 200, "headers": []})
            try:
                while True:  # server-sent events, forever
                    await send(
                        {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True}
                    )
            except OSError as e:
                aio.send(me, ("send raised", type(e).__name__))
            aio.send(me, ("then receive", (await receive())["type"]))

        srv = await http.serve_asgi(app, port=0, lifespan="off")
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=T)
        sock.sendall(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"200" in await beamlet.blocking(sock.recv, 100)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset: the connection process's next write fails
        assert await beamlet.receive(("send raised", beamlet.ANY), timeout=T) == (
            "send raised",
            "ClientDisconnected",
        )
        assert await beamlet.receive(("then receive", beamlet.ANY), timeout=T) == (
            "then receive",
            "http.disconnect",
        )
        await srv.stop()

    run(main)


def test_a_starlette_streaming_response_and_a_failure_in_the_middle():
    async def main():
        async def numbers(request: Any) -> StreamingResponse:
            async def gen() -> Any:
                for i in range(5):
                    yield f"{i},"

            return StreamingResponse(gen(), media_type="text/plain")

        async def broken(request: Any) -> StreamingResponse:
            async def gen() -> Any:
                yield "ok so far,"
                raise ValueError("the generator broke")

            return StreamingResponse(gen(), media_type="text/plain")

        app = Starlette(routes=[Route("/n", numbers), Route("/broken", broken)])
        srv = await http.serve_asgi(app, port=0)
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        c.request("GET", "/n")
        r = await beamlet.blocking(c.getresponse)
        assert (r.status, await beamlet.blocking(r.read)) == (200, b"0,1,2,3,4,")
        c.request("GET", "/broken")
        r = await beamlet.blocking(c.getresponse)
        assert r.status == 200  # the head was out when it broke:
        with pytest.raises(httpclient.IncompleteRead):  # the body is cut off
            await beamlet.blocking(r.read)
        c.close()
        await srv.stop()

    run(main)


# ---------------------------------------------------------------- WebSocket


class ProtocolClient(WsClient):
    """WsClient offering subprotocols; ``accepted`` is the server's choice."""

    def __init__(self, port: int, path: str, subprotocols: list[str]) -> None:
        from wsproto import WSConnection
        from wsproto.connection import ConnectionType
        from wsproto.events import AcceptConnection, Request

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(
            self.ws.send(Request(host="127.0.0.1", target=path, subprotocols=subprotocols))
        )
        self.pending: list[Any] = []
        ev = self._next()
        assert isinstance(ev, AcceptConnection), ev
        self.accepted = ev.subprotocol


def make_ws_app(me: beamlet.Pid) -> Starlette:
    async def echo(ws: WebSocket) -> None:
        await ws.accept(subprotocol=(ws.scope["subprotocols"] or [None])[-1])
        aio.send(me, ("path", ws.scope["path"], ws.scope["query_string"]))
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    aio.send(me, ("disconnect", msg["code"]))
                    return
                if msg.get("text") == "bye":
                    await ws.close(code=4000, reason="asked to")
                    return
                if msg.get("text") is not None:
                    await ws.send_text("echo " + msg["text"])
                else:
                    await ws.send_bytes(msg["bytes"][::-1])
        except WebSocketDisconnect as e:
            aio.send(me, ("disconnect", e.code))

    async def refuse(ws: WebSocket) -> None:
        await ws.close()  # before accept: the handshake gets 403

    return Starlette(routes=[WebSocketRoute("/ws", echo), WebSocketRoute("/no", refuse)])


def test_a_starlette_websocket_echoes_and_closes():
    async def main():
        srv = await http.serve_asgi(make_ws_app(beamlet.self()), port=0)

        def session() -> Any:
            c = ProtocolClient(srv.port, "/ws?room=1", ["v1", "v2"])
            c.send("hi")
            text = c.receive()
            c.send(b"\x01\x02\x03")
            data = c.receive()
            many = []
            for i in range(100):  # more than the window: flow control holds
                c.send(f"m{i}")
            for _ in range(100):
                many.append(c.receive())
            c.send("bye")
            closed = c.receive()
            c.sock.close()
            return c.accepted, text, data, many, closed

        accepted, text, data, many, closed = await beamlet.blocking(session)
        assert accepted == "v2"
        assert (text, data) == ("echo hi", b"\x03\x02\x01")
        assert many == [f"echo m{i}" for i in range(100)]
        assert closed == ("close", 4000)
        path = await beamlet.receive(("path", beamlet.ANY, beamlet.ANY), timeout=T)
        assert path == ("path", "/ws", b"room=1")
        await srv.stop()

    run(main)


def test_a_websocket_closed_by_the_client_tells_the_application():
    async def main():
        srv = await http.serve_asgi(make_ws_app(beamlet.self()), port=0)

        def session() -> Any:
            c = WsClient(srv.port, "/ws")
            c.send("hi")
            got = c.receive()
            return got, c.close()

        got, closed = await beamlet.blocking(session)
        assert got == "echo hi" and closed == ("close", 1000)
        assert await beamlet.receive(("disconnect", beamlet.ANY), timeout=T) == ("disconnect", 1000)
        await srv.stop()

    run(main)


def test_a_websocket_the_application_refuses_gets_403_and_http_routes_still_work():
    async def main():
        srv = await http.serve_asgi(make_ws_app(beamlet.self()), port=0)

        def handshake() -> bytes:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=T)
            s.sendall(
                b"GET /no HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
            )
            head = s.recv(100)
            s.close()
            return head

        assert (await beamlet.blocking(handshake)).startswith(b"HTTP/1.1 403")
        await srv.stop()

    run(main)


def test_a_raw_asgi_websocket_app_that_crashes_closes_with_1011():
    async def main():
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "websocket":
                return
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            msg = await receive()
            raise ValueError(f"cannot handle {msg['text']}")

        srv = await http.serve_asgi(app, port=0, lifespan="off")

        def session() -> Any:
            c = WsClient(srv.port, "/")
            c.send("this")
            return c.receive()

        assert await beamlet.blocking(session) == ("close", 1011)
        await srv.stop()

    run(main)
