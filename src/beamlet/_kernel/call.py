"""gen:call's round trip to a local process as one kernel operation.

OTP's gen:call is four kernel operations: ``monitor(server, alias="demonitor")``,
``send``, a ``receive`` of the reply or the DOWN (with a timeout), and
``demonitor(ref, flush=True)``. Done one by one from Python they cost four
scheduler look-ups, two holds of the server's lock, the call's receive
patterns and their matching. :func:`call_local` does the same steps, with the
same effects, in one go for a local pid: the monitor and the request reach
the server under one hold of its lock (signals.monitor_and_send), and while
nothing else is queued the caller waits for the reply in the hand-off slot
and recognises it by its tag. Anything else -- a DOWN, another message, the
timeout, a kill -- goes to the general :func:`traps.receive` with the same
patterns, which sees the same mailbox; the end is :func:`signals.demonitor`
and the flush of ``api.demonitor``. docs/semantics.md ("A local call").
"""

from __future__ import annotations

import time
import types
from collections.abc import Generator
from typing import Any

from beamlet._kernel import signals
from beamlet._kernel.context import current_scheduler
from beamlet._kernel.copying import _leaves, copy_message
from beamlet._kernel.process import ANY, EXITING, NOTHING, WAIT, BadArg, Down, Process
from beamlet._kernel.traps import arm_timer, cannot_wait, flush_down, receive
from beamlet.terms import Atom, Pid

_ALIAS = Atom("alias")
_monotonic = time.monotonic
_WAIT = WAIT


@types.coroutine
def call_local(
    server: Pid, label: Any, request: Any, timeout: float | None
) -> Generator[int, None, Any]:
    """OTP's gen:call to the local pid ``server``, as one operation:
    ``ref = monitor(server, alias="demonitor")``; send ``(label, (self(),
    ("alias", ref)), request)``; receive ``(("alias", ref), reply)`` or
    ``Down(ref, _, _)``, raising ``TimeoutError`` after ``timeout`` seconds
    (None: no limit); ``demonitor(ref, flush=True)``. Returns the reply
    message or the Down. (The kernel half of :func:`beamlet.otp.call`.)"""
    if type(server) is not Pid or server.node is not None:
        raise BadArg(f"call_local needs a local pid, got {server!r}")
    sched = current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        raise cannot_wait("call_local", sched)
    proc: Process = sched.current
    rt = sched.rt
    me = proc.pid
    # The copy first: a request that cannot be copied raises before anything is set up.
    item = request if type(request) in _leaves else copy_message(request)
    # monitor(server, alias="demonitor"): the caller's half, as signals.monitor.
    ref = rt.make_ref()
    q = proc.queue
    proc.mark_ref = ref
    proc.mark_pos = len(q) if q is not None else 0
    if proc.inbox:
        signals.set_mark(proc, ref)  # messages still in the inbox: a marker after them
    aliases = proc.aliases
    if aliases is None:
        proc.aliases = {ref: True}
    else:
        aliases[ref] = True
    rt.aliases[ref] = me
    monitors = proc.monitors
    if monitors is None:
        monitors = proc.monitors = {}
    monitors[ref] = server
    # The server's half of the monitor, and the request (an immutable envelope).
    tag = (_ALIAS, ref)
    other = rt.table.get(server.id)
    if other is None:
        state = EXITING
    else:
        state = signals.monitor_and_send(rt, other, ref, me, (label, (me, tag), item))
    if state >= EXITING:
        signals.deliver(rt, me, signals.DownSig(server, ref, signals.NOPROC))
    deadline = None
    try:
        if (
            state < EXITING
            and proc.queue is None
            and not proc.inbox
            and proc.handoff is NOTHING
            and (timeout is None or timeout > 0)
        ):
            # Nothing can be received before the reply: wait for it in the
            # hand-off slot (traps.receive's timer, kept across calls).
            if timeout is not None:
                deadline = proc.deadline = _monotonic() + timeout
                arm_timer(rt, proc, deadline)
            yield _WAIT
            h: Any = proc.handoff  # (changed while it waited: not what was checked above)
            if (
                type(h) is tuple
                and len(h) == 2
                and (h[0] is tag or h[0] == tag)
                and proc.queue is None
                and not proc.inbox
            ):
                proc.handoff = NOTHING
                return h
            if deadline is not None:
                timeout = max(0.0, deadline - _monotonic())
        # Anything else (a DOWN, other messages, a timeout): the general receive.
        return (yield from receive((tag, ANY), Down(ref, ANY, ANY), timeout=timeout))
    finally:
        if deadline is not None:
            proc.deadline = None  # its timer stays armed, as a receive's
        # demonitor(ref, flush=True), as api.demonitor
        if not signals.demonitor(rt, proc, ref):
            flush_down(proc, ref)
