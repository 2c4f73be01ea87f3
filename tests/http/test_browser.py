"""A real browser (headless Chromium) opens the WebSocket chat page of
examples/http_chat.py, exchanges messages with a room, and reports what it saw
with a POST. Skipped when Chromium is not installed. Marker: ``browser``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest
from examples import http_chat
from tests.conftest import run

import beamlet
from beamlet import ANY, http, receive, send

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]

T = 60.0


def test_a_browser_chats_over_the_websocket_with_a_room_process():
    async def main():
        test = beamlet.self()

        async def app(req: http.Request) -> http.Response:
            if req.path == "/result":
                send(test, ("result", await req.json()))
                return http.Response(204)
            return await http_chat.app(req)

        srv = await http.serve(app, port=0)
        chat = http_chat.room_pid("browser-test")
        send(chat, ("join", test))  # this process is a member of the room too
        profile = tempfile.mkdtemp()
        url = (
            f"http://127.0.0.1:{srv.port}/?room=browser-test&say=hi%20from%20chromium"
            "&report_after=hi%20browser"
        )
        assert CHROMIUM is not None
        browser = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": profile},
        )  # fmt: skip
        try:
            _, who, _ = await receive(("said", ANY, "hi from chromium"), timeout=T)
            send(chat, ("say", "test", "hi browser"))
            _, seen = await receive(("result", ANY), timeout=T)
        finally:
            browser.kill()
            browser.wait()
            shutil.rmtree(profile, ignore_errors=True)
        assert seen == [f"{who}: hi from chromium", "test: hi browser"], json.dumps(seen)
        await srv.stop()

    run(main)
