"""The two HTTP/1.1 parsers behind one small interface: h11 (pure Python, the
default) and httptools (llhttp, C). Sans-I/O: bytes in, events out, bytes to
send out; the connection process does the I/O.

Events from :meth:`next_event`: a :class:`Head`, ``bytes`` (a piece of the
body), :data:`END` (the request is complete), :data:`EOF` (the peer closed
between requests), or ``None`` (more bytes are needed). Malformed input
raises :class:`ParseError` with the status to answer (400, 431).
"""

from __future__ import annotations

import collections
import email.utils
import http as _stdlib_http
import re
import time
from typing import Any

import h11

#: The request is complete (all of its body was read).
END: Any = type("END", (), {"__repr__": lambda self: "END"})()
#: The peer closed the connection between requests.
EOF: Any = type("EOF", (), {"__repr__": lambda self: "EOF"})()

_REASONS = {s.value: s.phrase.encode() for s in _stdlib_http.HTTPStatus}


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


class ParseError(Exception):
    """Input that is not HTTP/1.1; ``status`` is the answer (400, 431, 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Head:
    """A request line and its headers, as parsed."""

    __slots__ = (
        "chunked",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # names in lower case
        self.keep_alive = keep_alive
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade = False
        for name, value in headers:
            if name == b"content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    raise ParseError(400, "bad content-length") from None
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"upgrade":
                self.upgrade = True


_date_cache: list[Any] = [0, b""]


def date_header() -> bytes:
    """The Date header's value, computed at most once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True).encode()
    value: bytes = _date_cache[1]
    return value


#: A header name is a token (RFC 9110 5.1); a value holds no CR, LF or NUL.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")


def _check_header(name: bytes, value: bytes) -> None:
    if _TOKEN.fullmatch(name) is None or b"\r" in value or b"\n" in value or b"\0" in value:
        raise ValueError(f"invalid response header {name!r}: {value!r}")


class Parser:
    """The interface (see the module documentation)."""

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def feed_eof(self) -> None:
        raise NotImplementedError

    def next_event(self) -> Any:
        raise NotImplementedError

    # The response writer, shared by both parsers: a response is simple to
    # write and the writer knows its framing (h11's own writer cost 23 us a
    # response, most of an h11 request's time after its parsing; measured in
    # the note of issue 15). Subclasses have ``keep_alive`` and
    # ``chunked_response`` slots.
    keep_alive: bool
    chunked_response: bool

    def response(
        self,
        head: Head,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        keep_alive: bool,
    ) -> bytes:
        """The bytes of a response: whole (``body`` given) or its head only
        (``body`` None: a stream of :meth:`chunk` calls ending with
        :meth:`end` follows). Raises ValueError for an invalid header."""
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status))]
        length: bytes | None = None
        chunked = False
        date = True
        for name, value in headers:
            _check_header(name, value)
            lname = name.lower()
            if lname == b"content-length":
                length = value
            elif lname == b"transfer-encoding":
                if body is not None or value.strip().lower() != b"chunked":
                    raise ValueError(f"transfer-encoding {value!r} is the server's to set here")
                chunked = True
            elif lname == b"date":
                date = False  # the handler's (a field given once)
            elif lname == b"connection":
                # The server's to write: the handler's "close" closes after this
                # response; nothing else it could say applies here.
                if b"close" in value.lower():
                    keep_alive = False
                continue
            parts.append(name + b": " + value + b"\r\n")
        if date:
            parts.append(b"date: " + date_header() + b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        self.keep_alive = keep_alive
        self.chunked_response = chunked
        no_content = status < 200 or status in (204, 304)  # no body, no length
        bodyless = no_content or head.method == "HEAD"  # ... or a length, no body
        if body is not None:
            if length is None:
                if not no_content:
                    parts.append(b"content-length: %d\r\n" % len(body))
            elif not bodyless and length.strip() != b"%d" % len(body):
                raise ValueError(f"content-length {length!r} for a body of {len(body)} bytes")
            parts.append(b"\r\n")
            if not bodyless:
                parts.append(body)
        else:
            if length is None and not chunked and not bodyless:
                if head.version == "1.1":
                    parts.append(b"transfer-encoding: chunked\r\n")
                    self.chunked_response = True
                else:
                    self.keep_alive = False  # the end of the stream ends the body
            parts.append(b"\r\n")
        return b"".join(parts)

    def chunk(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self.chunked_response:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def end(self) -> bytes:
        return b"0\r\n\r\n" if self.chunked_response else b""

    def informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status))]
        parts += [n + b": " + v + b"\r\n" for n, v in headers]
        parts.append(b"\r\n")
        return b"".join(parts)

    def switch(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        """The 101 response, and the bytes that came after the request."""
        raise NotImplementedError

    def next_cycle(self) -> bool:
        """After a response and the whole request: ready for the next request
        on this connection? False: close it."""
        raise NotImplementedError


# ---------------------------------------------------------------- h11


class H11Parser(Parser):
    """h11 parses the requests; responses are written by :class:`Parser`'s
    writer. Each request gets a fresh ``h11.Connection`` (fed the bytes that
    came after the previous one): h11 never sees our responses, so its
    server-side state cannot run the cycle."""

    __slots__ = ("chunked_response", "conn", "empty", "keep_alive", "max_header_size")

    def __init__(self, max_header_size: int) -> None:
        self.max_header_size = max_header_size
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_size)
        self.keep_alive = True
        self.chunked_response = False
        self.empty = True  # nothing fed since the cycle began: no event yet

    def feed(self, data: bytes) -> None:
        self.empty = False
        self.conn.receive_data(data)

    def feed_eof(self) -> None:
        self.empty = False
        try:
            self.conn.receive_data(b"")
        except h11.RemoteProtocolError as e:
            raise ParseError(400, str(e)) from None

    def next_event(self) -> Any:
        if self.empty:
            return None
        try:
            ev: Any = self.conn.next_event()
        except h11.RemoteProtocolError as e:
            raise ParseError(e.error_status_hint, str(e)) from None
        t = type(ev)
        if t is h11.Data:
            return bytes(ev.data)
        if t is h11.Request:
            # h11 already lower-cases names, and checks the framing headers.
            head = Head(
                ev.method.decode("ascii"),
                ev.target.decode("latin-1"),
                ev.http_version.decode("ascii"),
                list(ev.headers),
                True,
            )
            head.keep_alive = self.conn.their_state is not h11.MUST_CLOSE and not (
                head.version == "1.0"
                or any(n == b"connection" and b"close" in v.lower() for n, v in head.headers)
            )
            return head
        if t is h11.EndOfMessage:
            return END
        if t is h11.ConnectionClosed:
            return EOF
        return None  # NEED_DATA, PAUSED

    def switch(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        out = self.conn.send(h11.InformationalResponse(status_code=101, headers=headers)) or b""
        return out, bytes(self.conn.trailing_data[0])

    def next_cycle(self) -> bool:
        conn = self.conn
        if not self.keep_alive or conn.their_state is not h11.DONE:
            return False
        data, closed = conn.trailing_data
        self.conn = conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.max_header_size
        )
        if data:
            conn.receive_data(bytes(data))
        if closed:
            conn.receive_data(b"")
        self.empty = not data and not closed
        return True


# ---------------------------------------------------------------- httptools


class HttptoolsParser(Parser):
    """llhttp through httptools. It has no limit on a head's size: the bytes
    fed while a head is incomplete are counted here."""

    __slots__ = (
        "chunked_response",
        "events",
        "head_bytes",
        "headers",
        "in_head",
        "keep_alive",
        "leftover",
        "max_header_size",
        "method",
        "parser",
        "upgraded",
        "url",
    )

    def __init__(self, max_header_size: int) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.events: collections.deque[Any] = collections.deque()
        self.max_header_size = max_header_size
        self.in_head = False
        self.head_bytes = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.upgraded = False
        self.leftover = b""
        self.keep_alive = True
        self.chunked_response = False

    # llhttp's callbacks
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        p = self.parser
        head = Head(
            p.get_method().decode("ascii"),
            self.url.decode("latin-1"),
            p.get_http_version(),
            self.headers,
            p.should_keep_alive(),
        )
        self.events.append(head)

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.events.append(END)

    def feed(self, data: bytes) -> None:
        import httptools

        if self.upgraded:
            self.leftover += data
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.upgraded = True
            self.leftover = data[e.args[0] :]
        except httptools.HttpParserError as e:
            raise ParseError(400, f"malformed request: {e}") from None
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_header_size:
                raise ParseError(431, "request header fields too large")

    def feed_eof(self) -> None:
        if self.in_head or self.events:
            raise ParseError(400, "the peer closed in the middle of a request")
        self.events.append(EOF)

    def next_event(self) -> Any:
        events = self.events
        return events.popleft() if events else None

    def switch(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        return self.informational(101, headers), self.leftover

    def next_cycle(self) -> bool:
        return self.keep_alive and not self.upgraded


def make_parser(kind: str, max_header_size: int) -> Parser:
    if kind == "h11":
        return H11Parser(max_header_size)
    return HttptoolsParser(max_header_size)
