"""A WebSocket chat on beamlet.http: each connection is a process, each room is
a process. Run it and open http://127.0.0.1:8080/ in two browser tabs:

    python -m examples.http_chat [port]

A room keeps its members (the connection processes) and monitors them, so a
closed tab leaves the room by itself; a connection forwards what its browser
types to its room and what the room says to its browser, from one mailbox.
"""

from __future__ import annotations

import sys
from typing import Any

import beamlet
from beamlet import Down, http, receive, send

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>beamlet chat</title></head>
<body>
<h1>beamlet chat</h1>
<ul id="log"></ul>
<form id="f"><input id="msg" autocomplete="off"><button>send</button></form>
<script>
const room = new URLSearchParams(location.search).get("room") || "lobby";
const ws = new WebSocket(`ws://${location.host}/ws/${room}`);
const log = document.getElementById("log");
const seen = [];
ws.onopen = () => ws.send(new URLSearchParams(location.search).get("say") || "hello");
ws.onmessage = (e) => {
  seen.push(e.data);
  const li = document.createElement("li");
  li.textContent = e.data;
  log.appendChild(li);
  const want = new URLSearchParams(location.search).get("report_after");
  if (want && e.data.endsWith(want)) {
    fetch("/result", {method: "POST", body: JSON.stringify(seen)});
  }
};
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault();
  const input = document.getElementById("msg");
  ws.send(input.value);
  input.value = "";
};
</script>
</body></html>
"""


async def room(name: str) -> None:
    """A chat room: ("join", pid) adds a member, ("say", who, text) goes to
    every member as ("said", who, text); a member that ends leaves."""
    members: dict[beamlet.Pid, beamlet.Ref] = {}
    while True:
        msg = await receive()
        match msg:
            case ("join", pid):
                members[pid] = beamlet.monitor(pid)
            case ("say", who, text):
                for pid in members:
                    send(pid, ("said", who, text))
            case Down(pid=pid):
                members.pop(pid, None)


def room_pid(name: str) -> beamlet.Pid:
    """The room's process, started on first use (registered as room:<name>)."""
    key = f"room:{name}"
    while True:
        pid = beamlet.whereis(key)
        if pid is not None:
            return pid
        pid = beamlet.spawn(room, name)
        try:
            beamlet.register(key, pid)
            return pid
        except beamlet.BadArg:  # another connection registered it first
            beamlet.exit(pid, "kill")


async def app(req: http.Request) -> http.Response:
    if req.path == "/":
        return http.Response.html(PAGE)
    if req.path.startswith("/ws/"):
        chat = room_pid(req.path[len("/ws/") :])
        ws = await req.upgrade()  # this process now owns the WebSocket
        who = "{}:{}".format(*(req.client or ("?", 0)))
        send(chat, ("join", ws.pid))
        while True:
            msg: Any = await ws.receive()
            match msg:
                case str(text):  # from the browser
                    send(chat, ("say", who, text))
                case ("said", author, text):  # from the room
                    await ws.send(f"{author}: {text}")
                case http.Close():
                    return http.Response(200)
    return http.Response(404, b"not found\n")


async def main(port: int = 8080) -> None:
    server = await http.serve(app, port=port)
    print(f"chat on http://127.0.0.1:{server.port}/", flush=True)
    await receive()  # serve until interrupted


if __name__ == "__main__":
    beamlet.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
