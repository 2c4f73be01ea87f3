"""A tour of beamlet's kernel: processes, messages, links, monitors, trapped exits.

Run it with ``python -m examples.kernel_tour``. Each step prints what happened.
"""

from __future__ import annotations

import logging

import beamlet
from beamlet import ANY, Down, Exit, receive, send, spawn, spawn_link, spawn_monitor


async def counter(total: int = 0) -> None:
    """A process holding state: adds numbers, answers ("get", sender)."""
    while True:
        match await receive():
            case ("add", n):
                total += n
            case ("get", sender):
                send(sender, ("total", total))
            case "crash":
                raise RuntimeError("counter asked to crash")


async def worker(n: int) -> int:
    if n == 3:
        raise ValueError(f"worker {n} failed")
    await receive()  # wait forever
    return n


async def restarter(parent: beamlet.Pid) -> None:
    """Trap exits and restart a crashing counter: a supervisor in ten lines."""
    beamlet.process_flag("trap_exit", True)
    child = spawn_link(counter)
    beamlet.register("counter", child)
    send(parent, ("ready", child))
    while True:
        match await receive(Exit):
            case Exit(pid, reason) if pid == child:
                print(f"  restarter: counter {pid} exited ({reason!r}), restarting it")
                child = spawn_link(counter)
                beamlet.register("counter", child)
                send(parent, ("ready", child))


async def main() -> None:
    me = beamlet.self()
    print(f"main is {me}")

    print("1. messages: a counter process keeps state")
    c = spawn(counter)
    for n in (1, 2, 3):
        send(c, ("add", n))
    send(c, ("get", me))
    print("  counter says", await receive(("total", ANY)))

    print("2. monitors: watch a process die without dying with it")
    pid, ref = spawn_monitor(worker, 3)
    down = await receive(Down(ref, pid, ANY))
    print(f"  {pid} went down: {down.reason!r}")

    print("3. links: a crash takes the linked group down, a trapping process survives")
    beamlet.process_flag("trap_exit", True)
    group = spawn_link(group_leader)
    ex = await receive(Exit(group, ANY))
    print(f"  the group leader {group} exited with {ex.reason!r}")

    print("4. restart: a trapping process restarts what crashes, under the same name")
    spawn(restarter, me)
    _, first = await receive(("ready", ANY))
    send("counter", "crash")
    _, second = await receive(("ready", ANY))
    send("counter", ("add", 40))
    send("counter", ("get", me))
    total = await receive(("total", ANY))
    print(f"  'counter' was {first}, is now {second}; it answers {total}")

    print("5. introspection")
    info = beamlet.process_info(second)
    assert info is not None
    print(
        f"  {second}: status={info['status']} queue={info['message_queue_len']} "
        f"links={info['links']} name={info['registered_name']!r}"
    )
    print(f"  {len(beamlet.processes())} processes alive; names: {beamlet.registered()}")
    print("main returns: every other process is killed and run() returns")


async def group_leader() -> None:
    for n in range(5):
        spawn_link(worker, n)  # worker 3 crashes: every linked process dies
    await receive()


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)  # the crashes above are on purpose
    beamlet.run(main)
