"""Erlang distribution: beamlet nodes speak Erlang's protocol.

Protocol layers (sans-I/O): :mod:`~beamlet.dist.etf`, :mod:`~beamlet.dist.framing`,
:mod:`~beamlet.dist.handshake`, :mod:`~beamlet.dist.control`,
:mod:`~beamlet.dist.epmd`; sockets: :mod:`~beamlet.dist.connection`,
:mod:`~beamlet.dist.epmd_client`, :mod:`~beamlet.dist.epmd_server`; the node:
:mod:`~beamlet.dist.node`. See docs/distribution.md and docs/interop.md.
"""

from beamlet.dist.limits import Limits
from beamlet.dist.node import NodeDown, disconnect, monitor_node, nodes, start_node, stop_node
from beamlet.dist.services import connect, gen_call, ping

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
