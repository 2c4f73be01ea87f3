"""beamlet: the BEAM's process model for Python.

Lightweight isolated processes (``async def`` functions) that share nothing and
talk by message passing; scheduler threads; links, monitors and exit signals
with Erlang's semantics. Start with :func:`run`.
"""

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
from beamlet._kernel.copying import register_immutable
from beamlet._kernel.process import ANY, BadArg, Down, Exit, ProcessExit
from beamlet.terms import Atom, Pid, Ref

# isort: off
# Last: beamlet.dist and beamlet.otp import the names above from this package.
from beamlet.dist import NodeDown, connect, disconnect, monitor_node, nodes, ping
# isort: on

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
