"""The web dashboard in a real browser: headless Chromium, driven over its
DevTools protocol (a WebSocket; the client is wsproto over a socket, on the
blocking pool), opens the page of ``observer.dashboard()`` on a node with a
runaway process (a loop that never yields) and idle ones; the process table
shows the runaway first; a click on its row shows its stack; a real mouse
click on its kill button, with the confirm dialog accepted, kills it. Screenshots (PNG) go to the test's
tmp_path and, when $BEAMLET_ARTIFACTS is set, to that directory.
Skipped when Chromium is not installed. Marker: ``browser``."""

from __future__ import annotations

import base64
import http.client as httpclient
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

import beamlet
from beamlet import ANY, Down, observer, receive
from beamlet.otp import GenServer, Supervisor

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]

T = 30.0  # bound on every wait


class DevTools:
    """A blocking client of one Chromium page's DevTools protocol. A
    JavaScript dialog (the kill button's confirm) is accepted as it opens."""

    def __init__(self, ws_url: str) -> None:
        rest = ws_url.removeprefix("ws://")
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=T)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=hostport, target="/" + path)))
        self.pending: list[Any] = []
        self.parts: list[str] = []
        self.ids = 0
        self.dialogs: list[str] = []
        while True:
            ev = self._event()
            if isinstance(ev, AcceptConnection):
                break

    def _event(self) -> Any:
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("DevTools closed the connection")
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    def _message(self) -> dict[str, Any]:
        while True:
            ev = self._event()
            if isinstance(ev, CloseConnection):
                raise ConnectionError("DevTools closed the connection")
            if isinstance(ev, Message):
                self.parts.append(ev.data)
                if ev.message_finished:
                    text = "".join(self.parts)
                    self.parts = []
                    msg: dict[str, Any] = json.loads(text)
                    return msg

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        ident = self.ids
        frame = json.dumps({"id": ident, "method": method, "params": params})
        self.sock.sendall(self.ws.send(TextMessage(data=frame)))
        while True:
            msg = self._message()
            if msg.get("method") == "Page.javascriptDialogOpening":
                self.dialogs.append(msg["params"]["message"])
                self.ids += 1
                accept = {"id": self.ids, "method": "Page.handleJavaScriptDialog"}
                accept["params"] = {"accept": True}  # type: ignore[assignment]
                self.sock.sendall(self.ws.send(TextMessage(data=json.dumps(accept))))
            elif msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = T) -> Any:
        """Poll ``expression`` in the page until it is truthy (an external
        process: polling with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never made {expression!r} true")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real click (mouse events at the element's centre)."""
        x, y = self.wait_for(
            f"""(() => {{
              const e = document.querySelector({json.dumps(selector)});
              if (!e) return null;
              e.scrollIntoView({{block: "center"}});
              const r = e.getBoundingClientRect();
              return [r.x + r.width / 2, r.y + r.height / 2];
            }})()"""
        )
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        self.call(
            "Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1
        )
        self.call(
            "Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left", clickCount=1
        )

    def screenshot(self, path: Path) -> None:
        """The whole page (not only the window) as a PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.sock.close()


def open_browser(url: str, profile: str) -> tuple[subprocess.Popen[bytes], DevTools]:
    """Start headless Chromium on ``url``; returns it and a DevTools client of its page."""
    assert CHROMIUM is not None
    browser = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--window-size=1400,1200", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": profile},
    )  # fmt: skip
    active = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + T
    while True:  # Chromium writes its DevTools port there once it listens
        lines = active.read_text().split() if active.exists() else []
        if len(lines) >= 2:
            break
        if time.monotonic() > deadline or browser.poll() is not None:
            browser.kill()
            raise RuntimeError("Chromium did not start its DevTools endpoint")
        time.sleep(0.05)
    port = int(lines[0])
    while True:
        c = httpclient.HTTPConnection("127.0.0.1", port, timeout=T)
        c.request("GET", "/json/list")
        targets = json.loads(c.getresponse().read())
        c.close()
        pages = [t for t in targets if t.get("type") == "page" and t["url"].startswith(url)]
        if pages:
            break
        if time.monotonic() > deadline:
            browser.kill()
            raise RuntimeError(f"no page for {url} in {targets}")
        time.sleep(0.05)
    devtools = DevTools(pages[0]["webSocketDebuggerUrl"])
    devtools.call("Page.enable")
    return browser, devtools


def save_artifact(path: Path) -> Path:
    """Copy ``path`` to $BEAMLET_ARTIFACTS (if set); returns where it is."""
    where = os.environ.get("BEAMLET_ARTIFACTS")
    if not where:
        return path
    Path(where).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(path, Path(where) / path.name))


async def runaway() -> None:
    n = 0
    while True:  # never awaits: only a kill stops it
        n += 1


async def idle() -> None:
    await receive()


async def worker() -> None:
    await receive()


class Cache(GenServer):
    async def init(self) -> None:
        self.data: dict[str, Any] = {}


def test_the_dashboard_shows_a_runaway_first_and_a_click_kills_it(tmp_path: Path) -> None:
    async def main() -> None:
        sup = await Supervisor.start_link([Cache, (worker, ())], name="app")
        idlers = [beamlet.spawn(idle) for _ in range(5)]
        spinner = beamlet.spawn(runaway)
        ref = beamlet.monitor(spinner)
        dash = await observer.dashboard(port=0)
        profile = tempfile.mkdtemp()
        browser, page = await beamlet.blocking(open_browser, dash.url, profile)
        try:
            # The table's first row is the runaway (ranked by cpu).
            first = await beamlet.blocking(
                page.wait_for,
                "window.dashboard?.updates >= 2 && "
                "document.querySelector('#top tbody tr')?.dataset.pid",
            )
            assert first == str(spinner)
            state = await beamlet.blocking(page.evaluate, "JSON.stringify(window.dashboard.last)")
            last = json.loads(state)
            assert last["top"][0]["pid"] == str(spinner)
            assert last["top"][0]["status"] in ("running", "runnable")
            assert last["system"]["processes"] >= 7
            assert any(root["name"] == "app" for root in last["tree"])
            await beamlet.blocking(page.wait_for, "window.dashboard.history.length >= 2")
            # A click on its row shows its info and stack.
            await beamlet.blocking(page.click, f'tr[data-pid="{spinner}"] td')
            stack = await beamlet.blocking(
                page.wait_for,
                "!document.getElementById('details').hidden && "
                "document.getElementById('dstack').textContent",
            )
            assert "runaway \u2014 " in stack and "test_dashboard_browser.py" in stack
            shot = tmp_path / "dashboard.png"
            await beamlet.blocking(page.screenshot, shot)
            save_artifact(shot)
            # A real click on its kill button; the confirm dialog is accepted.
            await beamlet.blocking(page.click, f'button.kill[data-pid="{spinner}"]')
            down = await receive(Down(ref, ANY, ANY), timeout=T)
            assert down.reason == "killed"
            assert not beamlet.is_alive(spinner)
            assert len(page.dialogs) == 1 and str(spinner) in page.dialogs[0]
            kills = await beamlet.blocking(page.wait_for, "window.dashboard.kills.length && "
                                           "JSON.stringify(window.dashboard.kills)")  # fmt: skip
            assert json.loads(kills) == [
                {"type": "kill", "pid": str(spinner), "ok": True, "error": None}
            ]
            # The next update no longer shows it.
            await beamlet.blocking(
                page.wait_for,
                f"!document.querySelector('tr[data-pid=\"{spinner}\"]') && "
                "window.dashboard.updates >= 3",
            )
            after = tmp_path / "dashboard-killed.png"
            await beamlet.blocking(page.screenshot, after)
            save_artifact(after)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert all(beamlet.is_alive(p) for p in idlers)
        finally:
            page.close()
            browser.kill()
            browser.wait()
            shutil.rmtree(profile, ignore_errors=True)
            beamlet.exit(spinner, "kill")
        await dash.stop()
        beamlet.unlink(sup)
        beamlet.exit(sup, "shutdown")

    run(main)
