"""A node to observe from another one: ``python observed_node.py NAME COOKIE EPMD_PORT``.

It exposes beamlet.observer, runs a runaway (registered "runaway"), a process
with 300 messages queued ("busy_mailbox"), a supervisor ("obs_sup") and a
"worker" that calls work(n) for each ("go", n, pid) and answers ("done", n);
it exits when "worker" gets "stop".
"""

from __future__ import annotations

import sys

import beamlet
from beamlet import Atom, observer, receive, send, spawn
from beamlet.otp import GenServer, Supervisor
from beamlet.otp.supervisor import ChildSpec


def work(n):
    return n * 2


async def runaway():
    x = 0
    while True:
        x += 1


async def waiter():
    await receive("never")


class Worker(GenServer):
    pass


async def main() -> None:
    observer.expose()
    beamlet.register("runaway", spawn(runaway))
    busy = spawn(waiter)
    beamlet.register("busy_mailbox", busy)
    for i in range(300):
        send(busy, ("junk", i))
    await Supervisor.start_link([ChildSpec("w1", (Worker.start_link, ()))], name="obs_sup")
    beamlet.register("worker", beamlet.self())
    print("ready", flush=True)
    while True:
        msg = await receive()
        if msg == "stop":
            return
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "go":
            work(msg[1])
            send(msg[2], (Atom("done"), msg[1]))


if __name__ == "__main__":
    name, cookie, epmd_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    beamlet.run(main, node=name, cookie=cookie, epmd_port=epmd_port)
