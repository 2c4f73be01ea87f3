"""beamlet.aio: the asyncio bridge. Python's async libraries from processes, and back.

A beamlet process is not an asyncio task: it cannot await asyncio coroutines,
and asyncio code cannot ``receive``. The two worlds stay separate and every
crossing is a visible call (as trio-asyncio's and anyio's blocking portal):

* :func:`run` -- from a process: run a coroutine function on the node's asyncio
  loop and wait for its result, as ``receive`` waits (the process holds no
  scheduler). A timeout, or the process's death, cancels the task.
* :func:`loop` -- that loop: one thread per runtime, started on first use,
  uvloop's if it is installed. Long-lived asyncio resources (a connection pool,
  an HTTP client) live on it, reachable from every process.
* :func:`call`, :func:`cast`, :func:`send` -- from asyncio code (any loop, any
  thread: a web framework's endpoint) into beamlet: a GenServer call awaitable
  in asyncio, with OTP's alias and monitor, so a dead server is an exception at
  once; a cast; a plain send.

Theory of operation
-------------------
:func:`run` is :func:`beamlet.blocking` with the loop in place of the pool. The
process makes a job (a :class:`~beamlet._kernel.traps.Ready` cell), queues its
start on the loop (``call_soon_threadsafe``) and waits in
:func:`~beamlet._kernel.traps.wait_ready`. On the loop thread the job's start
calls ``fn(*args)`` and makes a task of it; the task's done callback stores the
outcome, sets ``ready`` and wakes the process (``rt.deliver(pid, WAKE)``). If
the wait ends any other way -- its timeout, or the process is killed (the
scheduler closes its coroutine: ``GeneratorExit`` at the wait) -- a ``finally``
marks the job abandoned and queues its cancellation on the loop. The loop runs
callbacks in the order they were queued, so the cancellation always finds the
task the start made (or the start finds the job abandoned and never calls
``fn``). A task that swallows the cancellation and runs on is logged, not lost.

What the module keeps for a runtime (a ``_Node``: the loop, the calls in
flight) lives as long as the runtime: the first use registers
``rt.at_shutdown(node.close)``, which, once every process is dead and the
schedulers have stopped, stops the loop (pending tasks are cancelled and
given a second to finish), joins its thread, and fails the calls still
pending.

:func:`call` spawns a short-lived process per call that does
:func:`beamlet.otp.call` (the monitor with an alias, the send, the receive) and
hands the reply, or the exception, to the caller's future with the caller
loop's ``call_soon_threadsafe``. If the asyncio side gives up (its task is
cancelled), the process is killed: its alias goes with it, so a late reply is
dropped. A call process killed before it ever ran (a shutdown racing the
call) settles nothing itself: the shutdown fails the call instead.

Limits: code on the loop is asyncio code -- beamlet does not preempt it or kill
it; a coroutine that blocks the loop thread blocks every :func:`run`. Awaiting
an asyncio future inside a process (without :func:`run`) kills the process
with the kernel's error ("asyncio objects cannot be awaited in a beamlet
process"). Values cross as they are, not copied (as with ``blocking``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any, TypeVar

from beamlet._kernel import context
from beamlet._kernel.api import exit as _exit
from beamlet._kernel.api import send
from beamlet._kernel.context import current_process_or_none, current_scheduler, scheduler_var
from beamlet._kernel.runtime import Runtime
from beamlet._kernel.traps import WAKE, Ready, wait_ready
from beamlet.otp.errors import CallError
from beamlet.otp.gen import call as _otp_call
from beamlet.otp.gen import cast
from beamlet.terms import Pid

logger = logging.getLogger("beamlet")

T = TypeVar("T")

#: When the loop stops: how long cancelled tasks get to finish, and how long
#: the runtime's shutdown waits for the loop's thread.
DRAIN_SECONDS = 1.0
JOIN_SECONDS = 5.0

#: ``BEAMLET_AIO_LOOP=asyncio`` forces asyncio's own loop; ``uvloop`` requires
#: uvloop; unset: uvloop if it can be imported.
LOOP_ENV = "BEAMLET_AIO_LOOP"


# ---------------------------------------------------------------------- the loop


def _new_event_loop() -> asyncio.AbstractEventLoop:
    choice = os.environ.get(LOOP_ENV, "")
    if choice not in ("", "asyncio", "uvloop"):
        raise ValueError(f"{LOOP_ENV} must be 'asyncio' or 'uvloop', got {choice!r}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            new: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return new()
    return asyncio.new_event_loop()


def _clean() -> contextvars.Context:
    """A fresh, empty context for a callback queued on a loop from another
    thread (see _task_factory). One per callback: a Context cannot be entered
    by two threads at once."""
    return contextvars.Context()


def _task_factory(ev: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """The node loop's task factory: a task never runs in a context that names
    a scheduler. asyncio runs a callback, and a task made by it, in a copy of
    the context of the thread that queued it (``call_soon_threadsafe``,
    ``run_coroutine_threadsafe``); from a process that is its scheduler
    thread's, whose ``scheduler_var`` would make the kernel take the loop's
    thread for that scheduler (it would queue wake-ups for it there, unseen).
    ``kwargs``: what ``create_task`` passes on (``context``; ``name`` too on
    3.13.3+)."""
    ctx: contextvars.Context | None = kwargs.pop("context", None)
    if ctx is None:
        ctx = contextvars.copy_context()
    if ctx.get(scheduler_var) is not None:
        ctx = ctx.copy()
        ctx.run(scheduler_var.set, None)
    return asyncio.Task(coro, loop=ev, context=ctx, **kwargs)


class _Bridge:
    """One runtime's asyncio loop, its thread, and the jobs queued on it."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.loop = _new_event_loop()
        self.loop.set_task_factory(_task_factory)
        self.jobs: set[_Job] = set()  # submitted and not finished: failed if the loop stops
        self.stopping = False
        self.stop_lock = threading.Lock()
        self.thread = threading.Thread(target=self._main, name="beamlet-aio", daemon=True)
        self.thread.start()

    # -- the loop's thread

    def _main(self) -> None:
        ev = self.loop
        asyncio.set_event_loop(ev)
        try:
            ev.run_forever()
        finally:
            try:
                self._drain()
            except Exception:
                logger.exception("beamlet.aio: stopping the asyncio loop failed")
            finally:
                asyncio.set_event_loop(None)
                ev.close()
                self._fail_leftovers()

    def _drain(self) -> None:
        ev = self.loop
        tasks = asyncio.all_tasks(ev)
        for t in tasks:
            t.cancel()
        if tasks:
            done, pending = ev.run_until_complete(asyncio.wait(tasks, timeout=DRAIN_SECONDS))
            for t in done:
                if not t.cancelled():
                    t.exception()  # retrieved: asyncio would log each one
            if pending:
                logger.warning(
                    "beamlet.aio: %d task(s) still running %.1f s after the loop was stopped "
                    "and they were cancelled; abandoned: %r",
                    len(pending),
                    DRAIN_SECONDS,
                    sorted(map(repr, pending))[:5],
                )
        ev.run_until_complete(ev.shutdown_asyncgens())
        try:
            ev.run_until_complete(
                asyncio.wait_for(ev.shutdown_default_executor(), timeout=DRAIN_SECONDS)
            )
        except TimeoutError:
            logger.warning("beamlet.aio: the loop's default executor is still busy; abandoned")

    def _fail_leftovers(self) -> None:
        """Jobs queued on the loop that it never started: their processes wake with an error."""
        for job in list(self.jobs):
            job.finish(False, RuntimeError("beamlet.aio: the asyncio loop stopped"))

    # -- lifecycle

    def stop(self) -> None:
        """Stop the loop (its tasks cancelled) and join its thread. Idempotent;
        never raises (the runtime's shutdown calls it)."""
        with self.stop_lock:
            first = not self.stopping
            self.stopping = True
        if first:
            try:
                self.loop.call_soon_threadsafe(self.loop.stop, context=_clean())
            except RuntimeError:
                pass  # closed already
        if threading.current_thread() is not self.thread:
            self.thread.join(JOIN_SECONDS)
            if self.thread.is_alive() and first:
                logger.warning(
                    "beamlet.aio: the asyncio loop's thread did not stop within %.0f s "
                    "(code on the loop blocks it); abandoned (a daemon thread)",
                    JOIN_SECONDS,
                )

    # -- jobs (aio.run)

    def submit(self, job: _Job) -> None:
        self.jobs.add(job)
        try:
            # A fresh context: the job's start and its task must not run in
            # the calling scheduler thread's (see _task_factory).
            self.loop.call_soon_threadsafe(self._start, job, context=_clean())
        except RuntimeError:
            self.jobs.discard(job)
            raise RuntimeError(
                "beamlet.aio: the asyncio loop has stopped (the runtime is shutting down)"
            ) from None

    def abandon(self, job: _Job) -> None:
        """From the waiting process: it gave up (timeout) or died. Cancel the task."""
        job.abandoned = True
        try:
            self.loop.call_soon_threadsafe(self._cancel, job, context=_clean())
        except RuntimeError:
            self.jobs.discard(job)  # the loop is closed: its tasks went with it

    def _start(self, job: _Job) -> None:
        fn, args = job.fn, job.args
        job.fn = job.args = None
        if job.abandoned:
            self.jobs.discard(job)
            if type(fn) is CoroutineType:
                fn.close()  # never started: no "never awaited" warning
            return
        if self.stopping:
            job.finish(False, RuntimeError("beamlet.aio: the asyncio loop is stopping"))
            return
        try:
            aw = fn(*args) if callable(fn) else fn
            if type(aw) is CoroutineType:
                task: asyncio.Future[Any] = self.loop.create_task(aw)
            elif inspect.isawaitable(aw):
                task = asyncio.ensure_future(aw, loop=self.loop)
            else:
                raise TypeError(
                    f"aio.run needs an async function (or an awaitable); "
                    f"{getattr(fn, '__qualname__', fn)!r} returned {aw!r}"
                )
        except BaseException as e:
            job.finish(False, e)
            return
        job.task = task
        task.add_done_callback(job.done)

    def _cancel(self, job: _Job) -> None:
        task = job.task
        if task is not None and task.cancel():
            job.cancel_sent = True
        self.jobs.discard(job)


class _Job(Ready):
    """One :func:`run`: what to run, its task, and its outcome (``ok``, ``value``)."""

    __slots__ = ("abandoned", "args", "bridge", "cancel_sent", "fn", "ok", "task", "value")

    def __init__(self, pid: Pid, bridge: _Bridge, fn: Any, args: tuple[Any, ...]) -> None:
        self.pid = pid
        self.ready = False
        self.bridge = bridge
        self.fn: Any = fn
        self.args: Any = args
        self.task: asyncio.Future[Any] | None = None
        self.abandoned = False
        self.cancel_sent = False
        self.ok = False
        self.value: Any = None

    def done(self, task: asyncio.Future[Any]) -> None:
        """The task's done callback (on the loop's thread)."""
        self.task = None
        if task.cancelled():
            if self.cancel_sent:
                self.finish(False, None)  # ours: nobody waits for it
            elif self.bridge.stopping:
                self.finish(False, RuntimeError("beamlet.aio: the asyncio loop stopped"))
            else:
                self.finish(False, asyncio.CancelledError("the task was cancelled on the loop"))
            return
        exc = task.exception()
        if self.cancel_sent:
            # The process gave up on it and it was cancelled, yet it ended
            # another way: it swallowed the cancellation and ran on.
            logger.warning(
                "beamlet.aio: a task of %r ignored its cancellation and ran on after the "
                "process gave up on it (timeout or exit); it ended with %r",
                self.pid,
                exc if exc is not None else task.result(),
            )
        if exc is None:
            self.finish(True, task.result())
        else:
            self.finish(False, exc)

    def finish(self, ok: bool, value: Any) -> None:
        if self.ready:
            return
        self.bridge.jobs.discard(self)
        if self.abandoned:
            self.ready = True  # nobody waits: no wake-up
            return
        self.ok = ok
        self.value = value
        self.ready = True
        self.bridge.rt.deliver(self.pid, WAKE)

    def outcome(self) -> Any:
        value, self.value = self.value, None
        if self.ok:
            return value
        try:
            raise value
        finally:
            del value  # no cycle through the traceback


class _Node:
    """What beamlet.aio keeps for one runtime: its loop (started on first use)
    and the :func:`call` futures not settled yet. Closed at the runtime's
    shutdown: by ``rt.at_shutdown``, if the
    runtime offers it."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.bridge: _Bridge | None = None
        self.closed = False
        self.lock = threading.Lock()
        # call()'s future -> (its loop, the server): failed at shutdown if
        # still pending (a call process killed before it ran settles nothing).
        self.calls: dict[asyncio.Future[Any], tuple[asyncio.AbstractEventLoop, Any]] = {}

    def loop_bridge(self) -> _Bridge:
        b = self.bridge
        if b is not None:
            return b
        with self.lock:
            if self.closed:
                raise RuntimeError("beamlet.aio: the runtime is shutting down")
            if self.bridge is None:
                self.bridge = _Bridge(self.rt)
            return self.bridge

    def close(self) -> None:
        """Stop the loop (joined); at a shutdown, fail the calls still pending.
        Never raises."""
        with self.lock:
            self.closed = True
            b = self.bridge
        if b is not None:
            b.stop()
        if self.rt.stopping:
            for fut, (caller_loop, server) in list(self.calls.items()):
                error = CallError(server, "shutdown", "the beamlet runtime shut down")
                try:
                    caller_loop.call_soon_threadsafe(_settle, fut, False, error, context=_clean())
                except RuntimeError:
                    pass  # that loop is closed: nobody waits
            self.calls.clear()


_node: _Node | None = None
_node_lock = threading.Lock()


def _node_for(rt: Runtime) -> _Node:
    n = _node
    if n is not None and n.rt is rt and not n.closed:
        return n
    return _start_node(rt)


def _start_node(rt: Runtime) -> _Node:
    global _node
    with _node_lock:
        n = _node
        if n is not None and n.rt is rt and not n.closed:
            return n
        if n is not None:
            n.close()  # a runtime's that ended without closing it, or a closed one
            _node = None
        if rt.stopping:
            raise RuntimeError("beamlet.aio: the runtime is shutting down")
        n = _Node(rt)
        rt.at_shutdown(n.close)
        _node = n
        return n


def _bridge_for(rt: Runtime) -> _Bridge:
    n = _node
    if n is not None and n.rt is rt and not n.closed:
        b = n.bridge
        if b is not None:
            return b
    return _node_for(rt).loop_bridge()


def _runtime() -> Runtime:
    rt = context.runtime
    if rt is None:
        raise RuntimeError("beamlet.aio needs a running beamlet runtime (beamlet.run(main))")
    return rt


def loop() -> asyncio.AbstractEventLoop:
    """The runtime's asyncio loop (uvloop's if installed), started on first use.

    It runs on a thread of its own until the runtime shuts down. Callable from a
    process or from any thread while the runtime runs: hand it coroutines with
    :func:`run` (from a process) or ``asyncio.run_coroutine_threadsafe``.
    """
    return _bridge_for(_runtime()).loop


# ---------------------------------------------------------------------- process -> asyncio


async def run(
    fn: Callable[..., Awaitable[T]] | Awaitable[T], *args: Any, timeout: float | None = None
) -> T:
    """From a process: run ``fn(*args)`` on the runtime's asyncio loop, wait for its result.

    ``fn`` is an async function (or any callable returning an awaitable), called
    on the loop's thread; a coroutine object (``fn`` with no ``args``) is run
    as it is. The process waits as in ``receive`` (holding no scheduler) and
    gets the value, or the exception the coroutine raised. After ``timeout``
    seconds (None: no limit) the task is cancelled and ``TimeoutError`` raised.
    A process killed (or exiting) while it waits cancels its task. Keyword
    arguments for ``fn``: pass a ``functools.partial``.
    """
    sched = current_scheduler()
    if sched is None or sched.current is None or sched.closing:
        if sched is not None and sched.closing:
            raise RuntimeError(
                "aio.run() called while the process is being killed: it cannot wait any more"
            )
        raise RuntimeError(
            "aio.run() called outside a beamlet process (asyncio code awaits the coroutine itself)"
        )
    if not callable(fn) and not inspect.isawaitable(fn):
        raise TypeError(f"aio.run needs an async function or an awaitable, got {fn!r}")
    if args and not callable(fn):
        if type(fn) is CoroutineType:
            fn.close()  # never to run: no "never awaited" warning
        raise TypeError(f"aio.run got arguments for {fn!r}, which is not callable")
    bridge = _bridge_for(sched.rt)
    job = _Job(sched.current.pid, bridge, fn, args)
    try:
        bridge.submit(job)
        if not await wait_ready(job, timeout):
            raise TimeoutError(f"aio.run timed out after {timeout} s")
    finally:
        if not job.ready:
            bridge.abandon(job)
    result: T = job.outcome()
    return result


# ---------------------------------------------------------------------- asyncio -> beamlet


async def call(server: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """From asyncio code (any loop, any thread): a GenServer call, awaitable.

    ``server`` is a pid, a registered name or ``(name, node)``. A short-lived
    process makes the call with :func:`beamlet.otp.call` (a monitor and an
    alias): the same errors come back -- ``ServerExit`` at once if the server
    is dead or dies (``"noproc"`` if it was not running), ``CallTimeout`` after
    ``timeout`` seconds (None: no limit); ``CallError`` with reason
    ``"shutdown"`` if the runtime shuts down first. Cancelling the awaiting
    task kills that process; a late reply is dropped.
    """
    rt = _runtime()
    if current_process_or_none() is not None:
        raise RuntimeError(
            "aio.call() is for asyncio code; a beamlet process calls beamlet.otp.call"
        )
    try:
        caller_loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("aio.call() must be awaited in a running asyncio loop") from None
    node = _node_for(rt)
    fut: asyncio.Future[Any] = caller_loop.create_future()
    calls = node.calls
    calls[fut] = (caller_loop, server)
    try:
        pid, _ = rt.spawn(_caller, (server, request, timeout, caller_loop, fut, calls), None)
    except BaseException:
        calls.pop(fut, None)
        raise
    try:
        return await fut
    except asyncio.CancelledError:
        calls.pop(fut, None)
        try:
            _exit(pid, "kill")  # its alias goes with it: a late reply is dropped
        except RuntimeError:
            pass  # the runtime is gone
        raise


_GONE = object()


async def _caller(
    server: Any,
    request: Any,
    timeout: float | None,
    caller_loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[Any],
    calls: dict[asyncio.Future[Any], Any],
) -> None:
    """The process behind one :func:`call`: hands the reply, or the error, back."""
    ok = False
    value: Any = _GONE
    try:
        value = await _otp_call(server, request, timeout)
        ok = True
    except Exception as e:
        value = e
    finally:
        if value is _GONE:
            # Killed while it waited (the runtime is shutting down, or the caller gave up).
            sched = current_scheduler()
            proc = sched.current if sched is not None else None
            if sched is not None and sched.rt.stopping:
                value = CallError(server, "shutdown", "the beamlet runtime shut down")
            else:
                reason = proc.doom if proc is not None and proc.doom is not None else "killed"
                value = CallError(server, reason, f"call to {server!r} abandoned: {reason!r}")
        calls.pop(fut, None)
        try:
            caller_loop.call_soon_threadsafe(_settle, fut, ok, value, context=_clean())
        except RuntimeError:
            pass  # the caller's loop is closed: nobody waits


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return  # the caller gave up
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


__all__ = ["call", "cast", "loop", "run", "send"]
