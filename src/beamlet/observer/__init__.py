"""Walking into a running node: which process hogs a scheduler, whose mailbox
grows, where it is, what it calls; then kill it (docs/observer.md).

Every function returns plain data that survives the External Term Format
unchanged (dicts with ``str`` keys, lists, tuples, numbers, strings, None,
bools, pids), so :func:`expose` makes the same calls available to other nodes
with the same answers: ``rpc:call(Node, beamlet_observer, top, [])`` from an
Erlang shell, ``await beamlet.rpc.call(node, "beamlet_observer", "top", [])``
from another beamlet node. A process is described by a *row*::

    {"pid": Pid, "name": str | None, "initial_call": "module.qualname/arity",
     "current": "function (file:line)" | None, "status": "running" | "runnable"
     | "waiting" | "exiting", "cpu": float, "cpu_pct": float, "reductions": int,
     "memory": int, "msgq": int}

Semantics: docs/semantics.md, "Observer" (OBS-1 ...).
"""

from __future__ import annotations

import heapq
import itertools
import os
import resource
import sys
import threading
import time
import weakref
from collections.abc import Callable
from itertools import compress, repeat
from operator import attrgetter, sub
from typing import TYPE_CHECKING, Any

import beamlet
from beamlet._kernel import introspection, signals
from beamlet._kernel.context import current_process_or_none, current_runtime
from beamlet._kernel.parker import GIL
from beamlet._kernel.process import DEAD, STATUS_NAMES, BadArg, Process
from beamlet._kernel.sysmon import recent_util
from beamlet.observer._trace import trace
from beamlet.terms import Atom, Pid

if TYPE_CHECKING:
    from beamlet._kernel.runtime import Runtime

#: What :func:`top` ranks by.
RANKINGS = ("cpu", "memory", "msgq", "reductions")
#: The rpc module name :func:`expose` registers the functions under.
RPC_MODULE = "beamlet_observer"
#: Longest window :func:`top` waits.
MAX_WINDOW = 60.0
#: Most rows :func:`top` returns.
MAX_ROWS = 10_000
#: Processes whose full memory estimate samples memory.processes in system().
MEMORY_SAMPLE = 256


# ---------------------------------------------------------------------- arguments


def _rt() -> Runtime:
    return current_runtime()


def _text(value: Any, what: str) -> str:
    """A str argument, also as an Erlang charlist (a list of ints) or binary."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and all(type(c) is int for c in value):
        try:
            return "".join(map(chr, value))
        except (ValueError, OverflowError):
            pass
    raise BadArg(f"{what} must be a string, got {value!r}")


def _number(value: Any, what: str, low: float, high: float) -> float:
    if type(value) is bool or not isinstance(value, int | float):
        raise BadArg(f"{what} must be a number, got {value!r}")
    if not low <= value <= high:
        raise BadArg(f"{what} must be between {low} and {high}, got {value!r}")
    return float(value)


def _process(rt: Runtime, pid: Any) -> Process | None:
    """The record of ``pid`` (a Pid, or a registered name), None if it is not alive."""
    if type(pid) is not Pid:
        if isinstance(pid, str | bytes | list):
            name = _text(pid, "a process")
            found = rt.whereis(name)
            if found is None:
                return None
            pid = found
        else:
            raise BadArg(f"expected a pid or a registered name, got {pid!r}")
    proc = rt.lookup(pid)
    if proc is None or proc.state >= DEAD:
        return None
    return proc


# ---------------------------------------------------------------------- rows


def _frames(rt: Runtime, proc: Process) -> list[dict[str, Any]]:
    stack = introspection.process_stack(rt, proc, proc.state)
    return [{"file": f.filename, "line": f.lineno or 0, "function": f.name} for f in stack]


def _current(frames: list[dict[str, Any]]) -> str | None:
    if not frames:
        return None
    f = frames[-1]
    return f"{f['function']} ({os.path.basename(f['file'])}:{f['line']})"


def _initial_call(proc: Process) -> str:
    module, name, arity = introspection.initial_call(proc.initial_call)
    return f"{module}.{name}/{arity}"


def _row(
    rt: Runtime, proc: Process, cpu: float, reductions: int, window: float | None
) -> dict[str, Any]:
    frames = _frames(rt, proc)
    return {
        "pid": proc.pid,
        "name": proc.name,
        "initial_call": _initial_call(proc),
        "current": _current(frames),
        "status": STATUS_NAMES[min(proc.state, DEAD)],
        "cpu": cpu,
        "cpu_pct": cpu / window * 100.0 if window else 0.0,
        "reductions": reductions,
        "memory": introspection.memory(proc),
        "msgq": introspection.message_queue_len(proc),
    }


def _live(rt: Runtime) -> list[Process]:
    table = rt.table
    procs: list[Process] = introspection.snapshot(lambda: list(table.values()))
    return procs


# ---------------------------------------------------------------------- the views


async def top(by: str = "cpu", n: int = 10, window: float = 1.0) -> list[dict[str, Any]]:
    """The ``n`` processes using the most ``by`` (cpu, memory, msgq or
    reductions), as rows, largest first (OBS-1).

    ``cpu`` and ``reductions`` are what each process used during ``window``
    seconds (two snapshots of every process, recon's proc_window); ``cpu_pct``
    is ``cpu`` over the window, in percent of one scheduler. ``memory`` and
    ``msgq`` are ranked as they are at the end of the window. The caller
    waits ``window`` seconds in a receive, it does not hold its scheduler.
    """
    by = _text(by, "by")
    if by not in RANKINGS:
        raise BadArg(f"top ranks by one of {', '.join(RANKINGS)}, got {by!r}")
    if type(n) is not int or not 0 < n <= MAX_ROWS:
        raise BadArg(f"n must be an int in 1..{MAX_ROWS}, got {n!r}")
    window = _number(window, "window", 0.0, MAX_WINDOW)
    rt = _rt()
    first = _Snapshot(_live(rt))
    started = time.perf_counter()
    if window > 0:
        await beamlet.sleep(window)
    elapsed = time.perf_counter() - started
    procs = _live(rt)
    aligned = first.procs == procs  # (identity compares: a C loop)
    extra = n + 8  # a process may die before its row is made
    if by == "cpu" or by == "reductions":
        if by == "cpu":
            now_cpu = list(map(_get_runtime, procs))
            if aligned:
                used: list[Any] = list(map(sub, now_cpu, first.runtimes))
            else:
                ran = first.ran()
                used = list(map(sub, now_cpu, map(ran.get, procs, repeat(0.0))))
        else:
            now_red = list(map(_get_reductions, procs))
            if aligned:
                used = list(map(sub, now_red, first.reductions))
            else:
                counted = first.counted()
                used = list(map(sub, now_red, map(counted.get, procs, repeat(0))))
        chosen = heapq.nlargest(extra, range(len(procs)), key=used.__getitem__)
    else:
        # Only processes with something in their mailbox can rank above the
        # rest: find them without a Python call per process.
        queues = list(map(_get_queue, procs))
        inboxes = list(map(_get_inbox, procs))
        everyone = range(len(procs))
        busy = sorted(set(compress(everyone, queues)).union(compress(everyone, inboxes)))
        if len(busy) < 4 * n:  # too few: fill in with others (memory: frames count too)
            have = set(busy)
            busy += itertools.islice((i for i in everyone if i not in have), 4 * n)
        if by == "msgq":
            chosen = heapq.nlargest(extra, busy, key=lambda i: _msgq_fast(procs[i]))
        else:
            # A shortlist by mailbox size (cheap), then the full estimate:
            # every process's frames would cost a look at each.
            shortlist = heapq.nlargest(max(4 * n, 64), busy, key=lambda i: _msgq_fast(procs[i]))
            chosen = heapq.nlargest(extra, shortlist, key=lambda i: introspection.memory(procs[i]))
    rows = []
    for i in chosen:
        p = procs[i]
        if p.state >= DEAD:
            continue
        if aligned:
            cpu0, red0 = first.runtimes[i], first.reductions[i]
        else:
            cpu0, red0 = first.ran().get(p, 0.0), first.counted().get(p, 0)
        rows.append(_row(rt, p, max(0.0, p.runtime - cpu0), p.reductions - red0, elapsed))
        if len(rows) == n:
            break
    if by == "msgq":
        rows.sort(key=lambda r: r["msgq"], reverse=True)
    return rows


class _Snapshot:
    """What top's first look keeps: the processes in table order, their
    runtimes and reductions (C-level maps over a list: 100,000 processes in a
    few milliseconds); dicts by process are built only if the table changed
    in between, the runtimes' only over processes that ever ran."""

    def __init__(self, procs: list[Process]) -> None:
        self.procs = procs
        self.runtimes = list(map(_get_runtime, procs))
        self.reductions = list(map(_get_reductions, procs))
        self._ran: dict[Process, float] | None = None
        self._counted: dict[Process, int] | None = None

    def ran(self) -> dict[Process, float]:
        if self._ran is None:
            rts = self.runtimes
            self._ran = dict(zip(compress(self.procs, rts), filter(None, rts), strict=True))
        return self._ran

    def counted(self) -> dict[Process, int]:
        if self._counted is None:
            self._counted = dict(zip(self.procs, self.reductions, strict=True))
        return self._counted


_get_runtime = attrgetter("runtime")
_get_reductions = attrgetter("reductions")
_get_queue = attrgetter("queue")
_get_inbox = attrgetter("inbox")


def _msgq_fast(proc: Process) -> int:
    q = proc.queue
    inbox = proc.inbox
    return (len(q) if q else 0) + (len(inbox) if inbox else 0)


def processes() -> list[dict[str, Any]]:
    """A row for every live process (``cpu`` and ``reductions`` are totals;
    ``cpu_pct`` is 0). Costs a stack and a memory estimate per process: for
    small systems; :func:`top` for big ones (OBS-2)."""
    rt = _rt()
    return [_row(rt, p, p.runtime, p.reductions, None) for p in _live(rt) if p.state < DEAD]


def info(pid: Any) -> dict[str, Any] | None:
    """process_info of ``pid`` (a Pid or a registered name) as plain data, or
    None if it is not alive: the row's keys (totals) plus ``links``,
    ``monitors``, ``monitored_by``, ``trap_exit``, ``stack`` (as
    :func:`stack`) and ``sockets`` (OBS-2)."""
    rt = _rt()
    proc = _process(rt, pid)
    if proc is None:
        return None
    raw = introspection.process_info(rt, proc)
    if raw is None:
        return None
    frames = [
        {"file": f.filename, "line": f.lineno or 0, "function": f.name}
        for f in raw["current_stacktrace"]
    ]
    module, name, arity = raw["initial_call"]
    return {
        "pid": proc.pid,
        "name": raw["registered_name"],
        "initial_call": f"{module}.{name}/{arity}",
        "current": _current(frames),
        "status": raw["status"],
        "cpu": raw["runtime"],
        "cpu_pct": 0.0,
        "reductions": raw["reductions"],
        "memory": raw["memory"],
        "msgq": raw["message_queue_len"],
        "links": list(raw["links"]),
        "monitors": [_plain_target(m) for m in raw["monitors"]],
        "monitored_by": [m for m in raw["monitored_by"] if type(m) is Pid],
        "trap_exit": bool(raw["trap_exit"]),
        "stack": frames,
        "sockets": [_plain_socket(s) for s in raw["sockets"]],
    }


def _plain_target(target: Any) -> Any:
    if type(target) is Pid:
        return target
    if type(target) is tuple:
        return tuple(_plain_target(t) for t in target)
    return str(target)


def _plain_socket(info: dict[str, Any]) -> dict[str, Any]:
    out = dict(info)
    for key in ("local", "peer"):
        addr = out.get(key)
        if addr is not None and not (
            type(addr) is tuple and all(type(a) in (str, int) for a in addr)
        ):
            out[key] = str(addr)
    return out


def stack(pid: Any) -> list[dict[str, Any]] | None:
    """The stack of ``pid``, outermost call first, each frame ``{"file",
    "line", "function"}``: where a waiting process waits, the frames a running
    one executes now (on a free-threaded build, only its function, unless it
    waits); None if it is not alive (OBS-3)."""
    rt = _rt()
    proc = _process(rt, pid)
    if proc is None:
        return None
    return _frames(rt, proc)


def sockets() -> list[dict[str, Any]]:
    """The node's open beamlet.net sockets (as ``beamlet.net.sockets()``)."""
    rt = _rt()
    out = []
    for port in list(rt.ports.values()):
        describe = getattr(port, "info", None)
        if describe is None:
            continue
        d = describe()
        if not d.get("closed"):
            out.append(_plain_socket(d))
    return out


def kill(pid: Any, reason: Any = "kill") -> bool:
    """Send ``pid`` an exit signal (``"kill"``: untrappable, even for a
    process that never yields: kill.py). True if it was alive (OBS-6)."""
    rt = _rt()
    proc = _process(rt, pid)
    if proc is None:
        return False
    if isinstance(reason, str):
        reason = str(reason)  # an Atom from Erlang: the same reason
    signals.exit_signal(rt, current_process_or_none(), proc.pid, reason)
    return True


# ---------------------------------------------------------------------- the tree


def tree() -> list[dict[str, Any]]:
    """The supervision trees: a node ``{"pid", "name", "id", "type",
    "restarts", "children"}`` per supervisor and child; the roots are the
    supervisors no supervisor of this node supervises (OBS-4).

    Read from each supervisor's state as it is now, without asking it (a
    supervisor busy restarting children still shows)."""
    from beamlet.observer import _tree

    return _tree.tree(_rt())


# ---------------------------------------------------------------------- the system


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _process_memory(procs: list[Process]) -> int:
    if not procs:
        return 0
    step = max(1, len(procs) // MEMORY_SAMPLE)
    sample = procs[::step]
    return int(sum(map(introspection.memory, sample)) * len(procs) / len(sample))


def system() -> dict[str, Any]:
    """The node at a glance (OBS-5): schedulers and their recent utilisation
    (``utilization`` 0..1 over about the last second: busy scheduler threads,
    runaways' included, over ``schedulers``), run queue, processes, memory
    (``total``: the OS process's RSS; ``processes``: an estimate from a
    sample), sysmon's hand-offs, socket I/O, uptime."""
    rt = _rt()
    stats = introspection.statistics(rt)
    now = time.perf_counter()
    scheds = list(rt.schedulers)
    sched_info = []
    busy = 0.0
    for s in scheds:
        u = max(0.0, min(1.0, recent_util(s, now)))
        busy += u
        cur = s.current
        sched_info.append(
            {
                "index": s.index,
                "utilization": u,
                "handed_off": bool(s.handed_off),
                "current": cur.pid if cur is not None and cur.state < DEAD else None,
            }
        )
    name = str(rt.distribution.node_name())
    ports = list(rt.ports.values())
    released = rt.io_released
    return {
        "node": None if name == "nonode@nohost" else name,
        "uptime": time.monotonic() - rt.sysmon.started,
        "schedulers": rt.n_schedulers,
        "scheduler_info": sched_info,
        "utilization": min(1.0, busy / max(1, rt.n_schedulers)),
        "utilization_since_start": stats.utilization,
        "run_queue": stats.run_queue,
        "processes": stats.processes,
        "threads": stats.threads,
        "held_by_runaways": stats.held_by_runaways,
        "memory": {"total": _rss(), "processes": _process_memory(_live(rt))},
        "hand_offs": stats.hand_offs,
        "io": {
            "bytes_in": released[0] + sum(getattr(p, "bytes_in", 0) for p in ports),
            "bytes_out": released[1] + sum(getattr(p, "bytes_out", 0) for p in ports),
            "sockets": sum(1 for p in ports if not getattr(p, "closed", False)),
        },
        "python": sys.version.split()[0],
        "gil": bool(GIL),
        "metrics": _metrics_of(rt),
    }


# ---------------------------------------------------------------------- metrics

#: Most application figures a node publishes with :func:`set_metric`.
MAX_METRICS = 64
_metrics: weakref.WeakKeyDictionary[Runtime, dict[str, float]] = weakref.WeakKeyDictionary()
_metrics_lock = threading.Lock()


def set_metric(name: str, value: float) -> None:
    """Publish an application figure (say ``"http req/s"``) of this node:
    ``system()["metrics"]`` carries it, the dashboard and ``beamlet top`` show
    it. At most :data:`MAX_METRICS` names of 1..64 characters; the value an
    int or a float (not NaN)."""
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise BadArg(f"a metric name is a str of 1..64 characters, got {name!r}")
    if type(value) not in (int, float) or value != value:
        raise BadArg(f"a metric value is an int or a float, got {value!r}")
    rt = _rt()
    with _metrics_lock:
        mine = _metrics.setdefault(rt, {})
        if name not in mine and len(mine) >= MAX_METRICS:
            raise BadArg(f"at most {MAX_METRICS} metrics")
        mine[name] = float(value)


def _metrics_of(rt: Runtime) -> dict[str, float]:
    with _metrics_lock:
        return dict(_metrics.get(rt, ()))


# ---------------------------------------------------------------------- rpc


def _rpc_top(by: Any = "cpu", n: Any = 10, window: Any = 1.0) -> Any:
    return top(_default(by, "cpu"), _default(n, 10), _default(window, 1.0))


def _default(value: Any, default: Any) -> Any:
    """Erlang's ``[]`` (an empty list) or ``undefined`` for "the default"."""
    if value == [] or (type(value) is Atom and value == "undefined"):
        return default
    return value


def _rpc_trace(target: Any, max: Any = 50, timeout: Any = 1.0, to: Any = None) -> Any:
    to = _default(to, None)
    if to is None:
        # The rpc's own process ends with the call: nobody would get the events.
        raise BadArg(
            "trace over rpc needs the pid that gets the events: [Target, Max, Timeout, Pid]"
        )
    if isinstance(target, list):
        target = _text(target, "target")  # an Erlang string: a function's name
    return trace(target, _default(max, 50), _default(timeout, 1.0), to=to)


def _rpc_kill(pid: Any, reason: Any = "kill") -> bool:
    return kill(pid, _default(reason, "kill"))


_RPC: dict[str, Callable[..., Any]] = {
    "top": _rpc_top,
    "processes": processes,
    "info": info,
    "stack": stack,
    "tree": tree,
    "system": system,
    "trace": _rpc_trace,
    "sockets": sockets,
    "kill": _rpc_kill,
}


def expose() -> None:
    """Let other nodes call these functions: ``rpc:call(Node,
    beamlet_observer, Fun, Args)`` (off by default: the node's rpc exposure
    policy). Idempotent (OBS-7)."""
    from beamlet import rpc

    for name, fn in _RPC.items():
        rpc.expose(RPC_MODULE, name, fn)


def unexpose() -> None:
    """Undo :func:`expose`."""
    from beamlet import rpc

    for name in _RPC:
        rpc.unexpose(RPC_MODULE, name)


# ---------------------------------------------------------------------- lazy parts

_LAZY = {
    "dashboard": "beamlet.observer._dashboard",
    "allow_remote_shell": "beamlet.observer._shell",
    "forbid_remote_shell": "beamlet.observer._shell",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'beamlet.observer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "RANKINGS",
    "RPC_MODULE",
    "expose",
    "info",
    "kill",
    "processes",
    "set_metric",
    "sockets",
    "stack",
    "system",
    "top",
    "trace",
    "tree",
    "unexpose",
]
