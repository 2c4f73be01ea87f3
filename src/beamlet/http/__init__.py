"""HTTP/1.1 and WebSocket serving where a connection is a process.

``await http.serve(app, port=...)`` serves ``async def app(req) -> Response``;
each connection is a process that serves its keep-alive requests in turn and,
after ``await req.upgrade()``, owns the WebSocket. Parsing is h11's (or
httptools'), WebSocket framing wsproto's. ``await http.serve_asgi(asgi_app,
port=...)`` hosts an ASGI 3 application (Starlette, FastAPI) through
``beamlet.aio``. The guide is docs/http.md.
"""

from beamlet.http._asgi import AsgiServer, ClientDisconnected, LifespanError, serve_asgi
from beamlet.http._parsers import ParseError
from beamlet.http._server import (
    BodyTooLarge,
    Request,
    Response,
    Server,
    UpgradeError,
    serve,
    stop,
)
from beamlet.http._websocket import Close, ConnectionClosed, WebSocket

__all__ = [
    "AsgiServer",
    "BodyTooLarge",
    "ClientDisconnected",
    "Close",
    "ConnectionClosed",
    "LifespanError",
    "ParseError",
    "Request",
    "Response",
    "Server",
    "UpgradeError",
    "WebSocket",
    "serve",
    "serve_asgi",
    "stop",
]
