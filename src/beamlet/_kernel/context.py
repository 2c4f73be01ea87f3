"""Who is calling: the runtime of this OS process, the scheduler of this
thread, the process it runs.

The scheduler is a ContextVar rather than a threading.local: reading it costs
a third as much, and the scheduler loop then only stores ``scheduler.current``.
Each scheduler thread sets it once in its own context; other threads see None.
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beamlet._kernel.process import Process
    from beamlet._kernel.runtime import Runtime
    from beamlet._kernel.scheduler import Scheduler

scheduler_var: contextvars.ContextVar[Scheduler | None] = contextvars.ContextVar(
    "beamlet_scheduler", default=None
)
#: The scheduler whose thread this is, or None.
current_scheduler = scheduler_var.get

#: The running runtime, or None (hot paths read ``context.runtime``).
runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def current_runtime() -> Runtime:
    rt = runtime
    if rt is None:
        raise RuntimeError("no beamlet runtime is running (start one with beamlet.run(main))")
    return rt


_get_ident = threading.get_ident


def current_process() -> Process:
    # current_process_or_none, inlined: every monitor/demonitor/link/... calls it.
    s = scheduler_var.get()
    proc = s.current if s is not None and s.ident == _get_ident() else None
    if proc is None:
        raise RuntimeError("not called from a beamlet process")
    return proc


def current_process_or_none() -> Process | None:
    s = scheduler_var.get()
    if s is None or s.ident != _get_ident():
        return None
    return s.current


def install(rt: Runtime) -> None:
    global runtime
    with _runtime_lock:
        if runtime is not None:
            raise RuntimeError("a beamlet runtime is already running in this OS process")
        runtime = rt


def uninstall(rt: Runtime) -> None:
    global runtime
    with _runtime_lock:
        if runtime is rt:
            runtime = None
