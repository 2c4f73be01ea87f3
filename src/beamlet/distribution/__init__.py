"""Erlang distribution: beamlet nodes speak Erlang's protocol.

Protocol layers (sans-I/O): :mod:`~beamlet.distribution.etf`, :mod:`~beamlet.distribution.framing`,
:mod:`~beamlet.distribution.handshake`, :mod:`~beamlet.distribution.control`,
:mod:`~beamlet.distribution.epmd`; sockets: :mod:`~beamlet.distribution.connection`,
:mod:`~beamlet.distribution.epmd_client`, :mod:`~beamlet.distribution.epmd_server`; the node:
:mod:`~beamlet.distribution.node`. See docs/distribution.md and docs/interop.md.
"""

from beamlet.distribution.limits import Limits
from beamlet.distribution.node import (
    NodeDown,
    disconnect,
    monitor_node,
    nodes,
    start_node,
    stop_node,
)
from beamlet.distribution.services import connect, gen_call, ping

__all__ = [
    "Limits",
    "NodeDown",
    "connect",
    "disconnect",
    "gen_call",
    "monitor_node",
    "nodes",
    "ping",
    "start_node",
    "stop_node",
]
