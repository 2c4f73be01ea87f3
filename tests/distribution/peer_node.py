"""A second beamlet node for the beamlet<->beamlet tests: ``python peer_node.py NAME COOKIE EPMD_PORT``.

It serves a GenServer named "kv", an "echo" process, and exits when "echo" gets "stop".
"""

from __future__ import annotations

import sys

import beamlet
from beamlet import Atom, receive, send
from beamlet.otp import GenServer


class KV(GenServer):
    async def init(self) -> None:
        self.data: dict = {}

    async def handle_call(self, request, from_):  # type: ignore[no-untyped-def]
        op, *rest = request
        if op == "put":
            self.data[rest[0]] = rest[1]
            return Atom("ok")
        if op == "get":
            return self.data.get(rest[0])
        if op == "crash":
            raise RuntimeError("kv asked to crash")
        return None


async def main() -> None:
    await KV.start(name="kv")
    beamlet.register("echo", beamlet.self())
    print("ready", flush=True)
    while True:
        msg = await receive()
        if msg == "stop":
            return
        sender, body = msg
        send(sender, (Atom("echo"), body))  # atoms, not str: str travels as a binary


if __name__ == "__main__":
    name, cookie, epmd_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    beamlet.run(main, node=name, cookie=cookie, epmd_port=epmd_port)
