"""A beamlet node whose code another node loads over rpc:
``python code_peer.py NAME COOKIE EPMD_PORT MODULE_DIR MODULE``.

It imports MODULE (from MODULE_DIR), serves its ``Greeter`` GenServer as
"greeter", and registers "peer_main", which answers ``(pid, "expose")`` by
calling ``beamlet.code.expose()`` (code loading is refused until then) and
exits on ``"stop"``.
"""

from __future__ import annotations

import importlib
import sys

import beamlet
from beamlet import Atom, code


async def main(module_name: str) -> None:
    module = importlib.import_module(module_name)
    await module.Greeter.start(name="greeter")
    beamlet.register("peer_main", beamlet.self())
    print("ready", flush=True)
    while True:
        msg = await beamlet.receive()
        if msg == "stop":
            return
        if isinstance(msg, tuple) and len(msg) == 2 and msg[1] == "expose":
            code.expose()
            beamlet.send(msg[0], Atom("exposed"))


if __name__ == "__main__":
    name, cookie, epmd_port, module_dir, module_name = sys.argv[1:6]
    sys.path.insert(0, module_dir)
    beamlet.run(main, module_name, node=name, cookie=cookie, epmd_port=int(epmd_port))
