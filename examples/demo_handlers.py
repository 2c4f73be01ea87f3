"""The demo system's request handlers (examples/demo_system.py).

This module is what the demo upgrades while it serves: the ``Pricing`` server's
callbacks live here, and beamlet.code resolves them at each message, so loading
a new version of this module (``beamlet.code.load``, here over rpc) changes what
the running server does at its next request, without a restart.

The bug: ``quote`` divides by the quantity, so ``/price?item=cup&qty=0`` crashes
the server (its supervisor restarts it). The fix (examples/demo_fix.py) replaces the
line marked ``# the bug`` below.
"""

from __future__ import annotations

from typing import Any

import beamlet
from beamlet.otp import GenServer

VSN = 1

PRICES = {"cup": 300, "pen": 120, "lamp": 2500}


def quote(price: int, qty: int) -> dict[str, Any]:
    """The price of ``qty`` items of unit price ``price`` (cents): one in ten is free."""
    free = qty // 10
    total = price * (qty - free)
    per_item = total // qty  # the bug: qty == 0 divides by zero
    return {"qty": qty, "total": total, "per_item": per_item, "vsn": VSN}


class Pricing(GenServer):
    """Quotes prices: ``call("pricing", ("quote", item, qty))``."""

    async def init(self) -> None:
        self.quotes = 0

    async def handle_call(self, request: Any, from_: Any) -> Any:
        match request:
            case ("quote", item, qty):
                self.quotes += 1
                return {"item": item, **quote(PRICES[item], qty)}
            case "vsn":
                return VSN
        return None


def work(n: int) -> int:
    """A little CPU work: the /work endpoint (locally or on the worker node)."""
    return sum(i * i % 7 for i in range(n))


def spin() -> None:
    """Never returns, never waits: the runaway request handler (/spin)."""
    x = 0
    while True:
        x += 1


def node() -> str:
    return str(beamlet.node() or "nonode@nohost")
