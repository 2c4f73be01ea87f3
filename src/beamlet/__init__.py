"""beamlet: the BEAM's process model for Python.

Lightweight isolated processes (``async def`` functions) that share nothing and
talk by message passing; scheduler threads; links, monitors and exit signals
with Erlang's semantics. Start with :func:`run`.
"""

from beamlet._kernel.api import (
    Statistics,
    blocking,
    cancel_timer,
    demonitor,
    exit,
    is_alive,
    link,
    make_ref,
    monitor,
    process_flag,
    process_info,
    processes,
    receive,
    register,
    registered,
    run,
    self,
    send,
    send_after,
    sleep,
    spawn,
    spawn_link,
    spawn_monitor,
    statistics,
    unlink,
    unregister,
    whereis,
)
from beamlet._kernel.copying import register_immutable
from beamlet._kernel.process import ANY, BadArg, Down, Exit, ProcessExit
from beamlet.terms import Atom, Pid, Ref

__all__ = [
    "ANY",
    "Atom",
    "BadArg",
    "Down",
    "Exit",
    "Pid",
    "ProcessExit",
    "Ref",
    "Statistics",
    "blocking",
    "cancel_timer",
    "demonitor",
    "exit",
    "is_alive",
    "link",
    "make_ref",
    "monitor",
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
    "unlink",
    "unregister",
    "whereis",
]
