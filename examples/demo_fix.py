"""Loads the demo's fix into a running demo node, over the wire (step 5 of
examples/demo_system.py): a hidden node of its own that calls
``rpc:call(Node, beamlet_code, load, ["examples.demo_handlers", Source])`` with the
fixed source of examples/demo_handlers.py, prints the answer and exits (status 0 if
the node loaded it).

    python -m examples.demo_fix demo@127.0.0.1 --cookie demo [--epmd-port P]

The node must allow it (``beamlet.code.expose()``, which the demo calls).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import beamlet
from beamlet import rpc

HANDLERS = "examples.demo_handlers"
#: The fix: this line of examples/demo_handlers.py, replaced.
BUG = "    per_item = total // qty  # the bug: qty == 0 divides by zero\n"
FIX = "    per_item = total // qty if qty else 0  # fixed: no item, no price\n"


def fixed_source() -> str:
    """examples/demo_handlers.py with the fix, as version 2."""
    source = (Path(__file__).resolve().parent / "demo_handlers.py").read_text()
    if BUG not in source:
        raise RuntimeError(f"examples/demo_handlers.py no longer has the bug line {BUG!r}")
    return source.replace(BUG, FIX).replace("VSN = 1\n", "VSN = 2\n")


def loaded(result: Any) -> bool:
    """Is ``result`` beamlet_code:load's success, ``{module, Name}``?"""
    return type(result) is tuple and len(result) == 2 and result[0] == "module"


async def main(target: str) -> int:
    result = await rpc.call(target, "beamlet_code", "load", [HANDLERS, fixed_source()], timeout=10)
    print(repr(result), flush=True)
    return 0 if loaded(result) else 1


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.demo_fix", description=__doc__)
    p.add_argument("target", help="the demo's node, e.g. demo@127.0.0.1")
    p.add_argument("--cookie", default="demo")
    p.add_argument("--epmd-port", type=int, default=None)
    args = p.parse_args(argv)
    host = args.target.partition("@")[2] or "127.0.0.1"
    return int(
        beamlet.run(
            main,
            args.target,
            node=f"demo_fix_{os.getpid()}@{host}",
            cookie=args.cookie,
            hidden=True,
            epmd_port=args.epmd_port,
        )
    )


if __name__ == "__main__":
    sys.exit(cli())
