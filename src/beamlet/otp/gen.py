"""The call protocol and the synchronous start, written once (OTP's gen and proc_lib).

Wire format: Erlang's, so a beamlet server can answer an Erlang caller and a
beamlet caller can call an Erlang ``gen_server``:

* call: ``("$gen_call", (caller_pid, tag), request)``; reply ``(tag, value)``;
* cast: ``("$gen_cast", request)``.

The tag of a beamlet call is ``("alias", ref)`` -- Erlang's ``[alias | Ref]``
as a tuple -- where ``ref`` is the call's monitor Ref made an alias of the
caller (``monitor(server, alias="demonitor")``, as OTP's gen:call): the
server replies *to the alias*
(any other tag: to the caller's pid, as Erlang's gen:reply does), so a reply
that arrives after the caller gave up (timeout, or the server died) is dropped by
the kernel instead of staying in the caller's mailbox. Because every pattern of
the call's receive mentions that Ref, the kernel's receive marker skips the
messages that were queued before the call (a call stays fast with 10,000
unrelated messages waiting). A call to a local pid does these same steps
through :func:`beamlet.call_local`, the kernel's one-operation version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import beamlet
from beamlet import ANY, Atom, BadArg, Down, Pid, Ref
from beamlet.otp.errors import CallError, CallTimeout, ServerExit, StartError

GEN_CALL = Atom("$gen_call")
ALIAS = Atom("alias")
GEN_CAST = Atom("$gen_cast")
SYSTEM = Atom("system")
START = Atom("$start_tag")

#: ``from_`` of a call: (caller pid, tag). Pass it to :func:`reply`.
From = tuple[Pid, Any]

_self = beamlet.self
_call_local = beamlet.call_local
_monitor = beamlet.monitor
_demonitor = beamlet.demonitor
_send = beamlet.send
_receive = beamlet.receive
_tuple_new = tuple.__new__


async def call(
    server: Any, request: Any, timeout: float | None = 5.0, *, system: bool = False
) -> Any:
    """Send ``request`` to ``server`` and wait for its reply.

    ``server``: a pid, a registered name, or ``(name, node)``. Raises
    :class:`CallTimeout` after ``timeout`` seconds (None: wait forever) and
    :class:`ServerExit` if the server exits first (reason ``"noproc"`` if it did
    not exist). A reply that comes too late never reaches the caller's mailbox.
    ``system=True`` sends a system message (sys:get_state and friends).
    A process that calls itself gets :class:`CallError` with reason
    ``"calling_self"`` at once (it could never reply: OTP's gen:call exits so).
    """
    # The hot path of every GenServer/Agent/Supervisor call: kernel functions
    # bound once at import, no per-call closure, and ``try`` blocks are free
    # (3.11+: zero-cost until something raises).
    me = _self()
    if type(server) is Pid:
        if server.id == me.id and server == me:
            raise calling_self(server, me)
        if server.node is None:
            # The common case, a local pid: the kernel does the same four steps
            # below (monitor with alias, send, receive, demonitor) in one go.
            try:
                msg = await _call_local(server, SYSTEM if system else GEN_CALL, request, timeout)
            except TimeoutError:
                raise CallTimeout(server, timeout or 0.0) from None
            if type(msg) is Down:
                raise ServerExit(server, msg.reason)
            return msg[1]
    elif is_self(server, me):
        raise calling_self(server, me)
    ref = _monitor(server, alias="demonitor")
    tag = (ALIAS, ref)
    try:
        try:
            _send(server, (SYSTEM if system else GEN_CALL, (me, tag), request))
        except BadArg:
            pass  # an unregistered name: the monitor already reports noproc
        try:
            # Down(ref, ANY, ANY) without the namedtuple's Python-level __new__.
            msg = await _receive((tag, ANY), _tuple_new(Down, (ref, ANY, ANY)), timeout=timeout)
        except TimeoutError:
            raise CallTimeout(server, timeout or 0.0) from None
    finally:
        _demonitor(ref, True)  # flush; the alias goes with the monitor
    if type(msg) is Down:
        raise ServerExit(server, msg.reason)
    return msg[1]


def is_self(server: Any, me: Pid) -> bool:
    """Is ``server`` (a pid, a name, or (name, node) naming this node) the process ``me``?"""
    if type(server) is Pid:
        return server == me
    if type(server) is tuple and len(server) == 2 and server[1] in (None, beamlet.node()):
        server = server[0]
    return isinstance(server, str) and beamlet.whereis(server) == me


def calling_self(server: Any, me: Pid) -> CallError:
    return CallError(
        server,
        "calling_self",
        f"{me!r} called itself ({server!r}): a process cannot wait for its own reply "
        "(do the work directly, or cast/send to yourself)",
    )


def cast(server: Any, request: Any) -> None:
    """Send ``request`` to ``server`` without waiting. Never fails (as in OTP):
    a cast to a dead server or an unregistered name is dropped."""
    try:
        beamlet.send(server, (GEN_CAST, request))
    except BadArg:
        pass


def reply(from_: From, value: Any) -> None:
    """Reply to a call whose handler returned ``NoReply`` (or from anywhere)."""
    pid, tag = from_
    if type(tag) is tuple and len(tag) == 2 and tag[0] == ALIAS and type(tag[1]) is Ref:
        beamlet.send(tag[1], (tag, value))  # the caller's alias: dropped if it gave up
    else:
        beamlet.send(pid, (tag, value))


async def start(
    body: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    *,
    link: bool,
    timeout: float | None = 5.0,
) -> Pid:
    """Start ``body(ack, *args)`` and return its pid once it has called ``ack``.

    ``ack()`` reports success; ``ack(reason, failed=True)`` a failed init:
    :func:`start` raises :class:`StartError` with ``reason``. If the process dies before
    acknowledging, :class:`StartError` carries its exit reason. (proc_lib's
    synchronous start.)
    """
    me = beamlet.self()
    if link:
        pid = beamlet.spawn_link(_starter, me, body, args)
        mref = beamlet.monitor(pid)
    else:
        pid, mref = beamlet.spawn_monitor(_starter, me, body, args)
    # The monitor Ref is the ack's tag: every pattern below mentions the newest
    # Ref, so the receive skips what was queued before (a supervisor restarting
    # children may have thousands of Exit messages waiting).
    beamlet.send(pid, (START, mref))
    try:
        msg = await beamlet.receive((mref, ANY, ANY), Down(mref, ANY, ANY), timeout=timeout)
        if type(msg) is not Down and msg[1] == "error":
            # A failed init: as proc_lib since OTP 26, return once the process
            # has exited, so that its name is free for a retry.
            try:
                await beamlet.receive(Down(mref, ANY, ANY), timeout=timeout)
            except TimeoutError:
                beamlet.unlink(pid)
                beamlet.exit(pid, "kill")
    except TimeoutError:
        beamlet.unlink(pid)
        beamlet.exit(pid, "kill")
        raise StartError("timeout") from None
    finally:
        beamlet.demonitor(mref, flush=True)
    if type(msg) is Down:
        _flush_exit(pid)
        raise StartError(msg.reason)
    if msg[1] == "error":
        _flush_exit(pid)
        raise StartError(msg[2])
    return pid


async def _starter(parent: Pid, body: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    _, tag = await beamlet.receive((START, ANY))

    def ack(reason: Any = None, failed: bool = False) -> None:
        beamlet.send(parent, (tag, "error" if failed else "ok", reason))

    await body(ack, *args)


def _flush_exit(pid: Pid) -> None:
    """Forget a trapped Exit from a child that failed to start (we report it)."""
    beamlet.unlink(pid)


__all__ = ["GEN_CALL", "GEN_CAST", "From", "call", "cast", "reply", "start"]
