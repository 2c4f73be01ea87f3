"""The demo system: a small supervised service that breaks and heals itself.

Run: ``bash scripts/demo.sh`` (or ``python -m examples.demo_system``).

- a ``Supervisor`` (one_for_one) runs an ``Inventory`` GenServer, a
  DynamicSupervisor of order workers, and a ``Monitor`` that watches the rest;
- orders are placed concurrently; a bad order crashes its worker, and the
  inventory is restarted by its supervisor after a crash, re-registering its
  name, while callers carry on;
- a worker stuck in a busy loop does not freeze anything (sysmon hands its
  thread off) and is killed on the spot;
- at the end the system is introspected, then shut down.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import beamlet
from beamlet import ANY, Down, receive, send, spawn_monitor
from beamlet.otp import (
    DynamicSupervisor,
    GenServer,
    ServerExit,
    Supervisor,
    call,
    which_children,
)


def say(*parts: object) -> None:
    print("  ", *parts, flush=True)


class Inventory(GenServer):
    async def init(self) -> None:
        self.stock = {"apple": 5, "pear": 2}
        say(f"inventory {beamlet.self()} started with {self.stock}")

    async def handle_call(self, request, from_):  # type: ignore[no-untyped-def]
        match request:
            case ("take", item, n):
                have = self.stock.get(item, 0)
                if n > have:
                    return ("error", f"only {have} {item}(s) left")
                self.stock[item] = have - n
                return ("ok", self.stock[item])
            case "stock":
                return dict(self.stock)
            case "corrupt":
                raise RuntimeError("inventory state corrupted")


async def order_worker(customer: str, item: str, n: int, parent: beamlet.Pid) -> None:
    if n < 0:
        raise ValueError(f"{customer} ordered {n} {item}s")
    result = await call("inventory", ("take", item, n))
    send(parent, ("order", customer, result))


async def runaway(parent: beamlet.Pid) -> None:
    send(parent, ("runaway", beamlet.self()))
    x = 0
    while True:  # never awaits
        x += 1


async def main() -> None:
    me = beamlet.self()
    print(f"1. starting the system (main is {me})")
    app = await Supervisor.start_link(
        [
            {"id": "inventory", "start": (partial(Inventory.start_link, name="inventory"), ())},
            {"id": "orders", "start": (DynamicSupervisor.start_link, ()), "type": "supervisor"},
        ],
        strategy="one_for_one",
        intensity=3,
        period=5,
        name="app",
    )
    # Inventory registers its name at every (re)start: callers use the name.
    orders = dict((cid, pid) for cid, pid, _ in await which_children(app))["orders"]

    print("2. three concurrent orders, one of them bad")
    for customer, item, n in [("ann", "apple", 2), ("bob", "pear", 1), ("eve", "apple", -3)]:
        await DynamicSupervisor.start_child(
            orders,
            {
                "id": customer,
                "start": (_spawn_worker, (customer, item, n, me)),
                "restart": "temporary",
            },
        )
    for _ in range(2):
        _, customer, result = await receive(("order", ANY, ANY), timeout=10)
        say(f"{customer}: {result}")
    say("eve's worker crashed alone (temporary child, not restarted); the others were served")

    print("3. the inventory crashes; its supervisor restarts it")
    old = beamlet.whereis("inventory")
    ref = beamlet.monitor(old)
    try:
        await call("inventory", "corrupt")
    except ServerExit as e:
        say(f"the caller got ServerExit: {e.reason!r}")
    await receive(Down(ref, ANY, ANY), timeout=10)
    await which_children(app)  # a call: the supervisor has handled the restart by now
    new = beamlet.whereis("inventory")
    say(f"inventory {old} -> {new}; stock is fresh again: {await call('inventory', 'stock')}")

    print("4. a runaway process never freezes the others, and kill stops it")
    pid, ref = spawn_monitor(runaway, me)
    await receive(("runaway", ANY), timeout=10)
    t0 = time.monotonic()
    served = [await call("inventory", "stock") for _ in range(100)]
    say(f"100 calls served in {1000 * (time.monotonic() - t0):.0f} ms while {pid} spins")
    info = beamlet.process_info(pid) or {}
    stack = " > ".join(f.name for f in info.get("current_stacktrace", []))
    say(f"process_info: status={info.get('status')} stack={stack}")
    beamlet.exit(pid, "kill")
    down = await receive(Down(ref, ANY, ANY), timeout=10)
    say(f"killed: {down.reason!r}; stats: {beamlet.statistics().hand_offs} hand-off(s)")
    del served

    print("5. the live system")
    for name in sorted(beamlet.registered()):
        p = beamlet.whereis(name)
        i = beamlet.process_info(p) if p else None
        if i:
            say(
                f"{name:10} {p}  {i['status']:8} links={len(i['links'])} queue={i['message_queue_len']}"
            )
    say(f"{len(beamlet.processes())} processes alive")
    print("6. main returns: everything is shut down")


async def _spawn_worker(customer: str, item: str, n: int, parent: beamlet.Pid) -> beamlet.Pid:
    return beamlet.spawn_link(order_worker, customer, item, n, parent)


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)  # the crashes above are on purpose
    beamlet.run(main)
