"""Erlang distribution: beamlet nodes speak Erlang's protocol.

Protocol layers (sans-I/O): :mod:`~beamlet.distribution.etf`,
:mod:`~beamlet.distribution.framing`, :mod:`~beamlet.distribution.handshake`,
:mod:`~beamlet.distribution.control`, :mod:`~beamlet.distribution.epmd`;
sockets: :mod:`~beamlet.distribution.connection`,
:mod:`~beamlet.distribution.epmd_client`, :mod:`~beamlet.distribution.epmd_server`;
the node: :mod:`~beamlet.distribution.node`. See docs/distribution.md and
docs/interop.md.

This package never imports the OTP layer when it is imported: the node's
services (``net_kernel``, ``rex``...) and the calls that need ``gen:call``
(``connect``, ``ping``, ``gen_call``) live in :mod:`beamlet.net_kernel` and
:mod:`beamlet.rpc`; the last three load from there on first use (PEP 562).
"""

import importlib as _importlib
import typing as _typing

from beamlet.distribution.limits import Limits
from beamlet.distribution.node import (
    NodeDown,
    disconnect,
    monitor_node,
    nodes,
    start_node,
    stop_node,
)

if _typing.TYPE_CHECKING:
    from beamlet.net_kernel import connect, gen_call, ping

# Loaded by __getattr__ on first use: name -> the module that defines it.
_LAZY = {
    "connect": "beamlet.net_kernel",
    "gen_call": "beamlet.net_kernel",
    "ping": "beamlet.net_kernel",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'beamlet.distribution' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
