"""The web dashboard's server without a browser: its WebSocket protocol
(hello, updates, sort, kill, errors), its bounds, the Host and Origin checks,
its arguments, its stop, and a dashboard of a remote node (a second OS
process) through ``rpc.call(node, "beamlet_observer", ...)``.

The clients are blocking sockets (wsproto, http.client) on the blocking pool;
every wait is bounded by a socket timeout or a receive timeout.
"""

from __future__ import annotations

import http.client as httpclient
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

import beamlet
from beamlet import ANY, Down, observer, receive, send
from beamlet.observer import _dashboard

T = 15.0  # bound on every wait
ROOT = Path(__file__).resolve().parents[2]


class Client:
    """A blocking WebSocket client of the dashboard (for the blocking pool)."""

    def __init__(self, port: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T)
        self.ws = WSConnection(ConnectionType.CLIENT)
        req = Request(host=f"127.0.0.1:{port}", target="/ws", extra_headers=headers or [])
        self.sock.sendall(self.ws.send(req))
        self.pending: list[Any] = []
        ev = self._event()
        if isinstance(ev, RejectConnection):
            self.rejected: int | None = ev.status_code
            return
        assert isinstance(ev, AcceptConnection), ev
        self.rejected = None

    def _event(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("the dashboard closed the connection")
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    def send(self, msg: Any) -> None:
        if isinstance(msg, bytes):
            ev: Any = BytesMessage(data=msg)
        else:
            ev = TextMessage(data=msg if isinstance(msg, str) else json.dumps(msg))
        self.sock.sendall(self.ws.send(ev))

    def receive(self) -> Any:
        """The next message, decoded; ``("close", code)`` for a close."""
        parts: list[str] = []
        while True:
            ev = self._event()
            if isinstance(ev, CloseConnection):
                return ("close", ev.code)
            if isinstance(ev, Message):
                parts.append(ev.data)
                if ev.message_finished:
                    return json.loads("".join(parts))

    def until(self, pred: Any, timeout: float = T) -> Any:
        """Messages until one satisfies ``pred``; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.receive()
            if isinstance(msg, tuple):
                raise AssertionError(f"closed while waiting: {msg}")
            if pred(msg):
                return msg
        raise AssertionError("no such message in time")

    def close(self) -> None:
        self.sock.close()


def get(port: int, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    c = httpclient.HTTPConnection("127.0.0.1", port, timeout=T)
    c.request("GET", path, headers={"Host": host} if host else {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


async def sleeper() -> None:
    await receive(("never",))  # its mailbox only grows


def is_dashboard(root: dict[str, Any]) -> bool:
    """A root of the supervision trees that is a dashboard's http server."""
    return (root["name"] or "").startswith("beamlet.observer.dashboard.")


def is_update(msg: dict[str, Any]) -> bool:
    return msg["type"] == "update"


# ---------------------------------------------------------------- the protocol


def test_updates_sort_and_kill_over_the_websocket() -> None:
    async def main() -> None:
        hog = beamlet.spawn(sleeper)
        for i in range(300):
            send(hog, ("job", i))
        ref = beamlet.monitor(hog)
        dash = await observer.dashboard(port=0, interval=0.2)
        assert dash.url == f"http://127.0.0.1:{dash.port}/" and dash.node is None
        c = await beamlet.blocking(_dashboard_client, dash.port)
        hello = await beamlet.blocking(c.receive)
        assert hello == {
            "type": "hello",
            "node": None,
            "by": "cpu",
            "n": 20,
            "interval": 0.2,
            "sort_keys": ["cpu", "memory", "msgq", "reductions"],
            "max_rows": 100,
        }
        update = await beamlet.blocking(c.until, is_update)
        assert update["by"] == "cpu" and "error" not in update
        assert set(update) >= {"type", "by", "node", "top", "system", "tree", "time"}
        row = update["top"][0]
        assert set(row) == {
            "pid", "name", "initial_call", "current", "status", "cpu", "cpu_pct",
            "reductions", "memory", "msgq",
        }  # fmt: skip
        assert all(isinstance(r["pid"], str) and r["pid"].startswith("<") for r in update["top"])
        system = update["system"]
        assert system["processes"] >= 5 and system["schedulers"] == 2
        assert set(system["memory"]) >= {"total", "processes"}
        assert set(system["io"]) >= {"bytes_in", "bytes_out", "sockets"}
        assert any(is_dashboard(root) for root in update["tree"])
        # Sort by message queue: the answer, then updates ranked by it.
        await beamlet.blocking(c.send, {"type": "sort", "by": "msgq", "n": 5})
        assert await beamlet.blocking(c.until, lambda m: m["type"] == "sort") == {
            "type": "sort",
            "by": "msgq",
            "n": 5,
        }
        ranked = await beamlet.blocking(c.until, lambda m: is_update(m) and m["by"] == "msgq")
        assert len(ranked["top"]) == 5
        assert ranked["top"][0]["pid"] == str(hog) and ranked["top"][0]["msgq"] == 300
        # Its info and stack, as the page shows them when its row is clicked.
        await beamlet.blocking(c.send, {"type": "info", "pid": str(hog)})
        info = await beamlet.blocking(c.until, lambda m: m["type"] == "info")
        assert (info["pid"], info["error"]) == (str(hog), None)
        assert info["info"]["msgq"] == 300 and info["info"]["status"] == "waiting"
        assert info["info"]["stack"][0]["function"] == "sleeper"
        assert info["info"]["initial_call"].endswith(".sleeper/0")
        # Kill it from the page's table.
        await beamlet.blocking(c.send, {"type": "kill", "pid": str(hog)})
        answer = await beamlet.blocking(c.until, lambda m: m["type"] == "kill")
        assert answer == {"type": "kill", "pid": str(hog), "ok": True, "error": None}
        down = await receive(Down(ref, ANY, ANY), timeout=T)
        assert down.reason == "killed" and not beamlet.is_alive(hog)
        # A pid the table did not show cannot be killed: the next update
        # does not show the dead process.
        await beamlet.blocking(
            c.until, lambda m: is_update(m) and str(hog) not in {r["pid"] for r in m["top"]}
        )
        await beamlet.blocking(c.send, {"type": "kill", "pid": str(hog)})
        refused = await beamlet.blocking(c.until, lambda m: m["type"] == "kill")
        assert refused == {
            "type": "kill",
            "pid": str(hog),
            "ok": False,
            "error": "not a pid of the table shown",
        }
        await beamlet.blocking(c.send, {"type": "info", "pid": str(hog)})
        refused = await beamlet.blocking(c.until, lambda m: m["type"] == "info")
        assert refused == {
            "type": "info",
            "pid": str(hog),
            "info": None,
            "error": "not a pid of the table shown",
        }
        await beamlet.blocking(c.close)
        await dash.stop()

    run(main)


def _dashboard_client(port: int) -> Client:
    return Client(port)


def test_bad_requests_get_an_error_and_a_big_message_closes_the_socket() -> None:
    async def main() -> None:
        dash = await observer.dashboard(port=0, interval=0.2)
        c = await beamlet.blocking(_dashboard_client, dash.port)
        assert (await beamlet.blocking(c.receive))["type"] == "hello"
        cases = [
            ("not json", "requests are JSON text"),
            (b"\x00binary", "requests are JSON text"),
            ("[1, 2]", "a request is an object with a type"),
            ({"type": "dance"}, "unknown request type 'dance'"),
            ({"type": "sort", "by": "age"}, "by must be one of cpu, memory, msgq, reductions"),
            ({"type": "sort", "by": "cpu", "n": 0}, "n must be an int from 1 to 100"),
            ({"type": "sort", "by": "cpu", "n": 101}, "n must be an int from 1 to 100"),
        ]
        for request, error in cases:
            await beamlet.blocking(c.send, request)
            got = await beamlet.blocking(c.until, lambda m: m["type"] == "error")
            assert got == {"type": "error", "error": error}, request
        await beamlet.blocking(c.send, {"type": "kill", "pid": 42})
        got = await beamlet.blocking(c.until, lambda m: m["type"] == "kill")
        assert got == {
            "type": "kill",
            "pid": 42,
            "ok": False,
            "error": "not a pid of the table shown",
        }
        # Over the 4 KiB bound: closed with 1009 (message too big).
        await beamlet.blocking(c.send, "x" * (_dashboard.MAX_MESSAGE + 1))
        while True:
            msg = await beamlet.blocking(c.receive)
            if isinstance(msg, tuple):
                break
        assert msg == ("close", 1009)
        await beamlet.blocking(c.close)
        await dash.stop()

    run(main)


def _waiting_handshake(port: int) -> socket.socket:
    """A raw connection that sends a WebSocket handshake and reads nothing yet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=T)
    ws = WSConnection(ConnectionType.CLIENT)
    s.sendall(ws.send(Request(host=f"127.0.0.1:{port}", target="/ws")))
    return s


def _answered_within(s: socket.socket, timeout: float) -> bytes | None:
    s.settimeout(timeout)
    try:
        return s.recv(12)
    except TimeoutError:
        return None


def test_at_most_max_connections_are_served_the_next_wait() -> None:
    async def main() -> None:
        dash = await observer.dashboard(port=0, interval=0.5)
        clients = []
        for _ in range(_dashboard.MAX_CONNECTIONS):
            c = await beamlet.blocking(_dashboard_client, dash.port)
            assert (await beamlet.blocking(c.receive))["type"] == "hello"
            clients.append(c)
        extra = await beamlet.blocking(_waiting_handshake, dash.port)
        # In the backlog: not served while 16 connections run (a bounded wait
        # for what must not happen).
        assert await beamlet.blocking(_answered_within, extra, 0.3) is None
        await beamlet.blocking(clients.pop().close)
        answer = await beamlet.blocking(_answered_within, extra, T)
        assert answer == b"HTTP/1.1 101"
        extra.close()
        for c in clients:
            await beamlet.blocking(c.close)
        await dash.stop()

    run(main)


def test_the_page_is_self_contained_and_foreign_hosts_and_origins_are_refused() -> None:
    async def main() -> None:
        dash = await observer.dashboard(port=0)
        status, headers, body = await beamlet.blocking(get, dash.port, "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in headers["content-security-policy"]
        page = body.decode()
        assert "<canvas" in page and "new WebSocket" in page
        assert "http://" not in page and "https://" not in page  # nothing fetched elsewhere
        assert "innerHTML" not in page  # data is set as text, never parsed as HTML
        assert (await beamlet.blocking(get, dash.port, "/nothing"))[0] == 404
        # DNS rebinding: a page of evil.example resolved to 127.0.0.1.
        status, _, _ = await beamlet.blocking(get, dash.port, "/", f"evil.example:{dash.port}")
        assert status == 403
        for ok_host in (f"localhost:{dash.port}", f"127.0.0.1:{dash.port}", "localhost"):
            assert (await beamlet.blocking(get, dash.port, "/", ok_host))[0] == 200
        # A cross-site WebSocket (another page the browser has open): refused.
        evil = [(b"Origin", b"http://evil.example")]
        c = await beamlet.blocking(Client, dash.port, evil)
        assert c.rejected == 403
        await beamlet.blocking(c.close)
        same = [(b"Origin", f"http://127.0.0.1:{dash.port}".encode())]
        c = await beamlet.blocking(Client, dash.port, same)
        assert c.rejected is None and (await beamlet.blocking(c.receive))["type"] == "hello"
        await beamlet.blocking(c.close)
        await dash.stop()

    run(main)


def test_stop_closes_the_websockets_and_the_port() -> None:
    async def main() -> None:
        dash = await observer.dashboard(port=0, interval=0.2)
        ref = beamlet.monitor(dash.pid)
        c = await beamlet.blocking(_dashboard_client, dash.port)
        assert (await beamlet.blocking(c.receive))["type"] == "hello"
        await dash.stop()
        await receive(Down(ref, ANY, ANY), timeout=T)
        while True:
            msg = await beamlet.blocking(c.receive)
            if isinstance(msg, tuple):
                break
        assert msg == ("close", 1001)
        await beamlet.blocking(c.close)
        with pytest.raises(ConnectionRefusedError):
            await beamlet.blocking(socket.create_connection, ("127.0.0.1", dash.port), T)

    run(main)


def test_the_dashboard_outlives_its_caller_and_restarts_its_server() -> None:
    async def main() -> None:
        test = beamlet.self()

        async def starter() -> None:
            port = free_port()  # a given port (with 0 a restart could get another)
            send(test, ("dash", await observer.dashboard(port=port, interval=0.2)))

        beamlet.spawn(starter)
        _, dash = await receive(("dash", ANY), timeout=T)  # its caller has ended
        assert (await beamlet.blocking(get, dash.port, "/"))[0] == 200
        # The http server's tree dies: the supervisor starts it again, same port.
        (listener,) = [r["pid"] for r in observer.tree() if is_dashboard(r)]
        ref = beamlet.monitor(listener)
        beamlet.exit(listener, "kill")
        await receive(Down(ref, ANY, ANY), timeout=T)
        c = await beamlet.blocking(_retrying_client, dash.port)
        assert (await beamlet.blocking(c.receive))["type"] == "hello"
        await beamlet.blocking(c.close)
        await dash.stop()

    run(main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _retrying_client(port: int) -> Client:
    deadline = time.monotonic() + T
    while True:  # the restarted server binds again
        try:
            return Client(port)
        except ConnectionError:  # refused, or reset by the dying listener
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"port": -1}, "port must be an int from 0 to 65535"),
        ({"port": "4000"}, "port must be an int from 0 to 65535"),
        ({"host": ""}, "host must be a host name or address"),
        ({"interval": 0}, "interval must be seconds from 0.1 to 60"),
        ({"node": "nohost"}, "node must be a node name like 'py@127.0.0.1'"),
        ({"cookie": "c"}, "cookie is for reaching a remote node: give node too"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: str) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match=error):
            await observer.dashboard(**kwargs)

    run(main)


def test_a_port_in_use_is_a_clear_error() -> None:
    async def main() -> None:
        dash = await observer.dashboard(port=0)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{dash.port}"):
            await observer.dashboard(port=dash.port)
        await dash.stop()

    run(main)


def test_listening_beyond_loopback_is_said_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        dash = await observer.dashboard(port=0, host="0.0.0.0")
        try:
            assert dash.url == f"http://0.0.0.0:{dash.port}/"
            # Not loopback: any Host is answered (the caller chose to be reachable).
            assert (await beamlet.blocking(get, dash.port, "/", "box.lan"))[0] == 200
        finally:
            await dash.stop()

    with caplog.at_level(logging.WARNING, logger="beamlet.observer"):
        run(main)
    assert any("not on a loopback address" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- a remote node

PEER = textwrap.dedent(
    """
    import sys
    import beamlet
    from beamlet import observer

    async def hog():
        await beamlet.receive(("never",))

    async def main():
        observer.expose()
        pid = beamlet.spawn(hog)
        beamlet.register("hog", pid)
        for i in range(200):
            beamlet.send(pid, i)
        print("ready", pid, flush=True)
        await beamlet.receive(("stop",))

    beamlet.run(main, node=sys.argv[1], cookie=sys.argv[2])
    """
)


def test_a_dashboard_of_a_remote_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from beamlet.distribution.epmd_server import EPMDServer

    epmd = EPMDServer("127.0.0.1", 0).start()
    monkeypatch.setenv("ERL_EPMD_PORT", str(epmd.port))
    name = f"dashpeer{os.getpid()}@127.0.0.1"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, name, "dash-cookie"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert peer.stdout is not None
        line = peer.stdout.readline()
        assert line.startswith("ready"), peer.stderr.read() if peer.stderr else line

        async def main() -> None:
            with pytest.raises(ValueError, match="node must be"):
                await observer.dashboard(port=0, node="bad")
            dash = await observer.dashboard(port=0, node=name, cookie="dash-cookie", interval=0.2)
            assert dash.node == name
            c = await beamlet.blocking(_dashboard_client, dash.port)
            assert (await beamlet.blocking(c.receive))["node"] == name
            await beamlet.blocking(c.send, {"type": "sort", "by": "msgq"})
            update = await beamlet.blocking(c.until, lambda m: is_update(m) and m["by"] == "msgq")
            assert "error" not in update, update["error"]
            assert update["system"]["node"] == name
            top = update["top"][0]
            assert (top["name"], top["msgq"]) == ("hog", 200)
            hog = beamlet.monitor(("hog", name))
            await beamlet.blocking(c.send, {"type": "kill", "pid": top["pid"]})
            answer = await beamlet.blocking(c.until, lambda m: m["type"] == "kill")
            assert answer == {"type": "kill", "pid": top["pid"], "ok": True, "error": None}
            down = await receive(Down(hog, ANY, ANY), timeout=T)
            assert down.reason == "killed"
            await beamlet.blocking(c.close)
            await dash.stop()  # and the node it made of this runtime
            assert beamlet.node() == "nonode@nohost"

        run(main)
    finally:
        peer.kill()
        peer.communicate(timeout=10)  # (and closes its pipes)
        epmd.stop()


def test_an_unreachable_node_shows_as_an_error_in_the_updates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from beamlet.distribution.epmd_server import EPMDServer

    epmd = EPMDServer("127.0.0.1", 0).start()
    monkeypatch.setenv("ERL_EPMD_PORT", str(epmd.port))
    try:

        async def main() -> None:
            nobody = f"nobody{os.getpid()}@127.0.0.1"
            dash = await observer.dashboard(port=0, node=nobody, cookie="c", interval=0.2)
            c = await beamlet.blocking(_dashboard_client, dash.port)
            update = await beamlet.blocking(c.until, is_update)
            assert "noconnection" in update["error"], update
            assert "top" not in update
            await beamlet.blocking(c.close)
            await dash.stop()

        run(main)
    finally:
        epmd.stop()
