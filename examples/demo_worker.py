"""The demo's second node: computes /work requests for the web node over rpc.

    python -m examples.demo_worker --node demo_worker@127.0.0.1 --cookie demo [--epmd-port P]

It exposes ``rpc:call(Node, demo_worker, work, [N])`` (and the observer, when
beamlet.observer is installed, so ``beamlet top`` works on it too), prints
``ready <node>`` once it is a node, and runs until it is told to stop
(``demo_worker:stop``), killed, or its standard input closes: the demo starts it
with a pipe there, so it never outlives the demo, even one that was killed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import traceback
from typing import Any

import beamlet
from beamlet import receive, rpc
from examples import demo_handlers


def work(n: Any) -> tuple[int, str]:
    """The same computation as the web node's local /work: (result, this node)."""
    if not isinstance(n, int) or not 0 <= n <= 1_000_000:
        raise ValueError(f"n must be an int in 0..1000000, not {n!r}")
    return demo_handlers.work(n), str(beamlet.node())


def _exit_when_stdin_closes() -> None:
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


async def main() -> None:
    beamlet.register("demo_worker", beamlet.self())
    rpc.expose("demo_worker", "work", work)
    rpc.expose("demo_worker", "stop", lambda: beamlet.send("demo_worker", "stop") and "ok")
    try:
        from beamlet import observer

        observer.expose()
    except (ImportError, AttributeError):  # beamlet.observer is optional here
        pass
    print(f"ready {beamlet.node()}", flush=True)
    await receive("stop")


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m examples.demo_worker", description=__doc__)
    p.add_argument("--node", default="demo_worker@127.0.0.1")
    p.add_argument("--cookie", default="demo")
    p.add_argument("--epmd-port", type=int, default=None)
    p.add_argument(
        "--orphan-ok",
        action="store_true",
        help="keep running when standard input closes (default: exit then)",
    )
    args = p.parse_args(argv)
    if args.orphan_ok:
        beamlet.run(main, node=args.node, cookie=args.cookie, epmd_port=args.epmd_port)
        return
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    status = 0
    try:
        beamlet.run(main, node=args.node, cookie=args.cookie, epmd_port=args.epmd_port)
    except BaseException:
        traceback.print_exc()
        status = 1
    # os._exit: the thread blocked reading stdin would abort a normal interpreter exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    cli()
