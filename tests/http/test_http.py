"""beamlet.http: requests, limits, errors, keep-alive, pipelining, WebSocket, shutdown.

The clients are plain blocking sockets (or http.client, or wsproto over a
socket) run on the blocking pool (``beamlet.blocking``); every wait is bounded
by a socket timeout or a receive timeout, and ordering is by messages.
"""

from __future__ import annotations

import http.client as httpclient
import logging
import socket
import threading
import time
from typing import Any

import pytest
from tests.conftest import run

import beamlet
from beamlet import http, net, receive, send

T = 10.0  # bound on every wait: a failure fails instead of hanging

try:
    import httptools  # noqa: F401
except ImportError:  # the optional parser (the httptools extra)
    HTTPTOOLS = False
else:
    HTTPTOOLS = True

try:
    import websockets  # noqa: F401
except ImportError:  # the optional WebSocket codec (the websockets extra)
    WEBSOCKETS = False
else:
    WEBSOCKETS = True

CODECS = [
    "wsproto",
    pytest.param(
        "websockets",
        marks=pytest.mark.skipif(not WEBSOCKETS, reason="websockets is not installed"),
    ),
]

PARSERS = [
    "h11",
    pytest.param(
        "httptools", marks=pytest.mark.skipif(not HTTPTOOLS, reason="httptools is not installed")
    ),
]


# ---------------------------------------------------------------- client helpers


def exchange(port: int, data: bytes, half_close: bool = False) -> bytes:
    """Send ``data``, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=T) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                return out
            out += chunk
        return out


def get(port: int, path: str, conn: httpclient.HTTPConnection | None = None) -> tuple[int, bytes]:
    c = conn or httpclient.HTTPConnection("127.0.0.1", port, timeout=T)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, body


async def app(req: http.Request) -> http.Response:
    """The app most tests serve."""
    if req.path == "/hello":
        return http.Response(200, b"hello", headers={"content-type": "text/plain"})
    if req.path == "/pid":
        return http.Response.text(str(beamlet.self()))
    if req.path == "/echo":
        return http.Response(200, await req.body())
    if req.path == "/json":
        return http.Response.json({"got": await req.json(), "q": req.query})
    if req.path == "/boom":
        raise ValueError("the handler does not like this")
    if req.path == "/chunked":

        async def parts() -> Any:
            for i in range(3):
                yield f"part{i};"

        return http.Response(200, parts())
    return http.Response(404, b"not found")


async def start(parser: str, handler: Any = app, **kw: Any) -> http.Server:
    return await http.serve(handler, port=0, parser=parser, **kw)


# ---------------------------------------------------------------- serving


@pytest.mark.parametrize("parser", PARSERS)
def test_hello_json_and_404(parser):
    async def main():
        srv = await start(parser)
        status, body = await beamlet.blocking(get, srv.port, "/hello")
        assert (status, body) == (200, b"hello")
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        await beamlet.blocking(c.request, "POST", "/json?a=1&b=x", body=b'{"k": [1, 2]}')
        r = await beamlet.blocking(c.getresponse)
        assert r.status == 200 and r.getheader("content-type") == "application/json"
        assert r.read() == b'{"got":{"k":[1,2]},"q":{"a":"1","b":"x"}}'
        c.close()
        assert (await beamlet.blocking(get, srv.port, "/nowhere"))[0] == 404
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_keep_alive_serves_several_requests_in_one_connection_process(parser):
    async def main():
        srv = await start(parser)
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        bodies = [await beamlet.blocking(get, srv.port, p, c) for p in ["/pid"] * 3 + ["/hello"]]
        c.close()
        pids = {b for s, b in bodies[:3]}
        assert len(pids) == 1, bodies  # one process served the three
        assert bodies[3] == (200, b"hello")
        # a second connection: another process
        other = await beamlet.blocking(get, srv.port, "/pid")
        assert other[1] not in pids
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_pipelined_requests_are_answered_in_order(parser):
    async def main():
        srv = await start(parser)
        reqs = (
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond"
            b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        out = await beamlet.blocking(exchange, srv.port, reqs)
        assert out.count(b"HTTP/1.1 200 OK") == 4, out
        assert out.index(b"hello") < out.index(b"first") < out.index(b"second")
        assert out.endswith(b"hello")
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_chunked_request_body_and_chunked_response(parser):
    async def main():
        srv = await start(parser)
        req = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
            b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        out = await beamlet.blocking(exchange, srv.port, req)
        first, _, second = out.partition(b"hello, world")
        assert b"content-length: 12" in first.lower()
        assert b"transfer-encoding: chunked" in second.lower()
        assert second.endswith(b"6\r\npart0;\r\n6\r\npart1;\r\n6\r\npart2;\r\n0\r\n\r\n"), second
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_the_body_streams_to_the_handler_as_it_comes(parser):
    """The handler sees the first part of the body before the client has sent
    the rest (the client waits for the handler's word to send it)."""

    async def main():
        test = beamlet.self()
        go_on = threading.Event()

        async def streaming(req: http.Request) -> http.Response:
            chunks = []
            async for chunk in req.stream():
                chunks.append(chunk)
                send(test, ("chunk", chunk))
            return http.Response(200, b"|".join(chunks))

        def client(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=T) as s:
                s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst")
                assert go_on.wait(T)
                s.sendall(b"-last")
                return s.recv(65536)

        srv = await start(parser, streaming)
        pool = beamlet.spawn(_blocking_to, test, client, srv.port)
        assert await receive(("chunk", beamlet.ANY), timeout=T) == ("chunk", b"first")
        go_on.set()
        assert await receive(("chunk", beamlet.ANY), timeout=T) == ("chunk", b"-last")
        _, out = await receive(("result", beamlet.ANY), timeout=T)
        assert out.endswith(b"first|-last"), out
        del pool
        await srv.stop()

    run(main)


async def _blocking_to(parent: beamlet.Pid, fn: Any, *args: Any) -> None:
    send(parent, ("result", await beamlet.blocking(fn, *args)))


# ---------------------------------------------------------------- bad input and limits


@pytest.mark.parametrize("parser", PARSERS)
def test_a_malformed_request_gets_400_and_the_connection_closes(parser):
    async def main():
        srv = await start(parser)
        out = await beamlet.blocking(exchange, srv.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
        assert b"connection: close" in out  # and exchange() saw it close
        assert (await beamlet.blocking(get, srv.port, "/hello"))[0] == 200
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_headers_over_the_limit_get_431(parser):
    async def main():
        srv = await start(parser, max_header_size=1024)
        big = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n"
        out = await beamlet.blocking(exchange, srv.port, big)
        assert out.startswith(b"HTTP/1.1 431 "), out
        small = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert (await beamlet.blocking(exchange, srv.port, small)).endswith(b"hello")
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_a_body_over_the_limit_gets_413(parser):
    async def main():
        srv = await start(parser, max_body_size=100)
        declared = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        out = await beamlet.blocking(exchange, srv.port, declared)  # 413 before the body
        assert out.startswith(b"HTTP/1.1 413 "), out
        chunked = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"40\r\n" + b"x" * 64 + b"\r\n"
            + b"40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n"
        )  # fmt: skip
        out = await beamlet.blocking(exchange, srv.port, chunked)
        assert out.startswith(b"HTTP/1.1 413 "), out
        ok = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
        assert (await beamlet.blocking(exchange, srv.port, ok + b"y" * 100)).endswith(b"y" * 100)
        await srv.stop()

    run(main)


def slowloris(port: int, interval: float) -> tuple[bytes, int, float]:
    """Send a request's head a byte at a time, ``interval`` apart, until the
    server answers or closes: (what it answered, bytes sent, seconds)."""
    head = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 1000 + b"\r\n\r\n"
    t0 = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=T) as s:
        s.settimeout(interval)
        out = b""
        for byte in head:
            try:
                s.sendall(bytes([byte]))
                sent += 1
            except OSError:
                break
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue  # nothing yet: the next byte
            except ConnectionResetError:
                break
            out += chunk
            if not chunk:
                break
        return out, sent, time.monotonic() - t0


@pytest.mark.parametrize("parser", PARSERS)
def test_a_slowloris_client_is_cut_at_the_idle_timeout_with_408(parser):
    async def main():
        srv = await start(parser, idle_timeout=0.5)
        out, sent, seconds = await beamlet.blocking(slowloris, srv.port, 0.02)
        assert out.startswith(b"HTTP/1.1 408 "), out
        assert sent < 1000 and 0.45 <= seconds < T
        assert (await beamlet.blocking(get, srv.port, "/hello"))[0] == 200
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_an_idle_keep_alive_connection_is_closed_silently(parser):
    async def main():
        srv = await start(parser, idle_timeout=0.3)
        t0 = time.monotonic()
        out = await beamlet.blocking(exchange, srv.port, b"")
        assert out == b"" and time.monotonic() - t0 >= 0.25
        await srv.stop()

    run(main)


# ---------------------------------------------------------------- handler failures


@pytest.mark.parametrize("parser", PARSERS)
def test_a_handler_exception_gets_500_a_crash_report_and_the_server_serves_on(parser, caplog):
    async def main():
        srv = await start(parser)
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        status, _ = await beamlet.blocking(get, srv.port, "/boom", c)
        assert status == 500
        assert await beamlet.blocking(get, srv.port, "/hello", c) == (200, b"hello")
        c.close()
        await srv.stop()

    with caplog.at_level(logging.ERROR, logger="beamlet.http"):
        run(main)
    reports = [r for r in caplog.records if r.name == "beamlet.http"]
    assert len(reports) == 1
    assert "ValueError" in reports[0].getMessage() and "/boom" in reports[0].getMessage()
    assert reports[0].exc_info is not None


@pytest.mark.parametrize("parser", PARSERS)
def test_responses_are_framed_by_the_server_and_invalid_ones_get_500(parser, caplog):
    """docs/http.md, "Limits, errors": the server writes the framing (RFC 9112
    6.3): no body for 204 or HEAD (HEAD keeps the length), and a response it
    cannot write truthfully -- a header name that is not a token, a value with
    CR/LF (header injection), a Content-Length that is not the body's -- is
    the handler's error: 500, and the connection serves on."""
    responses = {
        "/nocontent": http.Response(204, b"dropped"),
        "/badname": http.Response(200, b"x", headers={"bad name": "v"}),
        "/inject": http.Response(200, b"x", headers={"x-a": "1\r\nset-cookie: evil=1"}),
        "/badlength": http.Response(200, b"abc", headers={"content-length": "5"}),
        "/length": http.Response(200, b"abc", headers={"content-length": "3"}),
        "/dated": http.Response(200, b"d", headers={"Date": "Thu, 01 Jan 2026 00:00:00 GMT"}),
        "/bye": http.Response(200, b"bye", headers={"connection": "close"}),
    }

    async def handler(req: http.Request) -> http.Response:
        return responses.get(req.path) or await app(req)

    def exchange_all(port: int) -> list[tuple[int, dict[str, str], bytes]]:
        c = httpclient.HTTPConnection("127.0.0.1", port, timeout=T)
        out = []
        for method, path in [
            ("GET", "/nocontent"),
            ("HEAD", "/hello"),
            ("GET", "/badname"),
            ("GET", "/inject"),
            ("GET", "/badlength"),
            ("GET", "/length"),
            ("GET", "/hello"),
            ("GET", "/dated"),
            ("GET", "/bye"),
        ]:
            c.request(method, path)
            r = c.getresponse()
            names = [k.lower() for k, _ in r.getheaders()]
            out.append((r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()))
            assert len(names) == len(set(names)), names  # no field twice
        c.close()
        # the handler's "connection: close" closes the connection (read to the end)
        out.append(exchange(port, b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\n"))
        return out

    async def main():
        srv = await start(parser, handler)
        got = await beamlet.blocking(exchange_all, srv.port)
        await srv.stop()
        return got

    with caplog.at_level(logging.ERROR, logger="beamlet.http"):
        got = run(main)
    *got, dated, bye, after_bye = got
    assert dated[1]["date"] == "Thu, 01 Jan 2026 00:00:00 GMT"
    assert bye[1]["connection"] == "close" and bye[2] == b"bye"
    assert after_bye.startswith(b"HTTP/1.1 200 OK\r\n") and after_bye.endswith(b"\r\n\r\nbye")
    assert after_bye.lower().count(b"connection:") == 1
    (s204, h204, b204), (shead, hhead, bhead), *errors, length, hello = got
    assert (s204, b204) == (204, b"") and "content-length" not in h204
    assert (shead, hhead["content-length"], bhead) == (200, "5", b"")
    assert [e[0] for e in errors] == [500, 500, 500]
    assert "set-cookie" not in errors[1][1]
    assert (length[0], length[1]["content-length"], length[2]) == (200, "3", b"abc")
    assert hello[0] == 200 and hello[2] == b"hello"
    reports = [r.getMessage() for r in caplog.records if r.name == "beamlet.http"]
    assert len(reports) == 3 and all("ValueError" in m for m in reports), reports


@pytest.mark.parametrize("parser", PARSERS)
def test_messages_to_a_connection_process_wait_in_its_mailbox_for_the_handler(parser):
    """docs/http.md, "A JSON API": the connection's process is an ordinary
    process; its HTTP loop takes only its socket's messages (a selective
    receive), so a message sent to it between two requests is there for the
    next request's handler (docs/semantics.md, "Receive")."""

    async def handler(req: http.Request) -> http.Response:
        if req.path == "/inbox":
            _, value = await receive(("note", beamlet.ANY), timeout=T)
            return http.Response.text(value)
        return await app(req)

    async def main():
        srv = await start(parser, handler)
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        status, body = await beamlet.blocking(get, srv.port, "/pid", c)
        pid = (await srv.connections())[0]
        assert status == 200 and str(pid) == body.decode()
        send(pid, ("note", "kept for the next request"))
        assert await beamlet.blocking(get, srv.port, "/inbox", c) == (
            200,
            b"kept for the next request",
        )
        c.close()
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_a_runaway_handler_holds_its_own_connection_only(parser):
    async def main():
        test = beamlet.self()

        async def handler(req: http.Request) -> http.Response:
            if req.path == "/spin":
                send(test, ("spinning", beamlet.self()))
                while True:
                    pass
            return await app(req)

        srv = await start(parser, handler)
        beamlet.spawn(_blocking_to, test, _get_or_error, srv.port, "/spin")
        _, spinner = await receive(("spinning", beamlet.ANY), timeout=T)
        for _ in range(5):
            assert await beamlet.blocking(get, srv.port, "/hello") == (200, b"hello")
        assert beamlet.is_alive(spinner)
        await srv.stop(timeout=0.2)  # it is killed at the deadline
        assert not beamlet.is_alive(spinner)
        _, result = await receive(("result", beamlet.ANY), timeout=T)
        assert isinstance(result, Exception)  # its connection closed without an answer

    run(main)


def _get_or_error(port: int, path: str) -> Any:
    try:
        return get(port, path)
    except Exception as e:
        return e


@pytest.mark.parametrize("parser", PARSERS)
def test_spawn_per_request_runs_each_request_in_a_process_of_its_own(parser):
    async def main():
        test = beamlet.self()

        async def handler(req: http.Request) -> http.Response:
            if req.path == "/die":
                beamlet.exit(beamlet.self(), "kill")
            if req.path == "/who":
                send(test, ("conn", req.target))
            return await app(req)

        srv = await start(parser, handler, spawn_per_request=True)
        c = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=T)
        a = await beamlet.blocking(get, srv.port, "/pid", c)
        b = await beamlet.blocking(get, srv.port, "/pid", c)
        assert a[0] == b[0] == 200 and a[1] != b[1]  # two processes, one connection
        assert await beamlet.blocking(get, srv.port, "/echo", c) == (200, b"")
        c.close()
        # a request process killed: its connection closes, the server serves on
        assert isinstance(await beamlet.blocking(_get_or_error, srv.port, "/die"), Exception)
        assert await beamlet.blocking(get, srv.port, "/hello") == (200, b"hello")
        await srv.stop()

    run(main)


# ---------------------------------------------------------------- WebSocket


class WsClient:
    """A blocking WebSocket client over wsproto (for the pool)."""

    def __init__(self, port: int, path: str = "/ws") -> None:
        from wsproto import WSConnection
        from wsproto.connection import ConnectionType
        from wsproto.events import AcceptConnection, Request

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target=path)))
        self.pending: list[Any] = []
        ev = self._next()
        assert isinstance(ev, AcceptConnection), ev

    def _next(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    def send(self, msg: str | bytes) -> None:
        from wsproto.events import BytesMessage, TextMessage

        ev = TextMessage(data=msg) if isinstance(msg, str) else BytesMessage(data=msg)
        self.sock.sendall(self.ws.send(ev))

    def receive(self) -> Any:
        from wsproto.events import CloseConnection, Message

        ev = self._next()
        if isinstance(ev, Message):
            parts = [ev.data]
            while not ev.message_finished:
                ev = self._next()
                parts.append(ev.data)
            return type(parts[0])().join(parts)
        if isinstance(ev, CloseConnection):
            return ("close", ev.code)
        return ev

    def close(self) -> Any:
        from wsproto.events import CloseConnection

        self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        ev = self._next()
        self.sock.close()
        return ("close", ev.code) if isinstance(ev, CloseConnection) else ev


async def ws_app(req: http.Request) -> http.Response:
    if req.path == "/ws":
        ws = await req.upgrade()
        while True:
            msg = await ws.receive()
            if isinstance(msg, http.Close):
                return http.Response(200)  # (ignored after an upgrade)
            if isinstance(msg, tuple) and msg[0] == "register":
                send(msg[1], ("ws", ws.pid))
            elif isinstance(msg, tuple) and msg[0] == "push":
                await ws.send(msg[1])
            else:
                await ws.send(msg)
    return await app(req)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("parser", PARSERS)
def test_websocket_upgrade_and_echo(parser, codec):
    def client(port: int) -> list[Any]:
        c = WsClient(port)
        got = []
        for msg in ["hello", b"\x00\x01binary", "x" * 100_000]:
            c.send(msg)
            got.append(c.receive())
        got.append(c.close())
        return got

    async def main():
        srv = await start(parser, ws_app, ws=codec)
        got = await beamlet.blocking(client, srv.port)
        assert got == ["hello", b"\x00\x01binary", "x" * 100_000, ("close", 1000)]
        assert (await beamlet.blocking(get, srv.port, "/hello"))[0] == 200
        await srv.stop()

    run(main)


@pytest.mark.parametrize("parser", PARSERS)
def test_a_message_to_the_websocket_process_reaches_ws_receive(parser):
    async def main():
        test = beamlet.self()
        srv = await start(parser, ws_app)
        c = await beamlet.blocking(WsClient, srv.port)
        pids = await srv.connections()
        assert len(pids) == 1
        send(pids[0], ("register", test))  # from this process, not the socket
        _, ws_pid = await receive(("ws", beamlet.ANY), timeout=T)
        assert ws_pid == pids[0]
        send(ws_pid, ("push", "from another process"))
        assert await beamlet.blocking(c.receive) == "from another process"
        assert await beamlet.blocking(c.close) == ("close", 1000)
        await srv.stop()

    run(main)


def _frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame, by hand (to send what a well-behaved client would not)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    length = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
    if not masked:
        return head + length + payload
    mask = b"\x11\x22\x33\x44"
    return (
        head
        + bytes([0x80 | length[0]])
        + length[1:]
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


def _raw_ws(port: int, frames: list[bytes]) -> list[tuple[int, bytes]]:
    """Handshake, send ``frames``, read the server's frames until it closes:
    [(opcode, payload)]."""
    with socket.create_connection(("127.0.0.1", port), timeout=T) as s:
        s.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(b"".join(frames))
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
    out = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        start = 2
        if n == 126:
            n, start = int.from_bytes(buf[2:4], "big"), 4
        out.append((buf[0] & 0x0F, buf[start : start + n]))
        buf = buf[start + n :]
    return out


def _close_code(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big")


@pytest.mark.parametrize("codec", CODECS)
def test_websocket_pings_fragments_and_hostile_frames(codec):
    """docs/http.md, "Limits, errors": a ping is answered, a fragmented
    message arrives whole; a frame that breaks the protocol costs the peer its
    connection with the right close code -- 1002 for an unmasked client frame,
    1007 for text that is not UTF-8, 1009 for a message over max_body_size
    (also when it comes in fragments) -- and the server serves on."""
    TEXT, BIN, CONT, CLOSE, PING = 1, 2, 0, 8, 9

    async def main():
        srv = await start("h11", ws_app, ws=codec, max_body_size=1000)
        port = srv.port
        polite = await beamlet.blocking(
            _raw_ws,
            port,
            [
                _frame(PING, b"are you there"),
                _frame(TEXT, b"hel", fin=False),
                _frame(CONT, b"lo", fin=False),
                _frame(CONT, b" world"),
                _frame(BIN, b"\x00\xff"),
                _frame(CLOSE, (1000).to_bytes(2, "big") + b"bye"),
            ],
        )
        assert polite[0] == (0xA, b"are you there")  # the pong
        assert polite[1:3] == [(TEXT, b"hello world"), (BIN, b"\x00\xff")]
        assert polite[3][0] == CLOSE and _close_code(polite[3][1]) == 1000
        codes = []
        for frames in (
            [_frame(TEXT, b"not masked", masked=False)],
            [_frame(TEXT, b"\xff\xfe not utf-8")],
            [_frame(BIN, b"x" * 1001)],
            [_frame(BIN, b"x" * 600, fin=False), _frame(CONT, b"x" * 600)],
        ):
            got = await beamlet.blocking(_raw_ws, port, frames)
            assert got and got[-1][0] == CLOSE, got
            codes.append(_close_code(got[-1][1]))
        assert codes == [1002, 1007, 1009, 1009]
        assert await beamlet.blocking(get, port, "/hello") == (200, b"hello")
        await srv.stop()

    run(main)


def test_an_unknown_websocket_codec_is_refused():
    async def main():
        with pytest.raises(ValueError, match="ws must be"):
            await http.serve(app, port=0, ws="autobahn")

    run(main)


def test_a_plain_request_to_the_websocket_endpoint_fails_cleanly():
    async def main():
        srv = await start("h11", ws_app)
        status, _ = await beamlet.blocking(get, srv.port, "/ws")
        assert status == 500  # UpgradeError, reported as any handler error
        await srv.stop()

    run(main)


# ---------------------------------------------------------------- shutdown


async def _listen_socket_stopped(srv: http.Server) -> None:
    """Wait until the server's listening socket is closed (sync on its state)."""
    from beamlet.otp import which_children

    for _ in range(1000):
        children = {cid: pid for cid, pid, _ in await which_children(srv.pid)}
        if children.get("listen_socket") is None:
            return
        await beamlet.sleep(0.005)
    raise AssertionError("the listening socket is still open")


@pytest.mark.parametrize("parser", PARSERS)
def test_graceful_stop_lets_a_request_in_flight_finish_and_refuses_new_ones(parser):
    async def main():
        test = beamlet.self()

        async def slow(req: http.Request) -> http.Response:
            if req.path == "/slow":
                send(test, ("in_flight", beamlet.self()))
                await receive("finish", timeout=T)
                return http.Response(200, b"finished")
            return await app(req)

        srv = await start(parser, slow)
        idle = await net.connect("127.0.0.1", srv.port, timeout=T)  # an idle keep-alive peer
        beamlet.spawn(_blocking_to, test, _get_or_error, srv.port, "/slow")
        _, handler = await receive(("in_flight", beamlet.ANY), timeout=T)

        async def stopper() -> None:
            await srv.stop(timeout=T)
            send(test, "stopped")

        beamlet.spawn(stopper)
        await _listen_socket_stopped(srv)
        with pytest.raises(ConnectionRefusedError):
            await net.connect("127.0.0.1", srv.port, timeout=T)
        assert await net.recv(idle, 0, timeout=T) == b""  # the idle one is closed at once
        send(handler, "finish")
        _, result = await receive(("result", beamlet.ANY), timeout=T)
        assert result == (200, b"finished")
        await receive("stopped", timeout=T)
        assert beamlet.whereis(srv.name) is None

    run(main)


@pytest.mark.parametrize("codec", CODECS)
def test_stop_closes_websockets_with_1001(codec):
    async def main():
        srv = await start("h11", ws_app, ws=codec)
        c = await beamlet.blocking(WsClient, srv.port)
        await beamlet.blocking(c.send, "ping")
        assert await beamlet.blocking(c.receive) == "ping"
        await srv.stop(timeout=T)
        assert await beamlet.blocking(c.receive) == ("close", 1001)

    run(main)
