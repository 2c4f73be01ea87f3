"""A beamlet node for tests that need one in its own OS process:
``python target_node.py NAME COOKIE EPMD_PORT [NOFILE]``.

With NOFILE, the process may hold at most that many file descriptors
(RLIMIT_NOFILE), so a flood of connections exhausts them. It prints
``ready PORT`` once listening, logs to stderr, and stops when stdin closes.
"""

from __future__ import annotations

import logging
import resource
import sys

import beamlet
from beamlet.distribution.limits import Limits
from beamlet.distribution.node import start_node, stop_node


async def main(name: str, cookie: str, epmd_port: int) -> None:
    # many handshakes allowed: the descriptors run out first
    node = start_node(name, cookie, epmd_port=epmd_port, limits=Limits(max_handshakes=100_000))

    def serve_until_stdin_closes() -> None:
        # "ready" from here: the thread pool (and its lazy imports) exists
        # before a test floods the process out of descriptors
        print("ready", node.port, flush=True)
        sys.stdin.read()

    try:
        await beamlet.blocking(serve_until_stdin_closes)
    finally:
        stop_node()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    name, cookie, epmd_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if len(sys.argv) > 4:
        n = int(sys.argv[4])
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )
    beamlet.run(main, name, cookie, epmd_port)
