"""beamlet: the BEAM's process model for Python.

Lightweight isolated processes (``async def`` functions) that share nothing and
talk by message passing; scheduler threads; links, monitors and exit signals
with Erlang's semantics. Start with :func:`run`.

The distribution layer and the OTP behaviours load on first use: ``import
beamlet`` pays for neither until a node starts or one of their names
(``beamlet.rpc``, ``beamlet.otp``, ``beamlet.ping``, ...) is touched.
"""

import importlib as _importlib
import typing as _typing

from beamlet._boot import run
from beamlet._kernel.api import (
    Statistics,
    alias,
    blocking,
    cancel_timer,
    demonitor,
    exit,
    is_alive,
    link,
    make_ref,
    monitor,
    node,
    process_flag,
    process_info,
    processes,
    receive,
    register,
    registered,
    self,
    send,
    send_after,
    sleep,
    spawn,
    spawn_link,
    spawn_monitor,
    statistics,
    unalias,
    unlink,
    unregister,
    whereis,
)
from beamlet._kernel.call import call_local
from beamlet._kernel.copying import register_immutable
from beamlet._kernel.process import ANY, BadArg, Down, Exit, ProcessExit
from beamlet.terms import Atom, Pid, Ref

if _typing.TYPE_CHECKING:
    from beamlet import aio as aio
    from beamlet import distribution as distribution
    from beamlet import http as http
    from beamlet import net as net
    from beamlet import net_kernel as net_kernel
    from beamlet import otp as otp
    from beamlet import rpc as rpc
    from beamlet.distribution import NodeDown, disconnect, monitor_node, nodes
    from beamlet.net_kernel import connect, ping

# Loaded by __getattr__ on first use: name -> the module that defines it (a
# submodule is its own module). They import the names above from this package.
_LAZY = {
    "aio": "beamlet.aio",
    "NodeDown": "beamlet.distribution",
    "connect": "beamlet.net_kernel",
    "disconnect": "beamlet.distribution",
    "monitor_node": "beamlet.distribution",
    "nodes": "beamlet.distribution",
    "ping": "beamlet.net_kernel",
    "distribution": "beamlet.distribution",
    "http": "beamlet.http",
    "net": "beamlet.net",
    "net_kernel": "beamlet.net_kernel",
    "otp": "beamlet.otp",
    "rpc": "beamlet.rpc",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'beamlet' has no attribute {name!r}")
    loaded = _importlib.import_module(module)
    value = loaded if module == f"beamlet.{name}" else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "ANY",
    "Atom",
    "BadArg",
    "Down",
    "Exit",
    "NodeDown",
    "Pid",
    "ProcessExit",
    "Ref",
    "Statistics",
    "alias",
    "blocking",
    "call_local",
    "cancel_timer",
    "connect",
    "demonitor",
    "disconnect",
    "exit",
    "is_alive",
    "link",
    "make_ref",
    "monitor",
    "monitor_node",
    "node",
    "nodes",
    "ping",
    "process_flag",
    "process_info",
    "processes",
    "receive",
    "register",
    "register_immutable",
    "registered",
    "run",
    "self",
    "send",
    "send_after",
    "sleep",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "statistics",
    "unalias",
    "unlink",
    "unregister",
    "whereis",
]
