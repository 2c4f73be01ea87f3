"""observer.tree(): the supervision trees of this node, read from each
supervisor's state.

A supervisor is a GenServer process (gen_server's ``_serve`` under gen's
``_starter``) whose server object is a supervisor (``_Supervising``). Its
state is read, not asked for: ``tree()`` is a plain function, and a
supervisor busy restarting children still shows. Reading it from another
thread is safe with the GIL (what is read is copied, with a retry); on a
free-threaded build only a supervisor that is waiting is read, under its lock
(introspection.look_at_coroutine), so one busy at that moment is left out.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from beamlet._kernel import introspection
from beamlet._kernel.process import DEAD, Process
from beamlet.terms import Pid

if TYPE_CHECKING:
    from beamlet._kernel.runtime import Runtime


def _supervisor_state(proc: Process, serve_code: Any, sup_class: type) -> Any:
    """The supervisor object a process serves, or None."""

    def look(coro: Any) -> Any:
        obj = coro
        for _ in range(4):
            frame = getattr(obj, "cr_frame", None)
            if frame is None:
                return None
            if frame.f_code is serve_code:
                server = frame.f_locals.get("server")
                return server if isinstance(server, sup_class) else None
            obj = introspection.awaited(obj)
        return None

    return introspection.look_at_coroutine(proc, look, lambda coro: None)


def _children(server: Any) -> list[tuple[Any, Pid | None, str]]:
    def read() -> list[tuple[Any, Pid | None, str]]:
        return [(c.spec.id, c.pid, c.spec.type) for c in list(server._children())]

    result: list[tuple[Any, Pid | None, str]] = introspection.snapshot(read)
    return result


def _restarts(server: Any) -> int:
    count = getattr(server, "restart_count", None)
    if type(count) is int:
        return count
    # Restarts within the supervisor's intensity period (what it keeps).
    restarts = getattr(server, "restarts", None)
    return len(restarts) if restarts is not None else 0


def tree(rt: Runtime) -> list[dict[str, Any]]:
    gen = sys.modules.get("beamlet.otp.gen")
    gen_server = sys.modules.get("beamlet.otp.gen_server")
    supervisor = sys.modules.get("beamlet.otp.supervisor")
    if gen is None or gen_server is None or supervisor is None:
        return []  # no supervisor was ever started
    starter_code = gen._starter.__code__
    serve_code = gen_server._serve.__code__
    sup_class = supervisor._Supervising
    sups: dict[Pid, tuple[Process, Any]] = {}
    table = rt.table
    procs: list[Process] = introspection.snapshot(lambda: list(table.values()))
    for proc in procs:
        coro = proc.coro
        if coro is None or getattr(coro, "cr_code", None) is not starter_code:
            continue
        if proc.state >= DEAD:
            continue
        server = _supervisor_state(proc, serve_code, sup_class)
        if server is not None:
            sups[proc.pid] = (proc, server)
    kids = {pid: _children(server) for pid, (_proc, server) in sups.items()}
    supervised = {child for children in kids.values() for (_id, child, _t) in children}

    def name_of(pid: Pid | None) -> str | None:
        if pid is None:
            return None
        proc = rt.lookup(pid)
        return proc.name if proc is not None else None

    def node(pid: Pid | None, child_id: Any, kind: str, depth: int) -> dict[str, Any]:
        entry = sups.get(pid) if pid is not None else None
        children = []
        restarts = 0
        if entry is not None and depth < 64:
            restarts = _restarts(entry[1])
            children = [node(c, i, t, depth + 1) for (i, c, t) in kids.get(pid, [])]  # type: ignore[arg-type]
        return {
            "pid": pid,
            "name": name_of(pid),
            "id": None if child_id is None else str(child_id),
            "type": "supervisor" if entry is not None else kind,
            "restarts": restarts,
            "children": children,
        }

    return [node(pid, None, "supervisor", 0) for pid in sups if pid not in supervised]
